"""Score every document with its language's quality classifier; keep the top p% per language.

The classifier is the version pinned in the YAML's `score.models` (e.g. `{tha: 3}`), else the latest
registered one. A registry that cannot be read fails the job (exit 1) before anything is written.

    spark-submit jobs/score_quality.py --lake <dir> [--config YAML] [--input-version N] [--keep-percent P]

Reads a pinned version of `docs_dedup` (else `docs_clean`), writes `docs_scored` (`quality_score`, `quality_model`),
`docs_curated` (each language's top p%, exact) and `drops` rows (stage `quality`) for the rest.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="score_quality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", required=True, help="lake root directory")
    p.add_argument("--config", help="YAML with a 'score:' section (or the section itself)")
    p.add_argument("--input-version", type=int, help="version of the input table (default: latest)")
    p.add_argument("--keep-percent", type=float, help="top share kept in every language without an override")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> dict:
        from data_engine.config import section
        from data_engine.quality.config import QualityScoreConfig
        from data_engine.quality.job import score_quality_job
        from data_engine.spark import get_spark

        cfg = section(args.config, "score", QualityScoreConfig)
        if args.keep_percent is not None:
            cfg = dataclasses.replace(cfg, keep_percent=args.keep_percent)
        return score_quality_job(get_spark("sailyard-score-quality"), args.lake, cfg,
                                 input_version=args.input_version)

    from data_engine.jobrun import run_job

    return run_job("score_quality", work)


if __name__ == "__main__":
    sys.exit(main())
