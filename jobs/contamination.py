"""Audit eval items for contamination against a pinned training table; optionally decontaminate it.

    spark-submit jobs/contamination.py --lake <dir> (--suite S.yaml | --items items.jsonl)
        [--table docs_curated] [--input-version N] [--decontaminate] [--config YAML]

Items are JSONL `{"task", "lang", "id", "text"}` (or every item of an eval suite). Each item's
13-word n-grams (character n-grams for tha/lao/khm/mya/zho) are looked up in the table version;
the rows go to the `contamination` table with both verdicts (any n-gram; share of n-grams ≥
threshold). With --decontaminate the condemned documents go to `drops` (stage `decontaminate`)
and the table gets a new version without them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="contamination", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", required=True, help="lake root directory")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--suite", help="eval suite YAML (or built-in suite name): audit all its items")
    given.add_argument("--items", help="JSONL of eval items {task, lang, id, text}")
    p.add_argument("--table", help="training table to audit (default: docs_curated)")
    p.add_argument("--input-version", type=int, help="version of that table (default: latest)")
    p.add_argument("--decontaminate", action="store_true",
                   help="drop the matching documents and write a new version of the table without them")
    p.add_argument("--config", help="YAML with a 'contamination:' section (or the section itself)")
    return p


def suite_items(path: str) -> list:
    """The suite's items through eval (jobs may import eval; the data engine never does)."""
    from data_engine.contamination.items import items_from_records
    from data_engine.errors import ConfigError

    try:
        from eval.suites import contamination_items
    except ImportError as exc:
        raise ConfigError(f"--suite needs the eval package ({exc}); pass --items items.jsonl instead") from exc
    return items_from_records(contamination_items(path), f"suite {path}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> dict:
        from data_engine.config import section
        from data_engine.contamination.config import ContaminationConfig
        from data_engine.contamination.items import read_items
        from data_engine.contamination.job import contamination_job
        from data_engine.spark import get_spark

        cfg = section(args.config, "contamination", ContaminationConfig)
        if args.table:
            cfg = dataclasses.replace(cfg, table=args.table)
        items = suite_items(args.suite) if args.suite else read_items(args.items)
        return contamination_job(get_spark("sailyard-contamination"), args.lake, items, cfg,
                                 input_version=args.input_version, decontaminate=args.decontaminate,
                                 items_source=args.suite or args.items)

    from data_engine.jobrun import run_job

    return run_job("contamination", work)


if __name__ == "__main__":
    sys.exit(main())
