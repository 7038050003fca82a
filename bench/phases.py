"""Where a Spark job's time went, per phase, from its event log.

    .venv/bin/spark-submit --conf spark.eventLog.enabled=true --conf spark.eventLog.dir=file:///tmp/ev \\
        --conf spark.eventLog.compress=false jobs/dedup.py --lake work/lake --stages near
    .venv/bin/python bench/phases.py /tmp/ev/<app>

Phases are the job descriptions the code sets (`data_engine.spark.phase`: "near: verification",
"dedup: write docs_dedup", …); jobs without one are named by their call site. A phase's wall time
runs from each of its jobs' submission to the next job's, so the driver's own work between jobs
(planning, commits, MLflow) is counted where it happens; "start" is the time from the
application's start to its first job (JVM, imports, reading the Delta log), "finish" the time
after the last job (commits, MLflow, shutdown). Task CPU is the tasks' executor run time summed
(2 cores: up to 2 s per wall second).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_engine.spark_events import App, read_events  # noqa: E402


def phases(app: App) -> list[tuple[str, float, float, int]]:
    """(phase, wall seconds, task CPU seconds, jobs), in order of first appearance."""
    jobs = sorted((j for j in app.jobs if j.submitted_ms is not None), key=lambda j: j.submitted_ms)
    if not jobs:
        return []
    runtime = {s.stage_id: sum(t.run_time_ms for t in s.tasks) for s in app.stages}
    rows: dict[str, list[float]] = {}
    first = app.started_ms if app.started_ms is not None else jobs[0].submitted_ms
    rows["start"] = [(jobs[0].submitted_ms - first) / 1000, 0.0, 0]
    for i, job in enumerate(jobs):
        name = job.description or job.call_site or "(unnamed)"
        until = jobs[i + 1].submitted_ms if i + 1 < len(jobs) else (job.completed_ms or job.submitted_ms)
        row = rows.setdefault(name, [0.0, 0.0, 0])
        row[0] += max(0, until - job.submitted_ms) / 1000
        row[1] += sum(runtime.get(s, 0) for s in job.stage_ids) / 1000
        row[2] += 1
    last = max(j.completed_ms or j.submitted_ms for j in jobs)
    if app.ended_ms is not None:
        rows["finish"] = [(app.ended_ms - last) / 1000, 0.0, 0]
    return [(name, w, c, int(n)) for name, (w, c, n) in rows.items()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log", help="an event log file or eventlog_v2_* folder (uncompressed)")
    args = p.parse_args(argv)
    app = read_events(args.log)
    rows = phases(app)
    total = sum(w for _, w, _, _ in rows) or 1.0
    print(f"{app.name} ({app.app_id}): {total:.1f} s")
    print(f"{'phase':40} {'wall s':>7} {'share':>6} {'task cpu s':>10} {'jobs':>5}")
    for name, w, c, n in rows:
        print(f"{name[:40]:40} {w:7.1f} {w / total:6.1%} {c:10.1f} {n:5d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
