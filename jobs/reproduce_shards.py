"""Rebuild the shards a run trained on and compare them byte for byte with what it read.

    sailyard reproduce-shards <checkpoint | run id> --out <dir> [--work-dir W]

The shards come from the pinned table versions the run's manifest rows recorded, through the
exporter's own steps, into `<out>/<group>/` only: nothing is committed to `shard_manifest` and the
lake's shards are not touched. Every `.bin`/`.idx` is checked against the manifest's checksum and
against the file the run read (where it still exists). Prints a per-file table, then the JSON
summary line; exits 0 only when every file is byte-identical, 1 when any differs (named in the
summary's `differ`), 2 for a target or --out that cannot be used.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reproduce-shards", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="a NeMo checkpoint, a run's checkpoint folder, an HF export, or an MLflow run id")
    p.add_argument("--out", required=True, help="folder for the rebuilt shards (not the run's shard folder)")
    p.add_argument("--work-dir", default="work",
                   help="work dir whose MLflow store to read (default: work; MLFLOW_TRACKING_URI wins)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from data_engine.jobrun import run_job
    from trainer.lineage import render_reproduction, reproduce

    verdict: dict[str, bool] = {}

    def work() -> dict:
        result = reproduce(args.target, args.out, work_dir=args.work_dir)
        print(render_reproduction(result), flush=True)
        verdict["identical"] = result["identical"]
        if result["identical"]:
            return result
        error = f"{len(result['differ'])} of {result['checked']} shard files differ: " + ", ".join(result["differ"])
        print(f"sailyard reproduce_shards: error: {error}", file=sys.stderr, flush=True)
        return {"status": "error", "error": error, **result}

    code = run_job("reproduce_shards", work)
    return code or (0 if verdict.get("identical") else 1)


if __name__ == "__main__":
    sys.exit(main())
