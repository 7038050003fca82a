"""Remove duplicate documents.

    spark-submit jobs/dedup.py --lake <dir> [--stages url,exact,near,lines] [--config YAML] [--input-version N]

Reads a pinned version of the input table (default `docs_raw`), runs the stages in order and
writes `docs_dedup` plus one `drops` row per removed document (stage, reason, dup_of).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dedup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", required=True, help="lake root directory")
    p.add_argument("--stages", help="comma-separated stages in order (default: url,exact,near,lines)")
    p.add_argument("--config", help="YAML with a 'dedup:' section (or the section itself)")
    p.add_argument("--input-version", type=int, help="version of the input table (default: latest)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> dict:
        from data_engine.config import section
        from data_engine.dedup.config import DedupConfig
        from data_engine.dedup.job import dedup_job
        from data_engine.dedup.near import scurve
        from data_engine.spark import get_spark

        cfg = section(args.config, "dedup", DedupConfig)
        if args.stages:
            stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
            cfg = dataclasses.replace(cfg, stages=stages)
        if "near" in cfg.stages:
            curve = "  ".join(f"J={k}: {v:.3f}" for k, v in scurve(cfg.near).items())
            print(f"near-dup LSH {cfg.near.bands} bands x {cfg.near.rows} rows, threshold "
                  f"{cfg.near.threshold}; P(candidate): {curve}", flush=True)
        return dedup_job(get_spark("sailyard-dedup"), args.lake, cfg, input_version=args.input_version)

    from data_engine.jobrun import run_job

    return run_job("dedup", work)


if __name__ == "__main__":
    sys.exit(main())
