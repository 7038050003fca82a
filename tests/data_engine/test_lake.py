"""The Delta lake layer (`data_engine.lake`) on real tables: local Spark writes, delta-rs commits.

No mocks: every test writes real Parquet with Spark and commits real Delta versions on disk. The
crash and race tests run writers in their own Python processes (each with its own Spark), started
together, because a killed or racing writer is only real in a separate process.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from data_engine import lake
from data_engine.errors import SchemaMismatchError, TableConflictError, TableNotFoundError

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = "id long, text string, lang string"


def make_df(spark: Any, rows: list[tuple], schema: str = SCHEMA) -> Any:
    return spark.createDataFrame(rows, schema)


def rows(n: int, start: int = 0, langs: tuple[str, ...] = ("tha", "vie"), tag: str = "r") -> list[tuple]:
    return [(start + i, f"{tag}{start + i}", langs[i % len(langs)]) for i in range(n)]


def arrow_rows(table: Any) -> list[tuple]:
    names = table.column_names
    return sorted(tuple(r[c] for c in names) for r in table.to_pylist())


def spark_rows(df: Any) -> list[tuple]:
    return sorted(tuple(r) for r in df.collect())


def data_files(table: Path) -> set[str]:
    """Parquet files in the table folder (not staging, not the log), relative to the table."""
    return {str(p.relative_to(table)) for p in table.rglob("*.parquet")
            if not any(part.startswith(("_", ".")) for part in p.relative_to(table).parts)}


def logged_files(table: Path, version: int | None = None) -> set[str]:
    from deltalake import DeltaTable

    dt = DeltaTable(str(table), version=version)
    return {str(Path(uri).relative_to(table)) for uri in dt.file_uris()}


def log_actions(table: Path, version: int) -> list[dict[str, Any]]:
    text = (table / "_delta_log" / f"{version:020d}.json").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------
# Writes and reads in this process


def test_create_append_overwrite_and_pinned_versions(spark, lake_dir):
    v0_rows = rows(6)
    created = lake.write_table(make_df(spark, v0_rows), lake_dir, "docs", mode="error",
                               metadata={"run_id": "r-0"})
    assert (created.version, created.rows, created.committed) == (0, 6, True)
    assert created.files == len(logged_files(created.path)) >= 2
    assert lake.exists(lake_dir, "docs") and lake.table_version(lake_dir, "docs") == 0

    more = rows(3, start=100, langs=("ind",))
    appended = lake.write_table(make_df(spark, more), lake_dir, "docs", mode="append")
    assert (appended.version, appended.rows) == (1, 3)
    assert arrow_rows(lake.read_arrow(lake_dir, "docs")) == sorted(v0_rows + more)

    new = rows(2, start=200, langs=("msa",))
    replaced = lake.write_table(make_df(spark, new), lake_dir, "docs", mode="overwrite")
    assert (replaced.version, replaced.rows) == (2, 2)

    latest = lake.read_table(spark, lake_dir, "docs")
    assert latest.version == 2
    assert spark_rows(latest.df) == sorted(new)
    assert arrow_rows(lake.read_arrow(lake_dir, "docs")) == sorted(new)

    # Older versions stay readable, pinned, through both readers.
    old = lake.read_table(spark, lake_dir, "docs", version=0)
    assert old.version == 0
    assert spark_rows(old.df) == sorted(v0_rows)
    assert arrow_rows(lake.read_arrow(lake_dir, "docs", version=0)) == sorted(v0_rows)
    assert spark_rows(lake.read_table(spark, lake_dir, "docs", version=1).df) == sorted(v0_rows + more)
    assert lake.read_arrow(lake_dir, "docs", version=1, columns=["id"]).column_names == ["id"]

    hist = lake.history(lake_dir, "docs")
    assert [h["operation"] for h in hist] == ["WRITE", "WRITE", "CREATE TABLE"]
    assert hist[-1]["run_id"] == "r-0"
    with pytest.raises(TableNotFoundError):
        lake.read_arrow(lake_dir, "docs", version=7)
    with pytest.raises(TableNotFoundError):
        lake.read_table(spark, lake_dir, "nope")
    assert lake.table_version(lake_dir, "nope") is None and not lake.exists(lake_dir, "nope")


def test_partition_overwrite_replaces_only_named_partitions(spark, lake_dir):
    base = rows(9, langs=("tha", "vie", "ind"))
    lake.write_table(make_df(spark, base), lake_dir, "p", mode="error")
    keep_vie_ind = [r for r in base if r[2] != "tha"]

    tha = [(50, "new-tha", "tha")]
    res = lake.write_table(make_df(spark, tha), lake_dir, "p", mode="overwrite",
                           replace_partitions={"lang": "tha"})
    assert res.version == 1
    assert arrow_rows(lake.read_arrow(lake_dir, "p")) == sorted(keep_vie_ind + tha)

    # A list of values; a partition named but absent from the data ends up empty.
    vie = [(60, "new-vie", "vie"), (61, "new-vie2", "vie")]
    res = lake.write_table(make_df(spark, vie), lake_dir, "p", mode="overwrite",
                           replace_partitions={"lang": ["vie", "ind"]})
    assert res.version == 2
    assert arrow_rows(lake.read_arrow(lake_dir, "p")) == sorted(tha + vie)
    assert spark_rows(lake.read_table(spark, lake_dir, "p").df) == sorted(tha + vie)
    assert {Path(f).parts[0] for f in logged_files(res.path)} == {"lang=tha", "lang=vie"}

    # Rows outside the replaced partitions: refused, nothing committed, their files removed.
    before = data_files(res.path)
    with pytest.raises(SchemaMismatchError):
        lake.write_table(make_df(spark, [(70, "x", "tha"), (71, "y", "msa")]), lake_dir, "p",
                         mode="overwrite", replace_partitions={"lang": "tha"})
    assert lake.table_version(lake_dir, "p") == 2
    assert data_files(res.path) == before
    with pytest.raises(ValueError):
        lake.write_table(make_df(spark, tha), lake_dir, "p", mode="append",
                         replace_partitions={"lang": "tha"})


def test_empty_table_reads_empty_with_its_schema(spark, lake_dir):
    res = lake.write_table(make_df(spark, []), lake_dir, "empty", mode="error")
    assert (res.version, res.rows, res.files) == (0, 0, 0)
    arrow = lake.read_arrow(lake_dir, "empty")
    assert arrow.num_rows == 0 and arrow.column_names == ["id", "text", "lang"]
    table = lake.read_table(spark, lake_dir, "empty")
    assert table.df.count() == 0
    assert [(f.name, f.dataType.simpleString()) for f in table.df.schema.fields] == [
        ("id", "bigint"), ("text", "string"), ("lang", "string")]

    # ... and an overwrite with nothing empties a filled table.
    lake.write_table(make_df(spark, rows(4)), lake_dir, "empty", mode="append")
    assert lake.read_arrow(lake_dir, "empty").num_rows == 4
    res = lake.write_table(make_df(spark, []), lake_dir, "empty", mode="overwrite")
    assert res.version == 2
    assert lake.read_arrow(lake_dir, "empty").num_rows == 0
    assert lake.read_table(spark, lake_dir, "empty").df.count() == 0


def test_refusals_commit_nothing(spark, lake_dir):
    lake.write_table(make_df(spark, rows(4)), lake_dir, "t", mode="error")
    path = lake.table_path(lake_dir, "t")
    files = data_files(path)

    with pytest.raises(TableConflictError):
        lake.write_table(make_df(spark, rows(2, start=10)), lake_dir, "t", mode="error")
    wider = make_df(spark, [(1, "a", 0.5, "tha")], "id long, text string, score double, lang string")
    with pytest.raises(SchemaMismatchError):
        lake.write_table(wider, lake_dir, "t", mode="append")
    retyped = make_df(spark, [("1", "a", "tha")], "id string, text string, lang string")
    with pytest.raises(SchemaMismatchError):
        lake.write_table(retyped, lake_dir, "t", mode="append")
    with pytest.raises(SchemaMismatchError):  # partition column missing from the data
        lake.write_table(make_df(spark, [(1, "a")], "id long, text string"), lake_dir, "t",
                         mode="append")
    with pytest.raises(SchemaMismatchError):  # null partition values
        lake.write_table(make_df(spark, [(1, "a", None)]), lake_dir, "t", mode="append")
    with pytest.raises(SchemaMismatchError):  # ... next to good ones (whose files sort first)
        lake.write_table(make_df(spark, [(1, "a", "ABC"), (2, "b", None)]), lake_dir, "t",
                         mode="append")

    assert lake.table_version(lake_dir, "t") == 0
    assert arrow_rows(lake.read_arrow(lake_dir, "t")) == sorted(rows(4))
    assert data_files(path) == files  # refused writes left no data files behind

    # A same-columns append in another column order is fine.
    reordered = make_df(spark, [("tha", 9, "z")], "lang string, id long, text string")
    assert lake.write_table(reordered, lake_dir, "t", mode="append").version == 1
    # An overwrite of the whole table may change the schema.
    res = lake.write_table(wider, lake_dir, "t", mode="overwrite")
    assert lake.read_arrow(lake_dir, "t").column_names == ["id", "text", "score", "lang"]
    assert res.version == 2


def test_app_transaction_makes_a_write_idempotent(spark, lake_dir):
    first = lake.write_table(make_df(spark, rows(3)), lake_dir, "idem", mode="append",
                             app_id="ingest", app_version=1)
    assert first.committed and first.version == 0

    again = lake.write_table(make_df(spark, rows(3)), lake_dir, "idem", mode="append",
                             app_id="ingest", app_version=1)
    assert again.committed is False
    assert (again.version, again.rows, again.files) == (0, 0, 0)
    older = lake.write_table(make_df(spark, rows(3)), lake_dir, "idem", mode="overwrite",
                             app_id="ingest", app_version=0)
    assert older.committed is False
    assert lake.table_version(lake_dir, "idem") == 0
    assert arrow_rows(lake.read_arrow(lake_dir, "idem")) == sorted(rows(3))
    assert data_files(first.path) == logged_files(first.path)  # skipped writes wrote nothing

    nxt = lake.write_table(make_df(spark, rows(2, start=10)), lake_dir, "idem", mode="append",
                           app_id="ingest", app_version=2)
    assert nxt.committed and nxt.version == 1
    other_app = lake.write_table(make_df(spark, rows(1, start=20)), lake_dir, "idem", mode="append",
                                 app_id="export", app_version=1)
    assert other_app.committed and other_app.version == 2
    assert lake.read_arrow(lake_dir, "idem").num_rows == 6

    from deltalake import DeltaTable
    dt = DeltaTable(str(first.path))
    assert dt.transaction_version("ingest") == 2 and dt.transaction_version("export") == 1


def test_unusual_partition_values_round_trip_as_strings(spark, lake_dir):
    values = ["123", "007", "a b", "a%b", "x/y", "k=v", "é", "null"]
    data = [(i, f"t{i}", v) for i, v in enumerate(values)]
    lake.write_table(make_df(spark, data), lake_dir, "odd", mode="error")

    arrow = lake.read_arrow(lake_dir, "odd")
    assert str(arrow.schema.field("lang").type) == "string"
    assert arrow_rows(arrow) == sorted(data)
    table = lake.read_table(spark, lake_dir, "odd")
    assert table.df.schema["lang"].dataType.simpleString() == "string"
    assert spark_rows(table.df) == sorted(data)
    assert sorted(lake.read_arrow(lake_dir, "odd", columns=["lang"]).column("lang").to_pylist()) \
        == sorted(values)

    # "123" is matched as a string by a partition overwrite; "007" is not the same partition.
    lake.write_table(make_df(spark, [(99, "new", "123")]), lake_dir, "odd", mode="overwrite",
                     replace_partitions={"lang": ["123", "a b"]})
    expected = sorted([r for r in data if r[2] not in ("123", "a b")] + [(99, "new", "123")])
    assert arrow_rows(lake.read_arrow(lake_dir, "odd")) == expected
    assert spark_rows(lake.read_table(spark, lake_dir, "odd").df) == expected


def test_unpartitioned_table_with_sorted_files(spark, lake_dir):
    import pyarrow.parquet as pq

    data = [(i, f"t{i}", "tha") for i in (5, 3, 9, 1, 7, 2, 8)]
    res = lake.write_table(make_df(spark, data).repartition(2), lake_dir, "flat", mode="error",
                           partition_by=(), sort_by=("id",))
    [meta] = [a["metaData"] for a in log_actions(res.path, 0) if "metaData" in a]
    assert meta["partitionColumns"] == []
    for rel in logged_files(res.path):
        assert "/" not in rel  # no partition folders
        ids = pq.read_table(res.path / rel).column("id").to_pylist()
        assert ids == sorted(ids)
    more = [(20, "x", "vie")]
    lake.write_table(make_df(spark, more), lake_dir, "flat", mode="append", partition_by=())
    assert arrow_rows(lake.read_arrow(lake_dir, "flat")) == sorted(data + more)
    assert spark_rows(lake.read_table(spark, lake_dir, "flat").df) == sorted(data + more)


# --------------------------------------------------------------------------------------------
# Any Delta reader reads what we write


def test_plain_delta_reader_reads_our_table(spark, lake_dir):
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    schema = ("id long, text string, score double, n int, ts timestamp, day date, ok boolean, "
              "lang string")
    ts = datetime.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=datetime.UTC)
    data = [(i, f"doc {i}", i / 4, i % 3, ts + datetime.timedelta(hours=i), ts.date(), i % 2 == 0,
             ("tha", "vie", "ind")[i % 3]) for i in range(30)]
    data.append((99, None, None, None, None, None, None, "vie"))
    df = make_df(spark, data, schema)
    res = lake.write_table(df, lake_dir, "any", mode="error")
    path = str(res.path)

    dt = DeltaTable(path)
    got = dt.to_pyarrow_table(filesystem=pafs.SubTreeFileSystem(path, pafs.LocalFileSystem()))
    assert got.schema.names == ["id", "text", "score", "n", "ts", "day", "ok", "lang"]
    assert [got.schema.field(c).type for c in got.schema.names] == [
        pa.int64(), pa.string(), pa.float64(), pa.int32(), pa.timestamp("us", tz="UTC"), pa.date32(),
        pa.bool_(), pa.string()]
    assert got.num_rows == len(data) == dt.count()
    assert got.column("lang").null_count == 0
    assert arrow_rows(got) == arrow_rows(lake.read_arrow(lake_dir, "any"))
    # Row for row what Spark wrote (Spark hands back naive datetimes in the local time zone).
    wrote = sorted(tuple(v.astimezone(datetime.UTC) if isinstance(v, datetime.datetime)
                         else v for v in r) for r in df.collect())
    assert arrow_rows(got) == wrote == sorted(data)

    # The log: protocol, metadata with the partition column, one add per file with its stats.
    actions = log_actions(res.path, 0)
    kinds = [next(iter(a)) for a in actions]
    assert {"commitInfo", "protocol", "metaData"} <= set(kinds)
    assert actions[kinds.index("protocol")]["protocol"]["minReaderVersion"] >= 1
    meta = actions[kinds.index("metaData")]["metaData"]
    assert meta["partitionColumns"] == ["lang"]
    assert [f["name"] for f in json.loads(meta["schemaString"])["fields"]] == got.schema.names
    adds = [a["add"] for a in actions if "add" in a]
    assert len(adds) == res.files >= 3
    assert {a["partitionValues"]["lang"] for a in adds} == {"tha", "vie", "ind"}
    assert sum(json.loads(a["stats"])["numRecords"] for a in adds) == len(data)
    for add in adds:
        file = res.path / add["path"]
        assert file.is_file() and file.stat().st_size == add["size"]
        assert add["path"].startswith(f"lang={add['partitionValues']['lang']}/")
        assert "lang" not in pq.read_schema(file).names  # partition values live in the log only

    # Another version, read by the plain reader at both versions.
    lake.write_table(make_df(spark, data[:5], schema), lake_dir, "any", mode="overwrite")
    assert DeltaTable(path).to_pyarrow_table(
        filesystem=pafs.SubTreeFileSystem(path, pafs.LocalFileSystem())).num_rows == 5
    assert DeltaTable(path, version=0).count() == len(data)
    assert {"remove", "add"} <= {next(iter(a)) for a in log_actions(res.path, 1)}


# --------------------------------------------------------------------------------------------
# Conflicts and vacuum in this process


def test_overwrite_from_a_stale_version_conflicts(spark, lake_dir):
    lake.write_table(make_df(spark, rows(4)), lake_dir, "stale", mode="error")
    theirs = rows(2, start=10, tag="theirs")
    lake.write_table(make_df(spark, theirs), lake_dir, "stale", mode="overwrite")
    path = lake.table_path(lake_dir, "stale")

    with pytest.raises(TableConflictError):
        lake.write_table(make_df(spark, rows(3, start=20, tag="mine")), lake_dir, "stale",
                         mode="overwrite", base_version=0)
    assert lake.table_version(lake_dir, "stale") == 1
    assert arrow_rows(lake.read_arrow(lake_dir, "stale")) == sorted(theirs)
    assert data_files(path) == logged_files(path, 0) | logged_files(path, 1)  # ours were removed

    # Someone else *appending* after our base counts too: our overwrite must not commit on top.
    lake.write_table(make_df(spark, rows(1, start=30, tag="late")), lake_dir, "stale", mode="append")
    with pytest.raises(TableConflictError):
        lake.write_table(make_df(spark, rows(3, start=40, tag="mine")), lake_dir, "stale",
                         mode="overwrite", base_version=1)
    with pytest.raises(TableConflictError):
        lake.write_table(make_df(spark, [(50, "x", "tha")]), lake_dir, "stale", mode="overwrite",
                         replace_partitions={"lang": "tha"}, base_version=1)
    assert lake.table_version(lake_dir, "stale") == 2
    assert arrow_rows(lake.read_arrow(lake_dir, "stale")) == sorted(theirs + rows(1, 30, tag="late"))

    # A plain append is rebased after others' appends ...
    assert lake.write_table(make_df(spark, rows(1, start=60)), lake_dir, "stale", mode="append").version == 3
    # ... but an append that names the version its rows were derived from lands only on top of it
    # (ingest numbers repeated documents after those already in the table).
    with pytest.raises(TableConflictError):
        lake.write_table(make_df(spark, rows(1, start=65)), lake_dir, "stale", mode="append",
                         base_version=1)
    with pytest.raises(TableConflictError):
        lake.write_table(make_df(spark, rows(1, start=65)), lake_dir, "stale", mode="append",
                         base_version=None)
    assert data_files(path) == set().union(*(logged_files(path, v) for v in range(4)))
    # An overwrite based on the latest version goes through.
    assert lake.write_table(make_df(spark, rows(1, start=70)), lake_dir, "stale", mode="overwrite",
                            base_version=3).version == 4
    assert arrow_rows(lake.read_arrow(lake_dir, "stale")) == rows(1, start=70)


def test_vacuum_dry_run_lists_without_deleting(spark, lake_dir):
    v0 = rows(4)
    lake.write_table(make_df(spark, v0), lake_dir, "vac", mode="error")
    path = lake.table_path(lake_dir, "vac")
    old_files = logged_files(path, 0)
    lake.write_table(make_df(spark, rows(2, start=10)), lake_dir, "vac", mode="overwrite")
    new_files = logged_files(path)
    assert old_files and not old_files & new_files

    # A dead writer's staging folder (old) and a running writer's (fresh).
    dead = path / lake.STAGING / "dead"
    (dead / "lang=tha").mkdir(parents=True)
    (dead / "lang=tha" / "part-0.parquet").write_bytes(b"junk")
    two_hours_ago = time.time() - 7200
    os.utime(dead, (two_hours_ago, two_hours_ago))
    running = path / lake.STAGING / "running"
    running.mkdir()

    listed = lake.vacuum(lake_dir, "vac", retention_hours=0, dry_run=True, force=True)
    assert {str(path / f) for f in old_files} | {str(dead), str(running)} == set(listed)
    assert data_files(path) == old_files | new_files and dead.is_dir() and running.is_dir()
    assert lake.table_version(lake_dir, "vac") == 1
    assert arrow_rows(lake.read_arrow(lake_dir, "vac", version=0)) == sorted(v0)

    # Default retention: removed data files are young, so kept; only the old staging folder goes.
    assert lake.vacuum(lake_dir, "vac", dry_run=True) == []
    assert lake.vacuum(lake_dir, "vac", retention_hours=1, dry_run=True) == [str(dead)]

    deleted = lake.vacuum(lake_dir, "vac", retention_hours=1)
    assert deleted == [str(dead)] and not dead.exists() and running.is_dir()
    deleted = lake.vacuum(lake_dir, "vac", retention_hours=0, force=True)
    assert {str(path / f) for f in old_files} | {str(running)} == set(deleted)
    assert data_files(path) == new_files
    assert arrow_rows(lake.read_arrow(lake_dir, "vac")) == rows(2, start=10)


# --------------------------------------------------------------------------------------------
# Writers in their own processes: killed before commit, racing overwrites, racing creates

WORKER = r'''
import json, os, signal, sys, time
from pathlib import Path

cfg = json.loads(sys.argv[1])
from data_engine import lake
from data_engine.errors import TableConflictError
from data_engine.spark import get_spark

def say(**kw):
    print("RESULT " + json.dumps(kw), flush=True)

def wait_for(pred, what, timeout=240):
    end = time.time() + timeout
    while not pred():
        if time.time() > end:
            raise RuntimeError("timed out waiting for " + what)
        time.sleep(0.02)

barrier = Path(cfg["barrier"])
original = lake._adopt_files
step = {}

def adopt(staged, checked):
    original(staged, checked)  # our files now lie in the table, uncommitted
    if step.get("kill"):
        say(event="adopted", moved=[f[0] for f in staged.files])
        os.kill(os.getpid(), signal.SIGKILL)
    (barrier / (staged.name + "." + cfg["worker"])).touch()  # wait until the other one got here too
    wait_for(lambda: len(list(barrier.glob(staged.name + ".*"))) >= 2, "the other writer")

lake._adopt_files = adopt
spark = get_spark("lake-worker", conf={"spark.master": "local[1]", "spark.sql.shuffle.partitions": "2"})
say(event="jvm", pid=spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
wait_for(lambda: (barrier / "go").exists(), "go")

for step in cfg["steps"]:
    df = spark.createDataFrame([tuple(r) for r in step["rows"]], "id long, text string, lang string")
    try:
        res = lake.write_table(df, cfg["lake"], step["table"], mode=step["mode"])
        say(table=step["table"], outcome="committed", version=res.version, rows=res.rows)
    except TableConflictError as exc:
        say(table=step["table"], outcome="conflict", error=str(exc)[:300])
    except Exception as exc:
        say(table=step["table"], outcome="error", error=repr(exc)[:500])
spark.stop()
'''


def _results(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line[len("RESULT "):]) for line in stdout.splitlines()
            if line.startswith("RESULT ")]


@pytest.fixture(scope="module")
def workers(spark, tmp_path_factory):
    """Two writer processes, started together, each with its own Spark, on tables made here.

    A and B both: overwrite "raced" (v0 made here) at the same moment; create "created" with
    mode="append" at the same moment; create "created_err" with mode="error" at the same moment.
    Then A alone overwrites "killed" (v0 made here) and is SIGKILLed right after its files were
    moved into the table, before its commit. (One JVM per writer costs ~10 s of CPU; two do all.)
    """
    root = tmp_path_factory.mktemp("workers")
    lake_root = root / "lake"
    lake_root.mkdir()
    barrier = root / "barrier"
    barrier.mkdir()
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SAILYARD_SPARK_LOG_LEVEL="ERROR",
               # Short-lived JVMs: the C1 compiler alone starts and runs these ~35% faster.
               JAVA_TOOL_OPTIONS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
    for inherited in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET"):  # never join our JVM
        env.pop(inherited, None)

    def plan(worker: str, n: int) -> dict[str, Any]:
        def mine(tag: str) -> list[tuple]:
            return rows(n, start=1000 * n, tag=f"{worker}-{tag}-")
        return {"worker": worker, "lake": str(lake_root), "barrier": str(barrier),
                "steps": [{"table": "raced", "mode": "overwrite", "rows": mine("ow")},
                          {"table": "created", "mode": "append", "rows": mine("ap")},
                          {"table": "created_err", "mode": "error", "rows": mine("er")}]}

    cfgs = {"A": plan("A", 3), "B": plan("B", 4)}
    cfgs["A"]["steps"].append({"table": "killed", "mode": "overwrite", "kill": True,
                               "rows": rows(5, start=500, tag="killed-")})
    procs = {name: subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(cfg)], cwd=ROOT,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
             for name, cfg in cfgs.items()}
    out: dict[str, Any] = {}
    try:
        # While their JVMs start: the tables they will overwrite, at version 0.
        v0 = {"raced": rows(6, tag="v0-"), "killed": rows(6, tag="v0-")}
        for table, data in v0.items():
            lake.write_table(make_df(spark, data), lake_root, table, mode="error")
        (barrier / "go").touch()
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=400)
            out[name] = {"rc": proc.returncode, "stdout": stdout, "stderr": stderr,
                         "results": _results(stdout), "cfg": cfgs[name]}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    yield {"lake": str(lake_root), "v0": v0, **out}
    # A killed driver's JVM sees its stdin close and exits by itself; make sure none outlives us.
    for name in out:
        jvm = next((r["pid"] for r in out[name]["results"] if r.get("event") == "jvm"), None)
        deadline = time.time() + 10
        while jvm is not None and time.time() < deadline:
            try:
                os.kill(jvm, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            cmdline = Path(f"/proc/{jvm}/cmdline")
            if jvm is not None and cmdline.exists() and b"SparkSubmit" in cmdline.read_bytes():
                os.kill(jvm, signal.SIGKILL)


def _outcomes(workers: dict[str, Any], table: str) -> dict[str, dict[str, Any]]:
    got = {}
    for name, rc in (("A", -signal.SIGKILL), ("B", 0)):
        w = workers[name]
        assert w["rc"] == rc, f"worker {name}: rc {w['rc']}\n{w['stdout']}\n{w['stderr'][-3000:]}"
        [result] = [r for r in w["results"] if r.get("table") == table]
        assert result["outcome"] != "error", result
        got[name] = result
    return got


def test_writer_killed_before_commit_leaves_previous_version(workers, spark):
    a = workers["A"]
    assert a["rc"] == -signal.SIGKILL, f"rc={a['rc']}\n{a['stdout']}\n{a['stderr'][-3000:]}"
    [adopted] = [r for r in a["results"] if r.get("event") == "adopted"]
    assert a["results"][-1] == adopted, "the killed writer must not get past its adopted files"
    lake_root, v0 = workers["lake"], workers["v0"]["killed"]
    path = lake.table_path(lake_root, "killed")

    assert lake.table_version(lake_root, "killed") == 0
    assert arrow_rows(lake.read_arrow(lake_root, "killed")) == sorted(v0)
    table = lake.read_table(spark, lake_root, "killed")
    assert table.version == 0 and spark_rows(table.df) == sorted(v0)

    strays = set(adopted["moved"])
    assert strays and all((path / s).is_file() for s in strays)
    assert data_files(path) == logged_files(path) | strays
    assert not strays & logged_files(path)
    assert list((path / lake.STAGING).iterdir()), "the dead writer's staging folder is left over"

    deleted = lake.vacuum(lake_root, "killed", retention_hours=0, force=True)
    assert {str(path / s) for s in strays} <= set(deleted)
    assert not any(str(path / f) in deleted for f in logged_files(path))
    assert data_files(path) == logged_files(path)
    assert not list((path / lake.STAGING).iterdir())
    assert arrow_rows(lake.read_arrow(lake_root, "killed")) == sorted(v0)
    assert spark_rows(lake.read_table(spark, lake_root, "killed").df) == sorted(v0)

    after = rows(2, start=900, tag="after")
    res = lake.write_table(make_df(spark, after), lake_root, "killed", mode="overwrite")
    assert res.committed and res.version == lake.table_version(lake_root, "killed") > 0
    assert arrow_rows(lake.read_arrow(lake_root, "killed")) == sorted(after)


def test_racing_overwrites_exactly_one_commits(workers, spark):
    got = _outcomes(workers, "raced")
    assert sorted(r["outcome"] for r in got.values()) == ["committed", "conflict"], got
    [winner] = [name for name, r in got.items() if r["outcome"] == "committed"]
    assert got[winner]["version"] == 1

    lake_root = workers["lake"]
    path = lake.table_path(lake_root, "raced")
    winner_rows = sorted(tuple(r) for r in workers[winner]["cfg"]["steps"][0]["rows"])
    assert lake.table_version(lake_root, "raced") == 1
    assert arrow_rows(lake.read_arrow(lake_root, "raced")) == winner_rows
    assert spark_rows(lake.read_table(spark, lake_root, "raced").df) == winner_rows
    # The loser's files were removed: on disk only what v0 and v1 reference.
    assert data_files(path) == logged_files(path, 0) | logged_files(path, 1)
    assert [h["operation"] for h in lake.history(lake_root, "raced")] == ["WRITE", "CREATE TABLE"]


def test_racing_creates_with_append_make_one_table(workers):
    got = _outcomes(workers, "created")
    assert [r["outcome"] for r in got.values()] == ["committed", "committed"], got
    assert sorted(r["version"] for r in got.values()) == [0, 1]

    lake_root = workers["lake"]
    history = lake.history(lake_root, "created")
    assert sorted(h["operation"] for h in history) == ["CREATE TABLE", "WRITE"]
    everyone = sorted(tuple(r) for w in ("A", "B") for r in workers[w]["cfg"]["steps"][1]["rows"])
    assert arrow_rows(lake.read_arrow(lake_root, "created")) == everyone
    path = lake.table_path(lake_root, "created")
    assert data_files(path) == logged_files(path)


def test_racing_creates_with_error_mode_let_only_one_in(workers):
    got = _outcomes(workers, "created_err")
    assert sorted(r["outcome"] for r in got.values()) == ["committed", "conflict"], got
    [winner] = [name for name, r in got.items() if r["outcome"] == "committed"]

    lake_root = workers["lake"]
    assert lake.table_version(lake_root, "created_err") == 0
    winner_rows = sorted(tuple(r) for r in workers[winner]["cfg"]["steps"][2]["rows"])
    assert arrow_rows(lake.read_arrow(lake_root, "created_err")) == winner_rows
    path = lake.table_path(lake_root, "created_err")
    assert data_files(path) == logged_files(path)


def test_lake_uris_are_qualified_and_mapped_for_delta_rs(tmp_path, monkeypatch):
    assert lake.lake_uri(tmp_path / "x") == f"file://{tmp_path}/x"
    assert lake.lake_uri(f"file://{tmp_path}/x/") == f"file://{tmp_path}/x"
    assert lake.table_uri("hdfs://nn:8020/lake/", "docs_raw") == "hdfs://nn:8020/lake/docs_raw"
    monkeypatch.setenv("SAILYARD_DELTA_STORAGE_OPTIONS", '{"AWS_REGION": "ap-southeast-1"}')
    assert lake._rs("s3a://bucket/lake/t") == ("s3://bucket/lake/t", {"AWS_REGION": "ap-southeast-1"})
    assert lake._rs("gs://b/lake/t")[0] == "gs://b/lake/t"
    assert lake._rs(f"file://{tmp_path}/t") == (f"{tmp_path}/t", None)
    assert lake._spark_file_uri("s3://bucket/lake/t/lang=tha/f.parquet", "s3a://bucket/lake/t") == \
        "s3a://bucket/lake/t/lang=tha/f.parquet"
    from data_engine.errors import ConfigError

    with pytest.raises(ConfigError, match="unsupported scheme"):
        lake.lake_uri("ftp://host/lake")
    monkeypatch.setenv("SAILYARD_DELTA_STORAGE_OPTIONS", "not json")
    with pytest.raises(ConfigError, match="SAILYARD_DELTA_STORAGE_OPTIONS"):
        lake._rs("s3a://bucket/lake/t")
