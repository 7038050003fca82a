"""The event-log reader on a log a real spark-submit wrote: jobs, stages, task metrics, skew."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from job_helpers import ROOT, job_env, spark_submit

from data_engine import spark_events

ROWS = 20_000
LABEL = "a labelled phase"
HOT_SHARE = 0.9
PARTITIONS = 8

# One even stage and one where 90% of the rows share a key; each action on its own line, so the
# call sites tell them apart.
SCRIPT = textwrap.dedent(f"""\
    from pyspark.sql import SparkSession, functions as F

    spark = SparkSession.builder.getOrCreate()
    hot_key = F.when(F.col("id") % 10 < {HOT_SHARE * 10:.0f}, 0).otherwise(F.col("id"))
    df = spark.range({ROWS}).select(hot_key.alias("k"))
    even = df.repartition({PARTITIONS}).withColumn("p", F.spark_partition_id()).groupBy("p").count().collect()
    hot = df.repartition({PARTITIONS}, "k").withColumn("p", F.spark_partition_id()).groupBy("p").count().collect()
    from data_engine.spark import phase
    with phase(spark, "{LABEL}"):
        spark.range(100).count()
    spark.range(100).count()
    spark.stop()
""")
EVEN_LINE, HOT_LINE = 6, 7


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("events")
    script, events = work / "skewed.py", work / "log"
    script.write_text(SCRIPT, encoding="utf-8")
    events.mkdir()
    proc = subprocess.run([spark_submit(), "--master", "local[2]", "--conf", "spark.eventLog.enabled=true",
                           "--conf", f"spark.eventLog.dir={events.as_uri()}", "--conf", "spark.eventLog.compress=false",
                           str(script)], cwd=ROOT, env=job_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return events


@pytest.fixture(scope="module")
def app(log_dir) -> spark_events.App:
    return spark_events.read_events(log_dir)


def _stage_at(app: spark_events.App, line: int, *, tasks: int) -> spark_events.Stage:
    """The stage with `tasks` tasks of the job started at the script's `line`."""
    [stage] = [s for s in app.stages if app.call_site(s).endswith(f"skewed.py:{line}") and len(s.tasks) == tasks]
    return stage


def test_jobs_stages_and_tasks_are_read_with_their_call_sites(app):
    assert app.app_id.startswith("local-") and app.jobs and all(j.succeeded for j in app.jobs)
    assert all(j.completed_ms >= j.submitted_ms for j in app.jobs)
    sites = {j.call_site.rsplit("/", 1)[-1] for j in app.jobs}
    assert {f"skewed.py:{EVEN_LINE}", f"skewed.py:{HOT_LINE}"} <= sites
    for stage in app.stages:
        assert len(stage.tasks) == stage.num_tasks and all(t.succeeded for t in stage.tasks)
        assert stage.completed_ms >= stage.submitted_ms
    # Every row reaches the reducers of each repartition, and their shuffle reads are counted.
    for line in (EVEN_LINE, HOT_LINE):
        reduce_side = _stage_at(app, line, tasks=PARTITIONS)
        assert reduce_side.records_in == ROWS
        assert sum(t.shuffle_read_bytes for t in reduce_side.tasks) > 0
        assert all(t.duration_ms >= t.run_time_ms >= 0 for t in reduce_side.tasks)


def test_the_hot_key_stage_is_skewed_and_the_even_one_is_not(app):
    hot, even = _stage_at(app, HOT_LINE, tasks=PARTITIONS), _stage_at(app, EVEN_LINE, tasks=PARTITIONS)
    skewed = spark_events.skewed_stages(app, 4.0, PARTITIONS, ROWS // 2)
    assert [s.stage for s in skewed] == [hot]
    [measured] = skewed
    assert measured.max_records >= HOT_SHARE * ROWS and measured.ratio > 4.0
    assert measured.call_site.endswith(f"skewed.py:{HOT_LINE}") and f"skewed.py:{HOT_LINE}" in str(measured)
    [balanced] = [s for s in spark_events.stage_skews(app, min_tasks=PARTITIONS, min_records=ROWS // 2)
                  if s.stage == even]
    assert balanced.ratio < 1.5


def test_small_stages_are_not_judged(app):
    assert spark_events.skewed_stages(app, 4.0, PARTITIONS, ROWS + 1) == []
    assert spark_events.skewed_stages(app, 4.0, PARTITIONS + 1, 0) == []


def test_a_compressed_log_is_refused_with_what_to_pass(tmp_path):
    rolling = tmp_path / "eventlog_v2_local-1"
    rolling.mkdir()
    (rolling / "events_1_local-1.zstd").write_bytes(b"\x28\xb5\x2f\xfd" + bytes(16))  # the zstd frame magic
    with pytest.raises(ValueError, match="spark.eventLog.compress=false"):
        spark_events.read_events(tmp_path)


def test_a_folder_of_several_applications_asks_for_one(tmp_path):
    for app_id in ("local-1", "local-2"):
        (tmp_path / app_id).write_text("{}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="found 2"):
        spark_events.read_events(tmp_path)


def test_a_rolling_log_is_read_whole_and_in_order(app, log_dir, tmp_path):
    """Spark rolls a long log into events_1_, events_2_, …: the same events split in two (and
    numbered so that a text sort would put them out of order) read the same."""
    [log] = spark_events.app_logs(log_dir)
    [source] = log.glob("events_*") if log.is_dir() else [log]  # a short log is one part
    lines = source.read_bytes().splitlines(keepends=True)
    rolled = tmp_path / f"eventlog_v2_{app.app_id}"
    rolled.mkdir()
    half = len(lines) // 2
    (rolled / f"events_9_{app.app_id}").write_bytes(b"".join(lines[:half]))
    (rolled / f"events_10_{app.app_id}").write_bytes(b"".join(lines[half:]))
    assert spark_events.read_events(rolled) == app


def test_phase_labels_jobs_and_the_phase_table_accounts_for_the_run(app):
    """`data_engine.spark.phase` names the jobs started inside it, and only those; bench/phases.py
    attributes the whole run — start, each phase, finish — to a name."""
    import sys

    sys.path.insert(0, str(ROOT))
    from bench.phases import phases

    labelled = [j for j in app.jobs if j.description == LABEL]
    assert labelled  # a count() may start more than one job
    assert all(j.description == "" for j in app.jobs if j not in labelled)  # restored afterwards
    rows = {name: (wall, jobs) for name, wall, _, jobs in phases(app)}
    assert rows[LABEL][1] == len(labelled) and rows["start"][0] > 0 and "finish" in rows
    total = sum(wall for wall, _ in rows.values())
    assert abs(total - (app.ended_ms - app.started_ms) / 1000) < 0.01
