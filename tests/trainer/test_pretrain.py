"""Real NeMo runs on the CPU: stage 1, and stage 2 restored from it (a run folder: its newest *-last).

Each run is `python -m trainer.pretrain` in a subprocess, as a launcher would start it; the model
is the 2-layer Qwen2 with the full 151,936-row vocabulary, on 64-token samples.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def launch(tmp: Path, name: str, config: dict[str, Any], *args: str) -> tuple[dict[str, Any], str]:
    """Run the trainer; return its summary (the only line on stdout) and its stderr."""
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"train": config}), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SAILYARD_PARENT_RUN_ID")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "trainer.pretrain", "--config", str(path), *args],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, f"stdout should hold only the summary, got: {proc.stdout[-2000:]}"
    return json.loads(lines[0]), proc.stderr


def config(name: str, lake: Path, work: Path, *, stage: str, max_steps: int,
           **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": name, "work_dir": str(work), "val_check_interval": max_steps, "limit_val_batches": 1,
        "model": {"seq_length": 64},
        "data": {"lake": str(lake), "stage": stage, "seq_length": 64, "micro_batch_size": 1,
                 "global_batch_size": 2},
        "schedule": {"max_steps": max_steps, "warmup_ratio": 0.25, "hold_ratio": 0.75},
    }
    for key, value in overrides.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, shard_lake: Path) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("train")
    return {"tmp": tmp, "work": tmp / "work", "lake": shard_lake}


@pytest.fixture(scope="module")
def stage1(runs: dict[str, Any]) -> dict[str, Any]:
    cfg = config("s1", runs["lake"], runs["work"], stage="stage1", max_steps=4)
    summary, _ = launch(runs["tmp"], "s1", cfg)
    return summary


@pytest.fixture(scope="module")
def stage2_config(runs: dict[str, Any]) -> dict[str, Any]:
    return config("s2", runs["lake"], runs["work"], stage="stage2", max_steps=3,
                  restore_from=str(runs["work"] / "checkpoints" / "s1"),  # the run folder: newest *-last
                  data={"weights": {"ind": 1, "tha": 3}},
                  schedule={"lr": 1.0e-5, "min_lr": 1.0e-6, "warmup_ratio": 0.0, "hold_ratio": 0.34})


@pytest.fixture(scope="module")
def stage2(runs: dict[str, Any], stage1: dict[str, Any],
           stage2_config: dict[str, Any]) -> tuple[dict[str, Any], str]:
    return launch(runs["tmp"], "s2", stage2_config)


def mlflow_run(work: Path, run_id: str) -> tuple[Any, Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow' / 'mlflow.db'}")
    return client, client.get_run(run_id)


def test_stage1_trains_checkpoints_and_logs_to_mlflow(runs: dict[str, Any], stage1: dict[str, Any]) -> None:
    work, lake = runs["work"], runs["lake"]
    assert stage1["job"] == "train" and stage1["status"] == "ok"
    assert stage1["steps"] == 4
    assert math.isfinite(stage1["final_train_loss"])
    assert set(stage1["blend"]) == {"ind", "vie"}
    assert stage1["tables"] == {} and stage1["tables_read"] == {"shard_manifest": 0}
    assert stage1["restored_from"] is None and stage1["resumed_from"] is None
    checkpoint = Path(stage1["checkpoint"])
    assert checkpoint.parent == work / "checkpoints" / "s1"
    assert checkpoint.name.endswith("-last")
    assert (checkpoint / "weights").is_dir() and (checkpoint / "context").is_dir()

    client, run = mlflow_run(work, stage1["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "train"
    losses = client.get_metric_history(run.info.run_id, "reduced_train_loss")
    assert [m.step for m in losses] == [0, 1, 2, 3]
    assert losses[-1].value == pytest.approx(stage1["final_train_loss"])
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 1
    assert run.data.tags["table.read.shard_manifest"] == f"{(lake / 'shard_manifest').resolve()}@v0"
    assert run.data.tags["shard_manifest_digest"] == stage1["shard_manifest_digest"]
    assert run.data.tags["checkpoint"] == stage1["checkpoint"]
    assert run.data.tags["train.name"] == "s1"
    assert run.data.params["schedule.max_steps"] == "4"
    assert run.data.params["data.stage"] == "stage1"
    config_yaml = client.download_artifacts(run.info.run_id, "config/train.yaml", str(runs["tmp"]))
    assert yaml.safe_load(Path(config_yaml).read_text(encoding="utf-8"))["train"]["name"] == "s1"


def test_stage2_restores_stage1_weights_with_a_fresh_schedule(
        runs: dict[str, Any], stage1: dict[str, Any], stage2: tuple[dict[str, Any], str]) -> None:
    summary, stderr = stage2
    assert summary["status"] == "ok"
    assert summary["restored_from"] == stage1["checkpoint"]
    assert summary["resumed_from"] is None
    assert summary["steps"] == 3
    assert summary["blend"] == {"ind": 0.25, "tha": 0.75}
    assert Path(summary["checkpoint"]).parent == runs["work"] / "checkpoints" / "s2"
    assert f"Finished restoring from RestoreConfig(path='{stage1['checkpoint']}'" in stderr

    client, run = mlflow_run(runs["work"], summary["mlflow_run_id"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "reduced_train_loss")] == [0, 1, 2]
    lrs = [m.value for m in client.get_metric_history(run.info.run_id, "lr")]
    assert lrs[0] == pytest.approx(1e-5) and lrs[-1] < lrs[0]  # a new schedule, annealing
    assert run.data.tags["restore_from"] == stage1["checkpoint"]
