"""The only place that builds a SparkSession.

Run from `spark-submit`, the session (master, memory, packages) comes from spark-submit and is
only given the settings it lacks; run from plain Python it is `local[*]` (or
`$SAILYARD_SPARK_MASTER`). Either way: UTC, few shuffle partitions for small local data, string
partition values, Arrow for pandas UDFs, quiet logs, and the Delta extensions when the Delta jars
are on the classpath (then the lake commits natively instead of through delta-rs).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"

_DEFAULTS: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    # `lang=123` must stay a string; table schemas come from the Delta log, not from paths.
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Small Arrow batches keep numpy temporaries in cache (measured: notes/spark-minhash.md);
    # the byte cap bounds a batch of long pages (data_engine/batches.py bounds it in characters).
    "spark.sql.execution.arrow.maxRecordsPerBatch": "2000",
    "spark.sql.execution.arrow.maxBytesPerBatch": str(64 << 20),
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
    "spark.ui.enabled": "false",
    "spark.sql.parquet.compression.codec": "zstd",
    # Iterative plans (cluster rounds, unions of persisted frames) print as trees that double at
    # each shared node; Spark renders the string for every query, and an unbounded one can take the
    # whole driver heap (seen: OutOfMemoryError in QueryExecution.explainString).
    "spark.sql.maxPlanStringLength": str(1 << 20),
}
_LOCAL_DEFAULTS: dict[str, str] = {
    "spark.sql.shuffle.partitions": "8",
    "spark.default.parallelism": "4",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.host": "127.0.0.1",
}


#: Scan tasks per local core. Spark's default packs files by bytes into one task per core, which
#: balances the work only when its cost follows the bytes; the Python passes do not (a Burmese or
#: Thai page costs clean and scoring several times an English one of the same size, and the
#: packing puts the largest files, those 3-byte UTF-8 scripts, together), so a few more, smaller
#: tasks keep one slow task from holding the stage. Measured: clean at 100k, 32.8-34.5 s -> 29.3-31.0 s.
SCAN_TASKS_PER_CORE = 8


def local_cores(master: str) -> int:
    """The cores of a `local`, `local[N]`, `local[*]`, `local[N, F]` or `local-cluster[W, C, M]`
    master (W workers of C cores); 1 for anything else."""
    cluster = re.fullmatch(r"local-cluster\[\s*(\d+)\s*,\s*(\d+)\s*,.*\]", master.strip())
    if cluster:
        return max(1, int(cluster[1]) * int(cluster[2]))
    local = re.fullmatch(r"local(?:\[\s*(\*|\d+)\s*(?:,\s*\d+\s*)?\])?", master.strip())
    if local is None or local[1] is None:
        return 1
    return (os.cpu_count() or 1) if local[1] == "*" else max(1, int(local[1]))


def under_spark_submit() -> bool:
    """True when this Python driver was launched by spark-submit (it hands us its JVM)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_spark(app_name: str = "sailyard", conf: dict[str, str] | None = None) -> Any:
    """Return the active session or build one; `conf` entries win over the defaults."""
    # Executors must run this interpreter (pandas UDFs need its packages).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # Our log4j2 settings (warnings only) unless the user points Spark at their own conf dir.
    os.environ.setdefault("SPARK_CONF_DIR", str(Path(__file__).parent / "resources" / "spark"))
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    # Start or join the JVM: spark-submit's settings live there. The driver heap is a JVM flag, so
    # from plain Python it is passed at launch (SAILYARD_DRIVER_MEMORY, else spark-defaults.conf's);
    # setting it on the builder afterwards would be silently ignored.
    launch = None
    if SparkContext._gateway is None and not under_spark_submit() and os.environ.get("SAILYARD_DRIVER_MEMORY"):
        launch = SparkConf(loadDefaults=False).set("spark.driver.memory", os.environ["SAILYARD_DRIVER_MEMORY"])
    SparkContext._ensure_initialized(conf=launch)
    given = SparkConf()  # under spark-submit: what the user passed; those settings win
    wanted = dict(_DEFAULTS)
    if under_spark_submit():
        master = given.get("spark.master", "local[*]")
    else:
        master = wanted["spark.master"] = os.environ.get("SAILYARD_SPARK_MASTER", "local[*]")
    if master.startswith("local"):
        wanted.update(_LOCAL_DEFAULTS)
        wanted["spark.sql.files.minPartitionNum"] = str(SCAN_TASKS_PER_CORE * local_cores(master))
    wanted.update(conf or {})
    builder = SparkSession.builder.appName(app_name)
    for key, value in wanted.items():
        if not under_spark_submit() or (conf and key in conf) or not given.contains(key):
            builder = builder.config(key, value)
    if _delta_jars_present() and not given.contains("spark.sql.extensions"):
        builder = builder.config("spark.sql.extensions", DELTA_EXTENSION)
        builder = builder.config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("SAILYARD_SPARK_LOG_LEVEL", "WARN"))
    if spark.conf.get(WARM_UP_KEY, "true").lower() != "false":
        warm_up(spark)
    return spark


