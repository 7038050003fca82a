"""Ingest raw web text into the lake.

    spark-submit jobs/ingest.py --input <file|dir|glob> --lake <dir> [--source NAME] [--config YAML]

Reads JSONL (also .jsonl.gz) and Parquet; writes `docs_raw`, `quarantine` and `ingest_log`.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ingest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", action="append", required=True,
                   help="a file, a directory (searched recursively) or a glob; repeatable")
    p.add_argument("--lake", required=True, help="lake root directory")
    p.add_argument("--source", help="source name stored with every doc (default: from the input)")
    p.add_argument("--config", help="YAML with an 'ingest:' section (or the section itself)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> dict:
        from data_engine.config import section
        from data_engine.ingest.config import IngestConfig
        from data_engine.ingest.job import ingest_job
        from data_engine.spark import get_spark

        cfg = section(args.config, "ingest", IngestConfig)
        return ingest_job(get_spark("sailyard-ingest"), args.lake, args.input, source=args.source, cfg=cfg)

    from data_engine.jobrun import run_job

    return run_job("ingest", work)


if __name__ == "__main__":
    sys.exit(main())
