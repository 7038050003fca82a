"""The stage runner and the commit guarantees around it, on real Delta tables.

- counts and written rows are checked before anything is committed;
- a kill between two of a stage's commits is detected from the commit metadata, refused
  downstream, and repaired by re-running the stage (a real SIGKILL in a separate process);
- two stages replacing disjoint partitions of `drops` both commit, the same partition raced is a
  conflict;
- vacuum next to a slow, running write leaves it alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from data_engine import lake, stage
from data_engine.dedup.config import DedupConfig
from data_engine.dedup.run import dedup
from data_engine.errors import TableConflictError
from data_engine.tables import DOCS_DEDUP, DOCS_RAW, DROPS

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = "doc_id string, lang string, text string"
DROPS_SCHEMA = "doc_id string, stage string, lang string, reason string"
EXACT = DedupConfig(stages=("exact",))


def _docs(spark, n, start=0, dup_every=0, tag="document"):
    rows = []
    for i in range(start, start + n):
        text = f"{tag} number {i % dup_every if dup_every else i} ข่าว"
        rows.append((f"d{i:04d}", ("tha", "vie")[i % 2], text))
    return spark.createDataFrame(rows, SCHEMA)


def _files(table: Path) -> set[str]:
    return {str(p.relative_to(table)) for p in table.rglob("*.parquet")
            if not any(part.startswith(("_", ".")) for part in p.relative_to(table).parts)}


def test_counts_and_written_rows_are_checked_before_any_commit(spark, lake_dir):
    lake.write_table(_docs(spark, 4), lake_dir, "a", mode="error")
    before = _files(lake.table_path(lake_dir, "a"))

    bad_counts = stage.Counts(records=5, kept=4)
    plan = stage.StagePlan("s", {}, [stage.Output("a", _docs(spark, 4, start=10), rows=4)], bad_counts)
    with pytest.raises(stage.ReconcileError, match="do not reconcile"):
        stage.commit_plan(lake_dir, plan)

    counts = stage.Counts()
    counts.add("tha", "kept", 3)
    counts.add("tha", "dropped", 2)
    outputs = [stage.Output("b", _docs(spark, 2), rows=2, base_version=None),  # right
               stage.Output("a", _docs(spark, 3, start=20), rows=4)]  # the stage counted 4, wrote 3
    with pytest.raises(stage.ReconcileError, match="would get 3 rows but the stage counted 4"):
        stage.commit_plan(lake_dir, stage.StagePlan("s", {}, outputs, counts))
    assert lake.table_version(lake_dir, "a") == 0 and not lake.exists(lake_dir, "b")
    assert _files(lake.table_path(lake_dir, "a")) == before  # the staged files were removed


KILLER = r'''
import os, signal, sys
from data_engine import lake
from data_engine.dedup.config import DedupConfig
from data_engine.dedup.run import dedup
from data_engine.spark import get_spark

original = lake.commit
def commit(staged, **kw):
    result = original(staged, **kw)
    print("COMMITTED", staged.name, result.version, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # dead between the stage's first and second commit
lake.commit = commit
spark = get_spark("killed-stage", conf={"spark.master": "local[1]", "spark.sql.shuffle.partitions": "2"})
dedup(spark, sys.argv[1], DedupConfig(stages=("exact",)))
'''


def _dedup_rows(spark, lake_dir):
    kept = lake.read_table(spark, lake_dir, DOCS_DEDUP).df.count()
    dropped = lake.read_table(spark, lake_dir, DROPS).df.where("stage = 'exact'").count()
    return kept, dropped


def test_kill_between_a_stages_commits_is_detected_and_repaired_by_a_rerun(spark, lake_dir):
    lake.write_table(_docs(spark, 20, dup_every=10), lake_dir, DOCS_RAW, mode="error")
    first = dedup(spark, lake_dir, EXACT)
    assert (first.kept, first.dropped) == (10, 10)
    assert stage.set_state(lake_dir, DOCS_DEDUP).consistent
    # New input, then a dedup run killed after committing drops, before docs_dedup.
    lake.write_table(_docs(spark, 10, start=100, dup_every=5, tag="page"), lake_dir, DOCS_RAW, mode="append")
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, SAILYARD_SPARK_LOG_LEVEL="ERROR",
               JAVA_TOOL_OPTIONS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
    for inherited in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET"):
        env.pop(inherited, None)
    proc = subprocess.run([sys.executable, "-c", KILLER, lake_dir], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert proc.stdout.split()[:2] == ["COMMITTED", DROPS], proc.stdout

    state = stage.set_state(lake_dir, DOCS_DEDUP)
    assert state is not None and not state.consistent and state.tables[DROPS] != state.run
    kept, dropped = _dedup_rows(spark, lake_dir)
    assert kept + dropped != 30  # the two tables disagree: that is what the check is for
    with pytest.raises(stage.InconsistentSetError, match="re-run dedup"):
        stage.require_consistent(lake_dir, DOCS_DEDUP)
    from data_engine.report import format_report, lake_report

    assert "docs_dedup: INCONSISTENT" in format_report(lake_report(spark, lake_dir))

    again = dedup(spark, lake_dir, EXACT)
    assert (again.records, again.kept, again.dropped) == (30, 15, 15)
    assert stage.set_state(lake_dir, DOCS_DEDUP).consistent
    assert _dedup_rows(spark, lake_dir) == (15, 15)
    stage.require_consistent(lake_dir, DOCS_DEDUP)
    assert "INCONSISTENT" not in format_report(lake_report(spark, lake_dir))


def _drops(spark, stage_name, n, start=0):
    rows = [(f"x{start + i}", stage_name, "tha", "why") for i in range(n)]
    return spark.createDataFrame(rows, DROPS_SCHEMA)


def test_stages_replacing_disjoint_partitions_of_drops_both_commit(spark, lake_dir):
    lake.write_table(_drops(spark, "clean", 2), lake_dir, DROPS, mode="error", partition_by=("stage",))
    base = lake.table_version(lake_dir, DROPS)
    # "dedup" has its files written, not yet committed, when "clean" commits on top of `base`.
    staged = lake.stage_write(_drops(spark, "exact", 3, start=10), lake_dir, DROPS, mode="overwrite",
                              partition_by=("stage",), replace_partitions={"stage": ["url", "exact"]},
                              base_version=base)
    lake.write_table(_drops(spark, "clean", 4, start=20), lake_dir, DROPS, mode="overwrite",
                     partition_by=("stage",), replace_partitions={"stage": "clean"}, base_version=base)
    done = lake.commit(staged)
    assert done.committed and done.version == base + 2
    got = sorted((r.stage, r.doc_id) for r in lake.read_table(spark, lake_dir, DROPS).df.collect())
    assert got == sorted([("clean", f"x{20 + i}") for i in range(4)] + [("exact", f"x{10 + i}") for i in range(3)])

    # A stage that decided on `base` but finds another stage's commit before it even writes.
    late = lake.write_table(_drops(spark, "quality", 1, start=30), lake_dir, DROPS, mode="overwrite",
                            partition_by=("stage",), replace_partitions={"stage": "quality"},
                            base_version=base)
    assert late.committed and lake.read_table(spark, lake_dir, DROPS).df.count() == 8

    # The same partition raced is still a conflict, and leaves nothing behind.
    current = lake.table_version(lake_dir, DROPS)
    mine = lake.stage_write(_drops(spark, "clean", 5, start=40), lake_dir, DROPS, mode="overwrite",
                            partition_by=("stage",), replace_partitions={"stage": "clean"},
                            base_version=current)
    lake.write_table(_drops(spark, "clean", 1, start=50), lake_dir, DROPS, mode="overwrite",
                     partition_by=("stage",), replace_partitions={"stage": "clean"}, base_version=current)
    with pytest.raises(TableConflictError):
        lake.commit(mine)
    table = lake.table_path(lake_dir, DROPS)
    logged = set().union(*({str(Path(u).relative_to(table)) for u in
                            __import__("deltalake").DeltaTable(str(table), version=v).file_uris()}
                           for v in range(lake.table_version(lake_dir, DROPS) + 1)))
    assert _files(table) == logged


def test_a_commit_that_does_not_say_what_it_touched_counts_as_a_conflict(spark, lake_dir):
    from deltalake import DeltaTable, write_deltalake

    lake.write_table(_drops(spark, "clean", 2), lake_dir, DROPS, mode="error", partition_by=("stage",))
    base = lake.table_version(lake_dir, DROPS)
    staged = lake.stage_write(_drops(spark, "exact", 1), lake_dir, DROPS, mode="overwrite",
                              partition_by=("stage",), replace_partitions={"stage": "exact"},
                              base_version=base)
    table = str(lake.table_path(lake_dir, DROPS))
    foreign = DeltaTable(table).to_pyarrow_dataset().to_table().slice(0, 1)
    write_deltalake(table, foreign, mode="overwrite", predicate="stage = 'clean'")  # another tool
    with pytest.raises(TableConflictError):
        lake.commit(staged)


def test_vacuum_next_to_a_slow_running_write_leaves_it_alone(spark, lake_dir):
    lake.write_table(_docs(spark, 4), lake_dir, "slow", mode="error")
    table = lake.table_path(lake_dir, "slow")

    def _slow(batches):  # defined here: pickled by value for the Python workers
        import time as t

        for pdf in batches:
            t.sleep(0.4)
            yield pdf

    df = _docs(spark, 40).repartition(8).mapInPandas(_slow, SCHEMA)
    outcome: dict = {}

    def write() -> None:
        try:
            outcome["result"] = lake.write_table(df, lake_dir, "slow", mode="append")
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = exc

    writer = threading.Thread(target=write)
    writer.start()
    staging = table / lake.STAGING
    deadline = time.time() + 120
    while not any(p.is_dir() for p in staging.glob("*")) and time.time() < deadline:
        time.sleep(0.05)
    [attempt] = [p for p in staging.iterdir() if p.is_dir()]
    assert lake.live_attempts(lake_dir, "slow") == [attempt.name]
    # Its folder looks old: only the heartbeat tells that the writer is alive.
    os.utime(attempt, (time.time() - 7200, time.time() - 7200))
    with pytest.raises(Exception, match="--force"):
        lake.vacuum(lake_dir, "slow", retention_hours=0)
    deleted = lake.vacuum(lake_dir, "slow", retention_hours=0, force=True)
    assert not any(str(attempt) in d for d in deleted)
    writer.join(timeout=300)
    assert "error" not in outcome, outcome
    assert outcome["result"].rows == 40
    assert lake.read_table(spark, lake_dir, "slow").df.count() == 44
    assert lake.live_attempts(lake_dir, "slow") == []


def _meta(stage_name, run, members):
    return {stage.STAGE_KEY: stage_name, stage.RUN_KEY: run, stage.SET_KEY: members}


def test_vacuum_commits_neither_hide_an_interrupted_set_nor_make_a_stage_conflict(spark, lake_dir):
    for run in ("r0", "r1"):  # two runs of stage "s": "a" and "b" both from r1 ...
        lake.write_table(_docs(spark, 3, tag=run), lake_dir, "a", mode="overwrite", metadata=_meta("s", run, "a,b"))
    lake.write_table(_docs(spark, 3), lake_dir, "b", mode="overwrite", metadata=_meta("s", "r0", "a,b"))
    # ... but r1 died before committing "b": the set is broken.
    assert not stage.set_state(lake_dir, "a").consistent
    base = lake.table_version(lake_dir, "a")
    pending = lake.stage_write(_docs(spark, 2, tag="r2"), lake_dir, "a", mode="overwrite", base_version=base)
    deleted = lake.vacuum(lake_dir, "a", retention_hours=0, force=True)  # r0's files go
    assert deleted and lake.history(lake_dir, "a", limit=1)[0]["operation"] == "VACUUM END"
    state = stage.set_state(lake_dir, "a")
    assert state is not None and not state.consistent and state.run == "r1"
    with pytest.raises(stage.InconsistentSetError):
        stage.require_consistent(lake_dir, "a")
    # A stage that decided on `base` is not in conflict with vacuum's commits.
    done = lake.commit(pending, metadata=_meta("s", "r2", "a"))
    assert done.committed and lake.read_table(spark, lake_dir, "a").df.count() == 2


def test_lake_roots_with_spaces_and_partition_values_needing_escapes(spark, tmp_path):
    root = str(tmp_path / "my lake ข่าว")
    rows = [(f"d{i}", lang, f"t{i}") for i, lang in enumerate(["tha", "a b", "k=v", "x%y", "tha"])]
    lake.write_table(spark.createDataFrame(rows, SCHEMA), root, "t", mode="error")
    assert lake.lake_uri(root) == "file://" + root
    got = sorted(tuple(r) for r in lake.read_table(spark, root, "t").df.collect())
    assert got == sorted(rows)
    assert sorted(lake.read_arrow(root, "t").column("lang").to_pylist()) == sorted(r[1] for r in rows)
