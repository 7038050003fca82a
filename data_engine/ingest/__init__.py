"""Ingest: raw JSONL / Parquet files → `docs_raw` + `quarantine`, never failing on a bad record."""
