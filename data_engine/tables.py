"""Table names of the lake; every job refers to tables through these constants."""

DOCS_RAW = "docs_raw"
QUARANTINE = "quarantine"
INGEST_LOG = "ingest_log"
DOCS_CLEAN = "docs_clean"
DOCS_DEDUP = "docs_dedup"
DOCS_SCORED = "docs_scored"
DOCS_CURATED = "docs_curated"
DROPS = "drops"
LINE_DROPS = "line_drops"
SHARD_MANIFEST = "shard_manifest"
CONTAMINATION = "contamination"  # eval-item n-gram hits per (table, version): data_engine.contamination
TOKEN_COUNTS = "token_counts"  # per (table, version): tokens per language, source, quality band

#: The order data flows through the lake; export reads the last one present.
CURATION_ORDER = (DOCS_RAW, DOCS_CLEAN, DOCS_DEDUP, DOCS_SCORED, DOCS_CURATED)
