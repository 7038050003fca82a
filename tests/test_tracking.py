"""The MLflow helper against a real SQLite store: nesting, params, lineage tags, failure status."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from data_engine import tracking


def test_parent_and_child_runs_with_lineage(tmp_path, monkeypatch):
    with tracking.start_run("pipeline", work_dir=tmp_path, kind="pipeline",
                            params={"dedup": {"stages": ["exact"]}, "n": 3}) as parent:
        monkeypatch.setenv(tracking.PARENT_ENV, parent.run_id)
        with tracking.start_run("ingest", work_dir=tmp_path) as child:
            child.table_read("docs_raw", tmp_path / "lake" / "docs_raw", 0)
            child.table_written("docs_dedup", tmp_path / "lake" / "docs_dedup", 7)
            child.table_written("docs_clean", "s3a://bucket/lake/docs_clean", 2)  # a remote lake's URI
            child.log_metrics({"in": 10, "kept.tha": 4})
    client = MlflowClient(tracking.tracking_uri(tmp_path))
    p, c = client.get_run(parent.run_id), client.get_run(child.run_id)
    assert c.data.tags["mlflow.parentRunId"] == parent.run_id
    assert p.data.params == {"dedup.stages": '["exact"]', "n": "3"}
    assert c.data.tags["table.read.docs_raw"].endswith("lake/docs_raw@v0")  # version 0 is recorded
    assert c.data.tags["table.written.docs_dedup"].endswith("@v7")
    assert c.data.tags["table.written.docs_clean"] == "s3a://bucket/lake/docs_clean@v2"
    assert {k: v for k, v in c.data.metrics.items() if k != "seconds"} == {"in": 10.0, "kept.tha": 4.0}
    assert 0 <= c.data.metrics["seconds"] <= p.data.metrics["seconds"]
    assert p.info.status == c.info.status == "FINISHED"
    assert c.info.artifact_uri.startswith((tmp_path / "mlflow" / "artifacts").resolve().as_uri())


def test_a_failing_block_marks_the_run_failed(tmp_path):
    with pytest.raises(RuntimeError), tracking.start_run("dedup", work_dir=tmp_path) as run:
        raise RuntimeError("boom")
    assert MlflowClient(tracking.tracking_uri(tmp_path)).get_run(run.run_id).info.status == "FAILED"


def test_tracking_uri_env_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/other.db")
    assert tracking.tracking_uri(tmp_path / "work") == f"sqlite:///{tmp_path}/other.db"
