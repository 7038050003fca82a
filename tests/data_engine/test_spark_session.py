"""data_engine.spark's helpers on the shared session: local frames, the background warm-up, local defaults."""

from __future__ import annotations

from data_engine.spark import local_frame, warm_up


def test_local_frame_is_a_local_relation_with_nulls_kept(spark) -> None:
    rows = [("d1", None, "c1"), ("d2", "d1", None), ("ด3", "文4", "c3")]
    frame = local_frame(spark, rows, "doc_id string, _dup_of string, _cluster string")
    assert [tuple(r) for r in frame.orderBy("doc_id").collect()] == sorted(rows)
    assert frame.where("_dup_of is null").count() == 1  # None is null, not the string "None" or NaN
    assert "LocalRelation" in frame._jdf.queryExecution().optimizedPlan().toString()


def test_local_frame_casts_to_the_schema_and_takes_no_rows(spark) -> None:
    frame = local_frame(spark, [("a", 3, None), ("b", None, 2.5)], "k string, n long, x double")
    assert frame.schema.simpleString() == "struct<k:string,n:bigint,x:double>"
    assert [tuple(r) for r in frame.orderBy("k").collect()] == [("a", 3, None), ("b", None, 2.5)]
    empty = local_frame(spark, [], "k string, n long")
    assert empty.count() == 0 and empty.columns == ["k", "n"]


def test_warm_up_runs_beside_the_caller_without_taking_its_job_description(spark) -> None:
    context = spark.sparkContext
    context.setJobDescription("mine")
    try:
        thread = warm_up(spark)
        thread.join(timeout=120)
        assert not thread.is_alive()
        assert context.getLocalProperty("spark.job.description") == "mine"
    finally:
        context.setJobDescription(None)  # type: ignore[arg-type]


def test_local_sessions_scan_in_several_tasks_per_core(spark) -> None:
    """Spark's one-task-per-core default left one Burmese-and-Khmer task holding scoring's stage."""
    import os

    from data_engine.spark import SCAN_TASKS_PER_CORE, local_cores

    assert [local_cores(m) for m in ("local", "local[3]", "local[4, 2]", "local-cluster[2, 3, 1024]")] == [1, 3, 4, 6]
    assert local_cores("local[*]") == local_cores("local[*, 3]") == os.cpu_count()
    master = spark.sparkContext.master
    assert int(spark.conf.get("spark.sql.files.minPartitionNum")) == SCAN_TASKS_PER_CORE * local_cores(master)
