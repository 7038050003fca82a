"""`run_job` turns real Spark failures into one line a person can act on; traces go to stderr only.

Every failure here is raised for real by the shared local JVM or a real Python worker.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from data_engine.errors import SchemaMismatchError
from data_engine.jobrun import ERROR_LIMIT, run_job

_BYTES = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def _run(capsys: pytest.CaptureFixture[str], job: str, work) -> tuple[int, dict, str]:
    code = run_job(job, work)
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    return code, summary, err


def _assert_one_short_line(error: str) -> None:
    assert "\n" not in error and "\t" not in error
    assert len(error) <= ERROR_LIMIT
    assert "Traceback" not in error and "\tat " not in error and " at java." not in error


def _size_in_bytes(size: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kmgt]?)", size.lower()).groups()
    return int(number) * _BYTES.get(unit, 1)


def test_driver_out_of_memory_is_one_line_with_the_setting_to_raise(spark, capsys) -> None:
    jvm = spark._jvm

    def work():
        # A real java.lang.OutOfMemoryError that leaves the JVM running.
        jvm.java.lang.reflect.Array.newInstance(jvm.java.lang.Integer.TYPE, 2**31 - 1)
        return {}

    code, summary, err = _run(capsys, "ingest", work)

    assert code == 1
    assert summary["status"] == "error" and summary["job"] == "ingest"
    error = summary["error"]
    _assert_one_short_line(error)
    assert "the Spark driver ran out of memory" in error
    assert "java.lang.OutOfMemoryError: Requested array size exceeds VM limit" in error
    suggested = re.search(r"spark-submit --driver-memory (\w+) ", error).group(1)
    assert f"SAILYARD_DRIVER_MEMORY={suggested} when run from Python" in error
    current = spark.sparkContext.getConf().get("spark.driver.memory", "1g")
    assert _size_in_bytes(suggested) > _size_in_bytes(current)
    # The trace (Java frames included) is on stderr, then the same one line.
    assert "java.lang.reflect.Array.newInstance" in err and "Traceback (most recent call last)" in err
    assert err.rstrip().splitlines()[-1] == f"sailyard ingest: error: {error}"
    assert spark.range(3).count() == 3  # the shared JVM survived


def test_python_exception_in_a_task_names_the_exception_not_the_worker_traceback(spark, capsys) -> None:
    def explode(batches):
        for batch in batches:
            if (batch["id"] == 7).any():
                raise ValueError("row 7 has no text")
            yield batch

    def work():
        spark.range(10).mapInPandas(explode, "id long").collect()
        return {}

    code, summary, err = _run(capsys, "clean", work)

    assert code == 1
    error = summary["error"]
    _assert_one_short_line(error)
    # The stage comes from the status tracker, which the listener bus may not have updated yet.
    assert re.fullmatch(r"a Python task failed( in Spark stage \d+\.\d+)?: ValueError: row 7 has no text", error)
    assert 'raise ValueError("row 7 has no text")' in err  # the worker's traceback is in the log


def test_java_exception_in_a_task_names_the_root_cause(spark, capsys) -> None:
    def work():
        # Integer.parseInt throws inside the task; Spark wraps it in InvocationTargetException.
        spark.range(2).selectExpr("java_method('java.lang.Integer', 'parseInt', concat('n', id))").collect()
        return {}

    code, summary, err = _run(capsys, "dedup", work)

    assert code == 1
    error = summary["error"]
    _assert_one_short_line(error)
    assert re.fullmatch(r'Spark failed in Spark stage \d+(\.\d+)?: java\.lang\.NumberFormatException: '
                        r'For input string: "n[01]"', error), error
    assert "InvocationTargetException" in err and "Caused by: java.lang.NumberFormatException" in err


def test_executor_out_of_memory_reported_as_text_asks_for_executor_memory(spark, capsys) -> None:
    """On a cluster the executor's OutOfMemoryError reaches the driver only as the text of the
    stage failure; the JVM really throws that SparkException here (wrapped, as futures do)."""
    jvm = spark._jvm
    stage_failure = jvm.org.apache.spark.SparkException(
        "Job aborted due to stage failure: Task 3 in stage 7.0 failed 4 times, most recent failure: "
        "Lost task 3.3 in stage 7.0 (TID 41) (10.0.0.5 executor 2): java.lang.OutOfMemoryError: Java heap space\n"
        "\tat java.base/java.util.Arrays.copyOf(Arrays.java:3537)\n"
        "\tat org.apache.spark.sql.execution.python.ArrowPythonRunner.read(ArrowPythonRunner.scala:88)\n"
        "\nDriver stacktrace:\n\tat org.apache.spark.scheduler.DAGScheduler.failJobAndIndependentStages")

    def work():
        jvm.java.util.concurrent.CompletableFuture.failedFuture(stage_failure).join()
        return {}

    code, summary, err = _run(capsys, "score_quality", work)

    assert code == 1
    error = summary["error"]
    _assert_one_short_line(error)
    assert error.startswith("Spark executor 2 ran out of memory (java.lang.OutOfMemoryError: Java heap space) "
                            "in Spark stage 7.0; raise the executor heap: spark-submit --executor-memory ")
    assert "--driver-memory" not in error
    assert "java.util.concurrent.CompletionException" in err


def test_spark_sql_error_keeps_its_error_class_and_names_no_stage(spark, capsys) -> None:
    def work():
        spark.range(3).selectExpr("no_such_column").collect()
        return {}

    code, summary, _ = _run(capsys, "report", work)

    assert code == 1
    error = summary["error"]
    _assert_one_short_line(error)
    # Analysis runs no task: an earlier test's failed stage must not be blamed.
    assert error.startswith("Spark failed: [UNRESOLVED_COLUMN.WITH_SUGGESTION] ")
    assert "`no_such_column`" in error


def test_a_dead_driver_jvm_is_reported_as_such(tmp_path: Path) -> None:
    """The JVM killed under the driver (what the kernel's OOM killer does): a separate process,
    so the shared session lives on."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        import os, signal, sys, time
        from data_engine.jobrun import run_job
        from data_engine.spark import get_spark

        spark = get_spark("dead-jvm", conf={"spark.master": "local[1]"})
        pid = spark._jvm.java.lang.ProcessHandle.current().pid()

        def work():
            os.kill(pid, signal.SIGKILL)
            time.sleep(1)
            spark.range(3).count()
            return {}

        sys.exit(run_job("dedup", work))
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])

    assert done.returncode == 1, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    _assert_one_short_line(summary["error"])
    assert summary["error"].startswith("the Spark driver's JVM stopped (most often it ran out of memory); "
                                       "raise the driver heap: spark-submit --driver-memory ")
    assert "ConnectionRefusedError" in done.stderr  # the Python traceback stays in the log


