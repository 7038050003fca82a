"""A run SIGKILLed right after a complete checkpoint and started again with the same command repeats the
uninterrupted run: every later train and validation loss, as MLflow recorded them.

Four real runs of `python -m trainer.pretrain`, two at a time (the CPU cost is mostly start-up): an
uninterrupted one and one killed after the checkpoint of step 4, then a second uninterrupted one and the
killed one's restart. The learning rate is high enough that the validation loss moves by far more than
the tolerance from one validation to the next: a validation taken one step late (what Lightning's
counters did before `trainer.validation`) fails the comparison, not only the count.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_pretrain import REPO, config  # tests/trainer is on sys.path (no packages)

from trainer.checkpoints import UNFINISHED

MAX_STEPS = 6
EVERY = 2  # validate and checkpoint every 2 steps
KILL_AFTER = 4  # killed once the checkpoint written after step 4 is complete
TOLERANCE = 1e-4  # CPU fp32
METRICS = ("reduced_train_loss", "val_loss")


def _config(name: str, lake: Path, tmp: Path) -> dict[str, Any]:
    return config(name, lake, tmp / name, stage="stage1", max_steps=MAX_STEPS, val_check_interval=EVERY,
                  limit_val_batches=2, keep_checkpoints=0,  # only *-last: the folder to watch
                  schedule={"lr": 1.0e-2, "min_lr": 1.0e-3})


def _start(tmp: Path, cfg: dict[str, Any], attempt: str) -> subprocess.Popen:
    path = tmp / f"{cfg['name']}.yaml"
    path.write_text(yaml.safe_dump({"train": cfg}), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SAILYARD_PARENT_RUN_ID")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    with open(tmp / f"{cfg['name']}.{attempt}.stderr", "wb") as stderr:
        return subprocess.Popen([sys.executable, "-m", "trainer.pretrain", "--config", str(path)], cwd=tmp, env=env,
                                stdout=subprocess.PIPE, stderr=stderr, start_new_session=True)


def _summary(proc: subprocess.Popen, tmp: Path, name: str, attempt: str) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=900)
    err = (tmp / f"{name}.{attempt}.stderr").read_text(encoding="utf-8", errors="replace")
    assert proc.returncode == 0, err[-4000:]
    return json.loads(out.decode().strip().splitlines()[-1])


def _complete_checkpoint(ckpts: Path, step: int) -> Path | None:
    """The `*-last` checkpoint written after `step` once NeMo has finished it (its marker is gone)."""
    # NeMo names a checkpoint by the step index of its last batch: step=3 is after 4 steps.
    for path in ckpts.glob(f"*--step={step - 1}-*-last") if ckpts.is_dir() else []:
        marker = path.with_name(path.name + UNFINISHED)
        if path.is_dir() and (path / "weights").is_dir() and (path / "context").is_dir() and not marker.exists():
            return path
    return None


def _kill_after_checkpoint(proc: subprocess.Popen, ckpts: Path) -> Path:
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None:
        done = _complete_checkpoint(ckpts, KILL_AFTER)
        if done is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            return done
        time.sleep(0.02)
    pytest.fail(f"the run ended (rc {proc.poll()}) before its step-{KILL_AFTER} checkpoint was seen complete")


def _histories(work: Path) -> list[dict[str, dict[int, float]]]:
    """Per MLflow run of `work`, oldest first: metric → {step: value} (a step logged twice must agree)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              order_by=["attributes.start_time ASC"])
    out = []
    for run in runs:
        per_metric: dict[str, dict[int, float]] = {}
        for metric in METRICS:
            values: dict[int, float] = {}
            for m in client.get_metric_history(run.info.run_id, metric):
                assert values.setdefault(m.step, m.value) == m.value, f"{metric} logged twice at {m.step}, differently"
                values[m.step] = m.value
            per_metric[metric] = values
        out.append(per_metric)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, shard_lake: Path) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("exact")
    full, again, killed = (_config(name, shard_lake, tmp) for name in ("full", "again", "killed"))
    first, victim = _start(tmp, full, "1"), _start(tmp, killed, "1")
    killed_at = _kill_after_checkpoint(victim, tmp / "killed" / "checkpoints" / "killed")
    second, restart = _start(tmp, again, "1"), _start(tmp, killed, "2")  # the same command again
    summaries = {"full": _summary(first, tmp, "full", "1"), "again": _summary(second, tmp, "again", "1"),
                 "restart": _summary(restart, tmp, "killed", "2")}
    return {"killed_at": killed_at, "summaries": summaries,
            "full": _histories(tmp / "full"), "again": _histories(tmp / "again"), "killed": _histories(tmp / "killed")}


