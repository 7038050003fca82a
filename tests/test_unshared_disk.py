"""A standalone cluster whose executors do not share the driver's disk: the job must fail, not
commit what the driver happens to see.

The Worker runs with `--private-dir` over one lake (data_engine.cluster): its executors read that
folder as it was, but what they write there only they see, as on a cluster with node-local disks
or a lake path that means HDFS on the executors. The same cluster ingests into a second lake
outside that folder, where the job must commit: the failure is about visibility, not the cluster.
Both jobs are submitted at once (one core each) to keep the wall time near one job's.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from job_helpers import ROOT, job_env, spark_submit

from data_engine import cluster, lake

# Short-lived JVMs (daemons, drivers, executors): the C1 compiler alone starts them much faster.
FAST_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
VISIBILITY_PHRASE = "the driver cannot see the executors' output"

DOCS = [{"text": "สวัสดีครับ นี่คือเอกสารทดสอบภาษาไทย", "lang": "th", "url": "https://a.example/th"},
        {"text": "Hello, this is an English test document.", "lang": "en", "url": "https://a.example/en"},
        {"text": "A second English document, different text.", "lang": "en"},
        {"text": "Xin chào, đây là một tài liệu tiếng Việt.", "lang": "vi"}]
BAD_LINES = ['{"text": "cut short']  # invalid JSON: one quarantine row
# docs_raw as it stood before the job (version 0), written without Spark.
OLD_DOCS = [("old-1", "tha", "old", "b0", None, None, "ข้อความเก่า", "{}", "file:///old.jsonl", 1),
            ("old-2", "eng", "old", "b0", None, None, "old text", "{}", "file:///old.jsonl", 2)]


def _write_old_docs_raw(lake_dir: Path) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake

    names = ("doc_id", "lang", "source", "batch_id", "url", "id", "text", "meta", "source_file", "record_no")
    schema = pa.schema([(n, pa.int64() if n == "record_no" else pa.string()) for n in names])
    table = pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in OLD_DOCS], schema=schema)
    write_deltalake(str(lake_dir / "docs_raw"), table, partition_by=["lang"], mode="error")


def _data_files(table_dir: Path) -> set[str]:
    return {str(p.relative_to(table_dir)) for p in table_dir.rglob("*.parquet")
            if not any(part.startswith(("_", ".")) for part in p.relative_to(table_dir).parts)}


def _submit(master: str, input_file: Path, lake_dir: Path) -> subprocess.Popen:
    cmd = [spark_submit(), "--master", master, "--conf", "spark.cores.max=1",
           "--conf", "spark.executor.memory=1g", "--conf", "spark.sql.shuffle.partitions=2",
           "--conf", "spark.ui.enabled=false",
           "jobs/ingest.py", "--input", str(input_file), "--lake", str(lake_dir), "--source", "t"]
    return subprocess.Popen(cmd, cwd=ROOT, env=dict(job_env(), JAVA_TOOL_OPTIONS=FAST_JVM),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _summary(out: str) -> dict:
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines, "the job printed nothing on stdout"
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One cluster with a private lake; ingest into it and into a shared lake, both at once."""
    reason = cluster.private_mounts_unsupported()
    if reason is not None:
        pytest.skip(f"needs a private mount namespace for the Worker (root, unshare, overlayfs): {reason}")
    root = tmp_path_factory.mktemp("unshared")
    private_lake, shared_lake = root / "private" / "lake", root / "shared" / "lake"
    private_lake.mkdir(parents=True)
    _write_old_docs_raw(private_lake)  # before the Worker starts: the executors read it as it was
    input_file = root / "input" / "docs.jsonl"
    input_file.parent.mkdir()
    input_file.write_text("\n".join([json.dumps(d, ensure_ascii=False) for d in DOCS] + BAD_LINES) + "\n",
                          encoding="utf-8")
    before = _data_files(private_lake / "docs_raw")
    started = time.time()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAVA_TOOL_OPTIONS", FAST_JVM)  # inherited by the Worker's executors too
        info = cluster.up(root / "cluster", cores=2, memory="2g", private_dir=private_lake)
    procs: dict[str, subprocess.Popen] = {}
    try:
        up_s = time.time() - started
        procs = {"private": _submit(info.master_url, input_file, private_lake),
                 "shared": _submit(info.master_url, input_file, shared_lake)}
        done = {name: (p, *p.communicate(timeout=600)) for name, p in procs.items()}
        print(f"\ncluster up {up_s:.0f} s, both jobs {time.time() - started - up_s:.0f} s")
        yield {"info": info, "private_lake": private_lake, "shared_lake": shared_lake,
               "before": before, **done}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        cluster.down(root / "cluster")