def test_a_spark_context_stopped_under_a_running_job_points_at_the_driver(tmp_path: Path) -> None:
    """What a task thread's OutOfMemoryError does to a local driver: Spark stops the context and
    the job's call fails with an error about the stop (seen: a NullPointerException on a null
    dagScheduler). Here the context is really stopped from another thread while a job runs."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        import sys, threading, time
        from data_engine.jobrun import run_job
        from data_engine.spark import get_spark

        spark = get_spark("stopped-context", conf={"spark.master": "local[1]"})

        def slow(batches):
            import time
            for pdf in batches:
                time.sleep(0.5)
                yield pdf

        def work():
            threading.Timer(8, lambda: spark._jsc.sc().stop()).start()
            spark.range(400).repartition(40).mapInPandas(slow, "id long").count()
            return {}

        sys.exit(run_job("dedup", work))
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])

    assert done.returncode == 1, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    _assert_one_short_line(summary["error"])
    assert summary["error"].startswith("the Spark driver stopped while the job ran"), summary["error"]
    assert "--driver-memory" in summary["error"]


def test_long_messages_are_cut_in_the_summary_and_kept_whole_on_stderr(capsys) -> None:
    columns = ", ".join(f"column_{i}" for i in range(80))

    def work():
        raise KeyError(f"docs_clean lacks: {columns}")

    code, summary, err = _run(capsys, "clean", work)

    assert code == 1 and summary["error_type"] == "KeyError"
    assert len(summary["error"]) == ERROR_LIMIT and summary["error"].endswith("…")
    assert summary["error"].startswith("'docs_clean lacks: column_0, column_1")
    assert f"docs_clean lacks: {columns}" in err


def test_our_own_errors_are_never_cut(capsys) -> None:
    """A SailyardError is written to be acted on; its advice is often at the end."""
    columns = ", ".join(f"column_{i}" for i in range(80))

    def work():
        raise SchemaMismatchError(f"docs_clean lacks: {columns}; re-run clean")

    code, summary, err = _run(capsys, "clean", work)

    assert code == 1 and summary["error"] == f"docs_clean lacks: {columns}; re-run clean"
    assert err.strip() == f"sailyard clean: error: {summary['error']}"
