"""Clean raw documents: Unicode and whitespace normalisation, heuristic rules per language, LID.

    spark-submit jobs/clean.py --lake <dir> [--config YAML] [--input-version N]

Reads a pinned version of `docs_raw`, writes `docs_clean` (normalised text, `lang` possibly set by
language identification, `lang_given`, `lang_pred`, `lid_score`) and one `drops` row per rejected
document (stage `clean` or `lid`, the rule that fired, the value and its threshold).
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clean", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", required=True, help="lake root directory")
    p.add_argument("--config", help="YAML with a 'clean:' section (or the section itself)")
    p.add_argument("--input-version", type=int, help="version of docs_raw (default: latest)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> dict:
        from data_engine.clean.config import CleanConfig
        from data_engine.clean.job import clean_job
        from data_engine.config import section
        from data_engine.spark import get_spark

        cfg = section(args.config, "clean", CleanConfig)
        return clean_job(get_spark("sailyard-clean"), args.lake, cfg, input_version=args.input_version)

    from data_engine.jobrun import run_job

    return run_job("clean", work)


if __name__ == "__main__":
    sys.exit(main())
