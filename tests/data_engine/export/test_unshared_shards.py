"""Shard parts are written by the executors straight into the shard folder, so that folder must be
one the driver sees: on a cluster whose executors write it where only they see it (the Worker's
`--private-dir`, data_engine.cluster), the export fails before its commit and changes nothing; the
same cluster exports into a folder every node shares. Both jobs are submitted at once (one core each).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from job_helpers import ROOT, job_env, spark_submit

from data_engine import cluster, lake

FAST_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
ROWS = [(f"tha-{i:02d}", "tha", f"ภาษาไทยเอกสารที่ {i} " * (1 + i % 4)) for i in range(12)] + \
       [(f"vie-{i:02d}", "vie", f"Văn bản số {i} " * (1 + i % 5)) for i in range(15)]


def _write_docs(lake_dir: Path) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake

    table = pa.Table.from_pylist([dict(zip(("doc_id", "lang", "text"), r, strict=True)) for r in ROWS])
    write_deltalake(str(lake_dir / "docs_dedup"), table, partition_by=["lang"], mode="error")


def _submit(master: str, lake_dir: Path, out: Path) -> subprocess.Popen:
    cmd = [spark_submit(), "--master", master, "--conf", "spark.cores.max=1",
           "--conf", "spark.executor.memory=1g", "--conf", "spark.sql.shuffle.partitions=2",
           "--conf", "spark.ui.enabled=false", "jobs/export_shards.py", "--lake", str(lake_dir),
           "--out", str(out), "--stage", "stage1", "--part-bytes", "256"]
    return subprocess.Popen(cmd, cwd=ROOT, env=dict(job_env(), JAVA_TOOL_OPTIONS=FAST_JVM),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _summary(out: str) -> dict:
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines, "the job printed nothing on stdout"
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    reason = cluster.private_mounts_unsupported()
    if reason is not None:
        pytest.skip(f"needs a private mount namespace for the Worker (root, unshare, overlayfs): {reason}")
    root = tmp_path_factory.mktemp("unshared-shards")
    private_out, shared_out = root / "private" / "shards", root / "shared" / "shards"
    private_out.mkdir(parents=True)
    lakes = {"private": root / "lake-private", "shared": root / "lake-shared"}
    for lake_dir in lakes.values():
        _write_docs(lake_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAVA_TOOL_OPTIONS", FAST_JVM)
        info = cluster.up(root / "cluster", cores=2, memory="2g", private_dir=private_out)
    procs: dict[str, subprocess.Popen] = {}
    try:
        started = time.time()
        procs = {"private": _submit(info.master_url, lakes["private"], private_out),
                 "shared": _submit(info.master_url, lakes["shared"], shared_out)}
        done = {name: (p, *p.communicate(timeout=600)) for name, p in procs.items()}
        print(f"\nboth exports {time.time() - started:.0f} s")
        yield {"info": info, "lakes": lakes, "private_out": private_out, "shared_out": shared_out, **done}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        cluster.down(root / "cluster")


def test_a_shard_folder_the_driver_cannot_see_fails_and_commits_nothing(runs):
    proc, out, err = runs["private"]
    assert proc.returncode != 0, out[-3000:] + err[-3000:]
    summary = _summary(out)
    assert summary["status"] == "error" and summary["error_type"] == "LakeVisibilityError", summary
    assert "the driver cannot see the executors' output" in summary["error"] and "nothing was committed" in \
        summary["error"]
    assert not lake.exists(str(runs["lakes"]["private"]), "shard_manifest")
    # The driver's view of the folder holds no part and no manifest.json; what the executors wrote
    # (every part) lies where only they see it.
    stage = runs["private_out"] / "stage1"
    assert not list(runs["private_out"].rglob("*_text_document_*")) and not (stage / "manifest.json").exists()
    written = cluster.private_writes(runs["info"])
    assert list(written.rglob("_tmp-*/parts/tha-*.bin")) and list(written.rglob("_tmp-*/parts/vie-*.idx"))


def test_the_same_cluster_writes_parts_into_a_shared_folder(runs):
    proc, out, err = runs["shared"]
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    summary = _summary(out)
    assert summary["status"] == "ok" and summary["tables"] == {"shard_manifest": 0}
    rows = lake.read_arrow(str(runs["lakes"]["shared"]), "shard_manifest").to_pylist()
    assert {r["lang"] for r in rows} == {"tha", "vie"} and len(rows) == sum(
        len(s["parts"]) for s in summary["shards"].values()) > 2
    for r in rows:
        assert Path(r["prefix"] + ".bin").stat().st_size == r["bytes"] and Path(r["prefix"] + ".idx").is_file()