WARM_UP_KEY = "spark.sailyard.warmUp"
"""`false` skips `warm_up` for a new session."""
WARM_UP_ROWS_KEY = "spark.sailyard.warmUp.rows"
_WARM_UP_ROWS = 20_000
"""Rows of ~300 characters per core: enough string traffic for the JVM to compile its Arrow paths."""
_WARM_UP_MAX_TASKS = 64


def _warm_task(batches: Iterator[Any]) -> Iterator[Any]:
    import numpy  # noqa: F401  what every stage's Python side imports first
    import pandas  # noqa: F401

    yield from batches


def warm_up(spark: Any) -> Any:
    """Run one tiny Python-and-shuffle job in the background, so the first real job finds warm
    Python workers on every core and a JVM whose task, Arrow and shuffle paths have run.

    A fresh application's first job pays about 2.3 s for its first JVM job and 1.1 s more for
    its first Python workers (measured on 2 cores), while the driver spends seconds in Python
    (MLflow's import, Delta logs, listing) with the cores idle: started here, that cost overlaps
    the driver's own. Returns the thread (daemon: it never holds the application open).
    """
    import threading

    def run() -> None:
        try:
            # one task per core of a local run; a cluster's first executors (the rest stay cold)
            n = min(spark.sparkContext.defaultParallelism, _WARM_UP_MAX_TASKS)
            spark.sparkContext.setJobDescription("warm-up")
            from pyspark.sql import functions as F

            rows = int(spark.conf.get(WARM_UP_ROWS_KEY, str(_WARM_UP_ROWS)))
            (spark.range(0, rows * n, 1, n)
             .select("id", F.repeat(F.col("id").cast("string"), 60).alias("text"))
             .mapInArrow(_warm_task, "id long, text string")
             .groupBy((F.col("id") % 2).alias("k")).agg(F.sum(F.length("text"))).collect())
        except Exception:  # a session stopped meanwhile: nothing to warm
            pass

    thread = threading.Thread(target=run, name="sailyard-warm-up", daemon=True)
    thread.start()
    return thread


def local_frame(spark: Any, rows: list[Any], schema: Any) -> Any:
    """A driver-side list of rows as a DataFrame that is a local relation, through Arrow.

    `createDataFrame(list)` pickles the rows into an RDD that every use scans again as tasks
    (1.7 s for 8,500 rows of three ids in a fresh application, against 0.4 s this way); a local
    relation is collected, joined and broadcast without a Spark job. Columns go over as Python
    objects (None stays null, never NaN) and are cast to `schema` on the way."""
    import pandas as pd
    from pyspark.sql import types as T

    struct = schema if isinstance(schema, T.StructType) else T._parse_datatype_string(schema)
    if not rows:
        return spark.createDataFrame([], struct)
    names = struct.fieldNames()
    columns = list(zip(*rows, strict=True))
    frame = pd.DataFrame({name: pd.Series(list(column), dtype=object)
                          for name, column in zip(names, columns, strict=True)})
    return spark.createDataFrame(frame, struct)


def _delta_jars_present() -> bool:
    from pyspark import SparkContext

    jvm = SparkContext._jvm
    if jvm is None:
        return False
    try:
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
        jvm.java.lang.Class.forName(DELTA_EXTENSION, False, loader)
        return True
    except Exception:
        return False


def delta_native(spark: Any) -> bool:
    """True when this session commits Delta versions itself (delta-spark jars configured)."""
    return DELTA_EXTENSION in (spark.conf.get("spark.sql.extensions", "") or "")


@contextmanager
def phase(spark: Any, name: str) -> Iterator[None]:
    """Label the Spark jobs started inside as `name` (the job description the Spark UI and the
    event log show): a count() from PySpark otherwise reads "count at NativeMethodAccessorImpl",
    and `bench/phases.py` could not say which step of a stage the time went to."""
    context = spark.sparkContext
    before = context.getLocalProperty("spark.job.description")
    context.setJobDescription(name)
    try:
        yield
    finally:
        context.setJobDescription(before)  # type: ignore[arg-type]
