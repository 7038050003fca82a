"""Delete files that no table version within the retention needs, and dead writers' leftovers.

    python jobs/vacuum.py --lake <dir> [--table NAME ...] [--retention-hours 168] [--dry-run] [--force]
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vacuum", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", required=True)
    p.add_argument("--table", action="append", help="table name (repeatable; default: all tables)")
    p.add_argument("--retention-hours", type=float, default=168.0,
                   help="keep what versions of the last N hours need (default 168 = 7 days)")
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    p.add_argument("--force", action="store_true",
                   help="allow a retention under one hour (readers of old versions may break)")
    args = p.parse_args(argv)

    def work() -> dict:
        from pathlib import Path

        from data_engine import lake

        names = args.table or sorted(d.name for d in Path(args.lake).iterdir()
                                     if (d / "_delta_log").is_dir())
        removed = {name: lake.vacuum(args.lake, name, retention_hours=args.retention_hours,
                                     dry_run=args.dry_run, force=args.force)
                   for name in names}
        for paths in removed.values():
            for path in paths:
                print(f"{'would delete' if args.dry_run else 'deleted'} {path}")
        return {"files": {k: len(v) for k, v in removed.items()}, "dry_run": args.dry_run}

    from data_engine.jobrun import run_job

    return run_job("vacuum", work)


if __name__ == "__main__":
    sys.exit(main())
