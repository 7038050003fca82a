"""Storage faults versus corrupt bytes at ingest.

An I/O error (EIO, a vanished file) must fail the read — Spark retries the task, and a job that
still fails commits nothing — while corruption (a gzip stream cut short, a Parquet file that does
not decode) is quarantined, logs the file as incomplete, and a repaired file at the same path adds
exactly the records that were missing.
"""

from __future__ import annotations

import builtins
import gzip
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_engine import lake
from data_engine.ingest.records import InputReadError, Limits, Split, read_split
from data_engine.ingest.run import ingest

HERE = Path(__file__).parent
REPO = HERE.parents[2]
LIMITS = Limits()


def _lines(n: int, tag: str = "doc") -> list[bytes]:
    return [json.dumps({"text": f"{tag} {i} " + "kata " * (i % 9), "url": f"https://x.example/{i}"}).encode()
            for i in range(n)]


def _plan(tmp_path: Path, path: Path, offset: int, times: int, name: str = "state") -> Path:
    state = tmp_path / name
    state.mkdir()
    plan = tmp_path / f"{name}.json"
    plan.write_text(json.dumps({"path": str(path.resolve()), "offset": offset, "times": times,
                                "state": str(state)}))
    return plan


def _codes(rows: list[dict]) -> list[str | None]:
    return [r["reason"].split(":")[0] if r["reason"] else None for r in rows]


# --- the reader alone: which errors raise, which are quarantined -----------------------------------

@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "parquet"])
def test_a_file_that_vanished_is_an_io_error_not_a_quarantine_row(tmp_path: Path, fmt: str) -> None:
    gone = tmp_path / f"gone.{fmt}"
    with pytest.raises(InputReadError, match=r"I/O error reading .*gone.*No such file"):
        list(read_split(Split(str(gone), fmt), LIMITS))


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(("fmt", "start"), [("jsonl", 0), ("jsonl", 4096), ("jsonl.gz", 0)])
def test_a_kernel_eio_is_raised_not_quarantined(fmt: str, start: int) -> None:
    # Reading /proc/self/mem at an unmapped address is a genuine EIO from the kernel.
    with pytest.raises(InputReadError, match=r"Errno 5"):
        list(read_split(Split("/proc/self/mem", fmt, start, -1), LIMITS))


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "parquet"])
def test_eio_mid_file_raises_after_the_records_before_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         fmt: str) -> None:
    import faulty_storage

    path = tmp_path / f"in.{fmt}"
    lines = [json.dumps({"text": f"{i} {os.urandom(64).hex()}"}).encode() for i in range(6000)]
    if fmt == "parquet":
        pq.write_table(pa.table({"text": [json.loads(x)["text"] for x in lines]}), path, row_group_size=300)
    else:
        data = b"\n".join(lines) + b"\n"
        path.write_bytes(gzip.compress(data) if fmt == "jsonl.gz" else data)
    size = path.stat().st_size
    assert size > 256 * 1024  # more than gzip's 128 KiB read-ahead
    # Parquet is read footer first, so its fault sits mid-file; the others fail on their last read.
    fault_at = size // 2 if fmt == "parquet" else size - 1
    monkeypatch.setenv("SAILYARD_FAULT_PLAN", str(_plan(tmp_path, path, fault_at, times=1)))
    monkeypatch.setattr(builtins, "open", faulty_storage.faulty_open)
    got = []
    with pytest.raises(InputReadError, match="Errno 5"):
        for row in read_split(Split(str(path), fmt), LIMITS):
            got.append(row)
    assert 0 < len(got) < 6000 and all(r["kind"] == "doc" for r in got)
    # The fault was one-shot: the retry reads everything, nothing quarantined.
    again = list(read_split(Split(str(path), fmt), LIMITS))
    assert len(again) == 6000 and {r["kind"] for r in again} == {"doc"}


