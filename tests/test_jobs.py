"""The job contract from outside: spark-submit, the JSON summary line, exit codes, a real cluster."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from job_helpers import ROOT, job_env, spark_submit

from data_engine import lake, tracking
from data_engine.sample.corpus import build_sample


def submit(args: list[str], *, master: str | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [spark_submit()]
    if master:
        cmd += ["--master", master, "--conf", "spark.sql.shuffle.partitions=4",
                "--conf", "spark.executor.memory=1g"]
    return subprocess.run(cmd + args, cwd=ROOT, env=job_env(), capture_output=True, text=True,
                          timeout=timeout)


def summary_of(proc: subprocess.CompletedProcess) -> dict:
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert lines, f"no stdout; stderr:\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sample")
    build_sample(path, docs_per_lang=4)
    return path


def test_ingest_via_spark_submit_prints_the_summary_and_tracks_lineage(sample_dir, tmp_path):
    lake_dir = tmp_path / "lake"
    proc = submit(["jobs/ingest.py", "--input", str(sample_dir), "--lake", str(lake_dir), "--source", "cc"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = summary_of(proc)
    assert summary["job"] == "ingest" and summary["status"] == "ok"
    assert summary["in"] == summary["kept"] + summary["quarantined"] and summary["quarantined"] == 11
    assert summary["tables"] == {"docs_raw": 0, "quarantine": 0, "ingest_log": 0}
    assert lake.read_arrow(lake_dir, "docs_raw").num_rows == summary["kept"]
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking.tracking_uri(tmp_path)).get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["table.written.docs_raw"] == f"{lake_dir.resolve() / 'docs_raw'}@v0"
    assert run.data.metrics["quarantined"] == 11 and run.data.params["source"] == "cc"


def test_a_failing_job_exits_non_zero_with_one_actionable_line(tmp_path):
    proc = submit(["jobs/dedup.py", "--lake", str(tmp_path / "lake")])
    assert proc.returncode != 0
    # spark-submit merges the Python driver's stderr into its stdout; look at both.
    output = proc.stdout + proc.stderr
    errors = [ln for ln in output.splitlines() if ln.startswith("sailyard dedup: error:")]
    assert len(errors) == 1 and "docs_raw" in errors[0] and "Traceback" not in output
    summary = summary_of(proc)
    assert summary["status"] == "error" and summary["job"] == "dedup"


def test_ingest_and_dedup_on_a_standalone_cluster(sample_dir, tmp_path):
    from data_engine import cluster

    info = cluster.up(tmp_path / "cluster", cores=2, memory="2g")
    try:
        lake_dir = tmp_path / "lake"
        ingest = submit(["jobs/ingest.py", "--input", str(sample_dir), "--lake", str(lake_dir)],
                        master=info.master_url)
        assert ingest.returncode == 0, ingest.stderr[-3000:]
        dedup = submit(["jobs/dedup.py", "--lake", str(lake_dir), "--stages", "exact"], master=info.master_url)
        assert dedup.returncode == 0, dedup.stderr[-3000:]
    finally:
        cluster.down(tmp_path / "cluster")
    i, d = summary_of(ingest), summary_of(dedup)
    assert d["tables_read"] == {"docs_raw": 0} and d["in"] == i["kept"]
    assert d["in"] == d["kept"] + d["dropped"] and d["dropped"] > 0
    assert lake.read_arrow(lake_dir, "docs_dedup").num_rows == d["kept"]
    assert lake.read_arrow(lake_dir, "drops").num_rows == d["dropped"]
    from mlflow.tracking import MlflowClient

    tags = MlflowClient(tracking.tracking_uri(tmp_path)).get_run(d["mlflow_run_id"]).data.tags
    assert tags["table.read.docs_raw"] == f"{lake_dir.resolve() / 'docs_raw'}@v0"
    assert tags["table.written.docs_dedup"] == f"{lake_dir.resolve() / 'docs_dedup'}@v{d['tables']['docs_dedup']}"
    # The executors ran in the Worker's own JVM: its work dir holds this application's folders.
    assert list((tmp_path / "cluster" / "work").glob("app-*"))


def test_quality_jobs_via_spark_submit_train_register_score_and_select(spark, tmp_path):
    """Training and scoring in separate processes: the model reaches scoring through the registry."""
    import math
    import random

    from data_engine.sample.corpus import load_udhr

    rng = random.Random(7)
    paragraphs = [p for s in load_udhr("tha") for p in s]
    positives = tmp_path / "tha.txt"
    positives.write_text("\n".join(p.replace("\n", " ") for p in paragraphs[:40]) + "\n", encoding="utf-8")
    menu = ["หน้าแรก", "เข้าสู่ระบบ", "ตะกร้า", "ลดราคา", "ติดต่อเรา", "Home", "Login", "FAQ", "© 2024"]
    junk = [" | ".join(rng.choice(menu) for _ in range(12)) for _ in range(40)]
    rows = [(f"j{i:02d}", "tha", t) for i, t in enumerate(junk)] + \
        [(f"r{i:02d}", "tha", t) for i, t in enumerate(paragraphs[40:50])]
    lake_dir = tmp_path / "lake"
    schema = "doc_id string, lang string, text string"
    lake.write_table(spark.createDataFrame(rows[:40], schema), str(lake_dir), "docs_clean", mode="error")  # junk
    lake.write_table(spark.createDataFrame(rows, schema), str(lake_dir), "docs_dedup", mode="error")
    train = submit(["jobs/train_quality.py", "--lake", str(lake_dir), "--lang", "th", "--positives", str(positives),
                    "--max-negatives", "30", "--epoch", "25"])
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    t = summary_of(train)
    assert t["status"] == "ok" and t["model"] == "sailyard-quality-tha/1" and t["metrics"]["auc"] >= 0.9
    assert t["tables_read"] == {"docs_clean": 0}
    score = submit(["jobs/score_quality.py", "--lake", str(lake_dir), "--keep-percent", "15"])
    assert score.returncode == 0, score.stdout[-3000:] + score.stderr[-3000:]
    s = summary_of(score)
    assert s["models"] == {"tha": "sailyard-quality-tha/1"} and s["tables_read"] == {"docs_dedup": 0}
    assert s["kept"] == math.ceil(0.15 * len(rows)) and s["in"] == s["kept"] + s["dropped"] == len(rows)
    curated = {r["doc_id"] for r in lake.read_arrow(lake_dir, "docs_curated").to_pylist()}
    assert sum(d.startswith("r") for d in curated) >= len(curated) - 1  # the real paragraphs come first
    unknown = submit(["jobs/train_quality.py", "--lake", str(lake_dir), "--lang", "Thai", "--positives",
                      str(positives)])
    assert unknown.returncode == 2 and "not a language code" in unknown.stdout + unknown.stderr
    bad = submit(["jobs/score_quality.py", "--lake", str(lake_dir), "--keep-percent", "0"])
    assert bad.returncode != 0 and "keep percent" in bad.stdout + bad.stderr


def test_cli_lists_its_commands():
    proc = subprocess.run([str(Path(spark_submit()).parent / "sailyard"), "--help"], capture_output=True,
                          text=True, env=job_env(), timeout=60)
    assert proc.returncode == 0
    for command in ("demo", "ingest", "clean", "dedup", "train-quality", "score-quality", "export-shards", "train",
                    "report", "vacuum", "ui"):
        assert command in proc.stdout


def test_mlflow_ui_serves_on_loopback_only(tmp_path):
    import time
    import urllib.request

    from data_engine.cluster import free_port

    port = free_port()
    sailyard = str(Path(spark_submit()).parent / "sailyard")
    proc = subprocess.Popen([sailyard, "ui", "--work-dir", str(tmp_path), "--port", str(port)],
                            env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline, body = time.time() + 90, b""
        while time.time() < deadline and not body:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    body = resp.read()
            except OSError:
                time.sleep(1)
        assert body.strip() == b"OK"
        listing = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
        local_addresses = {line.split()[3] for line in listing.splitlines() if line.strip()}
        assert local_addresses == {f"127.0.0.1:{port}"}
    finally:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