def test_the_worker_runs_in_its_own_mount_namespace(runs):
    pid = runs["info"].worker_pid
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "java"
    assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    mounts = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    assert any(f" {runs['private_lake']} " in m and " overlay " in m for m in mounts)


def test_a_lake_the_driver_cannot_see_fails_and_commits_nothing(runs):
    proc, out, err = runs["private"]
    summary = _summary(out)
    assert proc.returncode != 0, out[-3000:] + err[-3000:]
    assert summary["status"] == "error" and summary["job"] == "ingest"
    assert summary["error_type"] == "LakeVisibilityError", summary
    assert "\n" not in summary["error"] and VISIBILITY_PHRASE in summary["error"], summary["error"]
    errors = [ln for ln in (out + err).splitlines() if ln.startswith("sailyard ingest: error:")]
    assert len(errors) == 1 and VISIBILITY_PHRASE in errors[0] and "Traceback" not in out + err
    private_lake = runs["private_lake"]
    # The existing table is as it was: same version, same rows, no new data file on the driver's disk.
    assert lake.table_version(private_lake, "docs_raw") == 0
    assert sorted(lake.read_arrow(private_lake, "docs_raw").column("doc_id").to_pylist()) == ["old-1", "old-2"]
    assert _data_files(private_lake / "docs_raw") == runs["before"]
    # The tables this job would have created were not created.
    for name in ("quarantine", "ingest_log"):
        assert not (private_lake / name / "_delta_log").exists(), name
        assert lake.table_version(private_lake, name) is None


def test_the_executors_did_write_the_rows_where_only_they_see_them(runs):
    """The failure is the visibility gap: the Worker's tmpfs (read through /proc/<pid>/root, which
    resolves paths in its mount namespace) holds the docs the executors staged for docs_raw."""
    import pyarrow.parquet as pq

    written = cluster.private_writes(runs["info"])
    staged = list((written / "docs_raw" / "_staging").rglob("part-*.parquet"))
    assert staged, f"the executors left no files in their view of the lake ({written})"
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in staged) == len(DOCS)
    assert not list((runs["private_lake"] / "docs_raw").rglob("_staging/**/*.parquet"))


def test_the_same_cluster_commits_to_a_lake_every_node_sees(runs):
    proc, out, err = runs["shared"]
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    summary = _summary(out)
    assert summary["status"] == "ok"
    assert summary["tables"] == {"docs_raw": 0, "quarantine": 0, "ingest_log": 0}
    assert (summary["kept"], summary["quarantined"]) == (len(DOCS), len(BAD_LINES))
    shared_lake = runs["shared_lake"]
    docs = lake.read_arrow(shared_lake, "docs_raw")
    assert sorted(docs.column("text").to_pylist()) == sorted(d["text"] for d in DOCS)
    assert sorted(set(docs.column("lang").to_pylist())) == ["eng", "tha", "vie"]
    assert lake.read_arrow(shared_lake, "quarantine").num_rows == len(BAD_LINES)


def test_down_stops_the_private_worker_and_its_namespace(runs):
    info = runs["info"]
    assert cluster.down(info.dir)
    deadline = time.time() + 20
    while time.time() < deadline and Path(f"/proc/{info.worker_pid}").exists():
        time.sleep(0.2)
    assert not Path(f"/proc/{info.worker_pid}").exists()
    assert not Path(info.dir, "cluster.json").exists()
    assert not list((runs["private_lake"] / "docs_raw" / "_staging").rglob("*.parquet"))