def test_corrupt_bytes_are_one_file_level_row_after_the_good_prefix(tmp_path: Path) -> None:
    lines = _lines(400)
    data = gzip.compress(b"\n".join(lines) + b"\n")
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) // 2])
    got = list(read_split(Split(str(cut), "jsonl.gz"), LIMITS))
    whole = zlib.decompressobj(wbits=31).decompress(data[: len(data) // 2])
    prefix = whole.count(b"\n")  # complete lines the truncated stream still holds
    assert [r["text"] for r in got[:-1]] == [json.loads(x)["text"] for x in lines[:prefix]]
    assert _codes(got[-1:]) == ["unreadable_gzip"] and got[-1]["record_no"] is None
    assert f"after line {prefix}" in got[-1]["reason"]

    (tmp_path / "notgz.jsonl.gz").write_bytes(b'{"text": "plain, not gzip"}\n')
    (row,) = read_split(Split(str(tmp_path / "notgz.jsonl.gz"), "jsonl.gz"), LIMITS)
    assert _codes([row]) == ["unreadable_gzip"] and row["record_no"] is None

    # pyarrow reports a garbled page as an OSError too; it is corruption, not storage.
    path = tmp_path / "garbled.parquet"
    pq.write_table(pa.table({"text": [f"row {i} " * 30 for i in range(6000)]}), path, row_group_size=1000)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 4000] = os.urandom(4000)
    path.write_bytes(bytes(raw))
    got = list(read_split(Split(str(path), "parquet"), LIMITS))
    assert _codes(got[-1:]) == ["unreadable_parquet"] and got[-1]["record_no"] is None
    assert 0 < len(got) - 1 < 6000 and {r["kind"] for r in got[:-1]} == {"doc"}


# --- through Spark: a truncated gzip and a truncated Parquet file, then repaired ------------------

def _state(lake_dir: str) -> dict[str, list[dict]]:
    return {t: lake.read_arrow(lake_dir, t).to_pylist() for t in ("docs_raw", "quarantine", "ingest_log")}


def test_truncated_files_are_incomplete_and_their_repair_adds_exactly_the_rest(spark, lake_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    lines = _lines(500)
    lines[3] = b'{"text": '  # a bad record in the prefix: quarantined once, not again on repair
    lines[450] = b"[1]"  # one after the cut: quarantined by the repaired read
    full_gz = gzip.compress(b"\n".join(lines) + b"\n")
    half = full_gz[: len(full_gz) // 2]
    (src / "a.jsonl.gz").write_bytes(half)
    prefix = zlib.decompressobj(wbits=31).decompress(half).count(b"\n")
    assert 10 < prefix < 450
    table = pa.table({"text": [f"parquet row {i}" for i in range(50)]})
    pq.write_table(table, tmp_path / "b.parquet")
    full_pq = (tmp_path / "b.parquet").read_bytes()
    (src / "b.parquet").write_bytes(full_pq[:-12])  # footer cut: nothing readable

    first = ingest(spark, lake_dir, [str(src)], source="web")
    assert (first.records, first.docs, first.quarantined) == (prefix + 1 + 1, prefix - 1, 1 + 1 + 1)
    assert first.incomplete_files == 2 and first.resumed_files == 0 and first.skipped_records == 0
    log = {Path(r["path"]).name: r for r in _state(lake_dir)["ingest_log"]}
    assert (log["a.jsonl.gz"]["complete"], log["a.jsonl.gz"]["records_read"]) == (False, prefix)
    assert (log["b.parquet"]["complete"], log["b.parquet"]["records_read"]) == (False, 0)

    # The same broken bytes again: skipped, nothing written.
    versions = {t: lake.table_version(lake_dir, t) for t in ("docs_raw", "quarantine", "ingest_log")}
    again = ingest(spark, lake_dir, [str(src)], source="web")
    assert (again.records, again.skipped_files, again.tables) == (0, 2, {})
    assert {t: lake.table_version(lake_dir, t) for t in versions} == versions

    # Repaired: the complete files at the same paths add exactly what was missing.
    (src / "a.jsonl.gz").write_bytes(full_gz)
    (src / "b.parquet").write_bytes(full_pq)
    repaired = ingest(spark, lake_dir, [str(src)], source="web")
    assert repaired.resumed_files == 2 and repaired.incomplete_files == 0
    assert repaired.skipped_records == prefix  # the good and the bad records of the prefix
    assert (repaired.records, repaired.docs, repaired.quarantined) == (500 - prefix + 50, 500 - prefix - 1 + 50, 1)
    assert repaired.records == repaired.docs + repaired.quarantined

    state = _state(lake_dir)
    docs = sorted((Path(r["source_file"]).name, r["record_no"], r["text"]) for r in state["docs_raw"])
    expected_a = [("a.jsonl.gz", i + 1, json.loads(x)["text"]) for i, x in enumerate(lines) if i not in (3, 450)]
    expected_b = [("b.parquet", i + 1, f"parquet row {i}") for i in range(50)]
    assert docs == sorted(expected_a + expected_b)  # every record exactly once
    assert len({r["doc_id"] for r in state["docs_raw"]}) == len(docs)
    bad = sorted(((Path(r["source_file"]).name, r["record_no"], r["reason"].split(":")[0])
                  for r in state["quarantine"]), key=str)
    assert bad == sorted([("a.jsonl.gz", 4, "invalid_json"), ("a.jsonl.gz", 451, "not_an_object"),
                          ("a.jsonl.gz", None, "unreadable_gzip"), ("b.parquet", None, "unreadable_parquet")],
                         key=str)
    entries = sorted((Path(r["path"]).name, r["complete"], r["records_read"], r["records"])
                     for r in state["ingest_log"])
    assert entries == [("a.jsonl.gz", False, prefix, prefix + 1), ("a.jsonl.gz", True, 500, 500 - prefix),
                       ("b.parquet", False, 0, 1), ("b.parquet", True, 50, 50)]
    # Reconciled across the attempts: every row in the lake is accounted for by ingest_log.
    assert sum(e[3] for e in entries) == len(state["docs_raw"]) + len(state["quarantine"])


# --- through Spark with retries: an I/O error on the second split of a file ------------------------

_DRIVER = r"""
import dataclasses, json, os, shutil, sys
from data_engine import lake
from data_engine.ingest.config import IngestConfig
from data_engine.errors import InputError
from data_engine.ingest.run import ingest
from data_engine.spark import get_spark

lake_dir, source, out, split_bytes, *plans = sys.argv[1:]
spark = get_spark("sailyard-faults", conf={
    "spark.master": "local[2,4]",  # 2 threads, a task may fail 3 times (local[2] never retries)
    "spark.python.daemon.module": "faulty_storage",
    "spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2"})
steps = []
for plan in plans:
    shutil.copy(plan, os.environ["SAILYARD_FAULT_PLAN"])  # the workers re-read it at every open
    state = json.load(open(plan))["state"]
    step = {}
    try:
        step["result"] = dataclasses.asdict(ingest(spark, lake_dir, [source],
                                                   cfg=IngestConfig(split_bytes=int(split_bytes))))
    except InputError as exc:
        step["error"] = str(exc)
    step["faults"] = [json.load(open(os.path.join(state, f))) for f in sorted(os.listdir(state))]
    step["lake"] = {t: lake.read_arrow(lake_dir, t).to_pylist() if lake.exists(lake_dir, t) else None
                    for t in ("docs_raw", "quarantine", "ingest_log")}
    steps.append(step)
json.dump(steps, open(out, "w"))
"""


def test_io_error_on_the_second_split_is_retried_never_quarantined(tmp_path: Path) -> None:
    split_bytes = 64 * 1024  # many 8 KiB buffer fills per split: split 1 never reads this far
    lines = _lines(3200)
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert path.stat().st_size > 3 * split_bytes
    fault_at = split_bytes + split_bytes // 2  # inside the second split
    # Three steps in one Spark session: storage always failing there, failing once, healthy.
    plans = [str(_plan(tmp_path, path, fault_at, times, name=f"step{i}"))
             for i, times in enumerate((-1, 1, 0))]
    out = tmp_path / "steps.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
               SAILYARD_FAULT_PLAN=str(tmp_path / "plan.json"), SAILYARD_DRIVER_MEMORY="1g")
    proc = subprocess.run([sys.executable, "-c", _DRIVER, str(tmp_path / "lake"), str(path), str(out),
                           str(split_bytes), *plans], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    always, once, healthy = json.loads(out.read_text())

    # Every attempt failed: the job fails naming the file, and nothing at all is committed.
    assert "I/O error reading" in always["error"] and "big.jsonl" in always["error"]
    assert "Errno 5" in always["error"] and "after 4 attempts" in always["error"]
    assert len(always["faults"]) == 4  # Spark ran the task 4 times (local[2,4])
    assert all(split_bytes <= f["split_start"] < 2 * split_bytes for f in always["faults"])
    assert always["lake"] == {"docs_raw": None, "quarantine": None, "ingest_log": None}

    # One transient failure on the second split: Spark's retry reads it, every record once.
    assert "error" not in once, once.get("error")
    assert len(once["faults"]) == 1 and split_bytes <= once["faults"][0]["split_start"] < 2 * split_bytes
    result = once["result"]
    assert (result["records"], result["docs"], result["quarantined"]) == (3200, 3200, 0)
    assert sorted((r["record_no"], r["text"]) for r in once["lake"]["docs_raw"]) == [
        (i + 1, json.loads(x)["text"]) for i, x in enumerate(lines)]
    assert once["lake"]["quarantine"] == []  # no unreadable_file row, no row at all
    (entry,) = once["lake"]["ingest_log"]
    assert (entry["complete"], entry["records_read"], entry["records"]) == (True, 3200, 3200)

    # Healthy storage, same bytes: already ingested, nothing added.
    assert healthy["faults"] == []
    assert healthy["result"]["records"] == 0 and healthy["result"]["skipped_files"] == 1
    assert len(healthy["lake"]["docs_raw"]) == 3200
