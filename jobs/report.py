"""Print the per-stage, per-language count table of a lake.

    spark-submit jobs/report.py --lake <dir> [--stage stage1]
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", required=True)
    p.add_argument("--stage", help="shard stage to show (default: all)")
    args = p.parse_args(argv)

    def work() -> dict:
        from data_engine.report import format_report, lake_report
        from data_engine.spark import get_spark

        report = lake_report(get_spark("sailyard-report"), args.lake, stage=args.stage)
        print(format_report(report))
        return {"tables_read": report.versions, "quarantined": sum(report.quarantined.values()),
                "inconsistent_sets": sorted(t for t, st in report.sets.items() if not st.consistent)}

    from data_engine.jobrun import run_job

    return run_job("report", work)


if __name__ == "__main__":
    sys.exit(main())
