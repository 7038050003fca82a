"""Throughput of the curation stages on web-like documents: clean (+ LID), classifier training, scoring.

    .venv/bin/python bench/curation.py [--docs 30000] [--work /tmp/bench-curation]

The corpus is `build_background(--docs)`: 6–18 real UDHR sentences per page in all 15 languages
with a site header and footer. It is written to `docs_raw` (not timed), then the clean job
(normalisation, 14 statistics, 15 rules, lid.176 + CLD2), one quality classifier per language
(positives: the demo's real-text sets; negatives: up to 10,000 docs_clean documents), and the
scoring/selection job run one after the other in one local Spark session, each through its job
function (MLflow runs included). Figures: wall seconds and documents per second per stage, and the
CPU seconds the stage cost this process tree (driver, JVM, Python workers; Linux /proc): on a
machine shared with other work the wall figures stretch, the CPU figures much less.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path


def tree_cpu_seconds() -> float | None:
    """User + system CPU seconds of this process and all its descendants, the finished ones included
    (their time is in their parents' cumulative fields); None without /proc."""
    try:
        children: dict[int, list[tuple[int, list[str]]]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as handle:
                        stat = handle.read()
                except OSError:
                    continue
                fields = stat[stat.rfind(")") + 2:].split()
                children.setdefault(int(fields[1]), []).append((int(entry), fields))
        with open(f"/proc/{os.getpid()}/stat") as handle:
            stat = handle.read()
    except OSError:
        return None
    stack = [(os.getpid(), stat[stat.rfind(")") + 2:].split())]
    ticks = 0
    while stack:
        pid, fields = stack.pop()
        ticks += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
        stack.extend(children.get(pid, []))
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=30000)
    p.add_argument("--work", default="/tmp/bench-curation")
    args = p.parse_args()

    from data_engine import lake
    from data_engine.clean.job import clean_job
    from data_engine.quality.job import score_quality_job, train_quality_job
    from data_engine.sample.labelled import build_background
    from data_engine.sample.positives import write_positive_sets
    from data_engine.spark import get_spark

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    lake_dir = str(work / "lake")
    t0 = time.perf_counter()
    spark = get_spark("bench-curation")
    started = time.perf_counter() - t0
    docs = build_background(args.docs)
    rows = [(d.doc_id, d.lang, "bench", d.text) for d in docs]
    lake.write_table(spark.createDataFrame(rows, "doc_id string, lang string, source string, text string"),
                     lake_dir, "docs_raw", mode="error")
    figures = []

    def timed(name: str, n: int, fn):  # noqa: ANN001, ANN202
        t, cpu = time.perf_counter(), tree_cpu_seconds()
        out = fn()
        seconds = time.perf_counter() - t
        after = tree_cpu_seconds()
        figures.append((name, n, seconds, after - cpu if cpu is not None and after is not None else None))
        return out

    cleaned = timed("clean (+LID)", args.docs, lambda: clean_job(spark, lake_dir))
    positives = write_positive_sets(work / "positives")
    langs = sorted(cleaned["by_lang"])
    timed(f"train_quality ×{len(langs)}", cleaned["kept"],
          lambda: [train_quality_job(spark, lake_dir, lang, str(positives[lang])) for lang in langs])
    scored = timed("score_quality", cleaned["kept"],
                   lambda: score_quality_job(spark, lake_dir, input_version=None))
    print(f"\n{args.docs:,} documents; Spark start {started:.1f} s; clean kept {cleaned['kept']:,}, "
          f"curated {scored['kept']:,}")
    print(f"{'stage':22} {'docs':>8} {'seconds':>8} {'docs/s':>8} {'cpu-s':>8} {'docs/cpu-s':>10}")
    for name, n, seconds, cpu in figures:
        cpu_cols = f" {cpu:>8.1f} {n / cpu:>10,.0f}" if cpu else ""
        print(f"{name:22} {n:>8,} {seconds:>8.1f} {n / seconds:>8,.0f}{cpu_cols}")


if __name__ == "__main__":
    main()