def _max_diff(a: dict[int, float], b: dict[int, float]) -> float:
    assert sorted(a) == sorted(b), f"logged at other steps: {sorted(a)} vs {sorted(b)}"
    return max((abs(a[s] - b[s]) for s in a), default=0.0)


def test_two_identical_runs_give_identical_losses(runs: dict[str, Any]) -> None:
    (full,), (again,) = runs["full"], runs["again"]
    assert sorted(full["reduced_train_loss"]) == list(range(MAX_STEPS))
    assert sorted(full["val_loss"]) == [s - 1 for s in range(EVERY, MAX_STEPS + 1, EVERY)]  # logged at step - 1
    for metric in METRICS:
        assert _max_diff(full[metric], again[metric]) == 0.0, metric


def test_the_restart_resumes_from_the_checkpoint_it_was_killed_after(runs: dict[str, Any]) -> None:
    summary = runs["summaries"]["restart"]
    assert summary["status"] == "ok" and summary["steps"] == MAX_STEPS
    assert summary["resumed_from"] == str(runs["killed_at"])
    assert len(runs["killed"]) == 2  # the killed start and the restart, each its own MLflow run


def test_every_loss_after_the_resume_equals_the_uninterrupted_runs(runs: dict[str, Any]) -> None:
    (full,), (before, after) = runs["full"], runs["killed"]
    # The restart first validates what the killed run had not (the validation after step 4, logged at
    # step 3), then trains steps 5 and 6 (logged at 4 and 5), validating after step 6.
    expected = {"reduced_train_loss": {s: v for s, v in full["reduced_train_loss"].items() if s >= KILL_AFTER},
                "val_loss": {s: v for s, v in full["val_loss"].items() if s >= KILL_AFTER - 1}}
    diffs = {metric: _max_diff(after[metric], expected[metric]) for metric in METRICS}
    print(f"max |resumed - uninterrupted|: {diffs}")
    assert all(d <= TOLERANCE for d in diffs.values()), diffs
    # What the killed start logged before the kill is the uninterrupted run's too, and the two starts
    # together validated everywhere the uninterrupted run did.
    for metric in METRICS:
        assert _max_diff(before[metric], {s: full[metric][s] for s in before[metric]}) == 0.0, metric
    assert sorted(set(before["val_loss"]) | set(after["val_loss"])) == sorted(full["val_loss"])


def _rng_states(checkpoint: str) -> dict[str, Any]:
    import torch

    common = torch.load(Path(checkpoint) / "weights" / "common.pt", map_location="cpu")  # weights_only, as NeMo
    return common["callbacks"]["ExactResume"]["rng"]


def test_the_restart_carries_the_rng_states_on(runs: dict[str, Any]) -> None:
    # Every validation's DataLoader iterator draws a seed from torch's generator: without the states from
    # the checkpoint the restart, which validated fewer times, would end in another state.
    import torch

    full, resumed = (_rng_states(runs["summaries"][name]["checkpoint"]) for name in ("full", "restart"))
    assert sorted(full) == sorted(resumed)
    assert torch.equal(full["torch"], resumed["torch"])
    assert full["python"] == resumed["python"] and full["numpy"] == resumed["numpy"]
    assert full["megatron"].keys() == resumed["megatron"].keys()
    assert all(torch.equal(full["megatron"][k], resumed["megatron"][k]) for k in full["megatron"])
