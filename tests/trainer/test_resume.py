"""A training run SIGKILLed while NeMo writes a checkpoint starts again with the same command.

NeMo alone refuses such a run ("Last checkpoint is unfinished … remove the checkpoint manually");
`trainer.checkpoints.repair` sets the half-written checkpoint aside first. The kill is real: the
test watches for the marker NeMo writes beside a checkpoint while saving it and kills the process
tree at that moment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_pretrain import REPO, config, launch  # tests/trainer is on sys.path (no packages)

from data_engine.errors import ConfigError
from trainer.checkpoints import ASIDE, RUN_RECORD, UNFINISHED, check_identity, repair


def _start(tmp: Path, name: str, cfg: dict) -> subprocess.Popen:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"train": cfg}), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SAILYARD_PARENT_RUN_ID")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-m", "trainer.pretrain", "--config", str(path)], cwd=tmp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)


def test_repair_sets_aside_unfinished_and_promotes_the_newest_complete(tmp_path: Path):
    ckpts = tmp_path / "checkpoints"
    for name in ("r--step=3-consumed_samples=8.0", "r--step=5-consumed_samples=12.0",
                 "r--step=7-consumed_samples=16.0-last"):
        (ckpts / name / "weights").mkdir(parents=True)
    (ckpts / f"r--step=7-consumed_samples=16.0-last{UNFINISHED}").touch()
    done = repair(ckpts)
    assert done.set_aside == ["r--step=7-consumed_samples=16.0-last"]
    assert done.promoted == "r--step=5-consumed_samples=12.0-last"
    assert sorted(p.name for p in ckpts.iterdir()) == [ASIDE, "r--step=3-consumed_samples=8.0",
                                                       "r--step=5-consumed_samples=12.0-last"]
    assert repair(ckpts).set_aside == [] and repair(ckpts).promoted is None  # nothing left to do


def test_a_run_killed_while_saving_restarts_unattended_and_finishes(tmp_path: Path, shard_lake: Path):
    work = tmp_path / "work"
    # Only the newest (`*-last`) checkpoint is kept, as in the tiny config: NeMo alone cannot restart this one.
    cfg = config("kill", shard_lake, work, stage="stage1", max_steps=8, val_check_interval=2,
                 keep_checkpoints=0)
    proc = _start(tmp_path, "kill", cfg)
    ckpts = work / "checkpoints" / "kill"
    killed_at = None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        markers = list(ckpts.glob(f"*step=1*-last{UNFINISHED}")) if ckpts.is_dir() else []
        partial = [m.with_name(m.name[:-len(UNFINISHED)]) for m in markers]
        if any(p.is_dir() and any(p.iterdir()) for p in partial):
            # The first checkpoint (after step 2) is half-written: no complete one exists yet.
            os.killpg(proc.pid, signal.SIGKILL)
            killed_at = markers[0].name
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert killed_at is not None, "the run ended before it was caught saving its checkpoint"
    assert list(ckpts.glob(f"*{UNFINISHED}")), "the kill left no unfinished checkpoint: nothing was tested"
    summary, _ = launch(tmp_path, "kill", cfg)  # the same command again
    assert summary["status"] == "ok" and summary["steps"] == 8
    assert summary["resumed_from"] is None  # nothing complete to resume from: it started over
    assert not list(ckpts.glob(f"*{UNFINISHED}"))
    assert list((ckpts / ASIDE).rglob(f"*{UNFINISHED}"))  # kept as evidence, not deleted
    json.dumps(summary)


def test_identity_is_recorded_then_checked(tmp_path: Path):
    ckpts = tmp_path / "checkpoints"
    first = {"model": {"hidden_size": 64, "num_layers": 2}, "shard_manifest_digest": "a" * 64}
    check_identity(ckpts, first)  # nothing to resume: recorded
    assert json.loads((ckpts / RUN_RECORD).read_text()) == first
    (ckpts / "r--step=3-last").mkdir()
    check_identity(ckpts, first)  # the same run: fine
    with pytest.raises(ConfigError, match=r"model.hidden_size: 64 → 96.*shard_manifest_digest"):
        check_identity(ckpts, {"model": {"hidden_size": 96, "num_layers": 2}, "shard_manifest_digest": "b" * 64})


def test_resuming_a_finished_run_with_another_model_is_refused(tmp_path: Path, shard_lake: Path):
    work = tmp_path / "work"
    cfg = config("same", shard_lake, work, stage="stage1", max_steps=2)
    summary, _ = launch(tmp_path, "same", cfg)
    assert summary["steps"] == 2
    record = json.loads((work / "checkpoints" / "same" / RUN_RECORD).read_text())
    assert record["shard_manifest_digest"] == summary["shard_manifest_digest"]
    other = dict(cfg, model={**cfg["model"], "hidden_size": 96, "ffn_hidden_size": 192})
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump({"train": other}), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SAILYARD_PARENT_RUN_ID")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "trainer.pretrain", "--config", str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    error = json.loads(proc.stdout.strip().splitlines()[-1])["error"]
    assert "model.hidden_size: 64 → 96" in error and "ffn_hidden_size" in error
    # Other data: the manifest digest names it.
    moved = dict(cfg, data={**cfg["data"], "stage": "stage2"})
    path.write_text(yaml.safe_dump({"train": moved}), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "trainer.pretrain", "--config", str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "shard_manifest_digest" in json.loads(proc.stdout.strip().splitlines()[-1])["error"]
