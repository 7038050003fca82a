"""What a checkpoint was trained on, from what MLflow and the lake recorded.

    sailyard lineage <checkpoint dir | MLflow run id> [--json] [--work-dir W]

Prints the chain as an indented tree: checkpoint → training run(s) and stage (a stage-2 checkpoint
also shows stage 1 and the imported/expanded base) → plan and mixture → shard manifest (version,
digest, shards with checksums) → every table version the shards were built from, stage by stage →
ingest batches → source files with their SHA-256. Links never recorded are listed at the end.
`--json` prints the same as one JSON object, the last line of stdout (see `trainer.lineage`).
A target that is neither a checkpoint nor a run id exits 2.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lineage", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="a NeMo checkpoint, a run's checkpoint folder, an HF export, or an MLflow run id")
    p.add_argument("--json", action="store_true", help="print the chain as one JSON object")
    p.add_argument("--work-dir", default="work",
                   help="work dir whose MLflow store to read (default: work; MLFLOW_TRACKING_URI wins)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from data_engine.jobrun import run_job
    from trainer.lineage import lineage, render

    if args.json:
        return run_job("lineage", lambda: lineage(args.target, work_dir=args.work_dir))
    from data_engine.errors import ConfigError, SailyardError

    try:
        chain = lineage(args.target, work_dir=args.work_dir)
    except SailyardError as exc:
        print(f"sailyard lineage: error: {exc}", file=sys.stderr, flush=True)
        return 2 if isinstance(exc, ConfigError) else 1
    print(render(chain), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
