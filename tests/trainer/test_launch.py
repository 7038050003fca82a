"""Launching with NeMo-Run: the Slurm and local dry runs, the refusals, and one real local launch.

The dry runs go through NeMo-Run's own dry-run path (its SlurmExecutor writes the sbatch script
it would submit); nothing reaches a network or an `sbatch` binary. The real local launch runs the
trainer as NeMo-Run's LocalExecutor starts it, on a lake without shards, so it fails in a second
the way the trainer does — which shows the job ran our command on our resolved config.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from data_engine.errors import ConfigError
from trainer.config import TrainConfig
from trainer.launch import LaunchArgs, check_committed, host_path, launch_file, read_launch
from trainer.pretrain import main

REPO = Path(__file__).resolve().parents[2]


def slurm_doc(cluster: Path, **slurm: Any) -> dict[str, Any]:
    """A sailor2-1b stage-1 run on two 8-GPU nodes; `cluster` stands for the cluster's file system."""
    return {
        "train": {"preset": "sailor2-1b", "name": "s2-1b", "work_dir": str(cluster / "work"),
                  "data": {"lake": str(cluster / "lake")}, "parallel": {"nodes": 2}},
        "launch": {"executor": "slurm", "env_vars": {"MLFLOW_TRACKING_URI": "http://mlflow.internal:5000"},
                   "slurm": {"account": "sea-llm", "partition": "gpu", "time": "2-00:00:00",
                             "container_image": "nvcr.io/nvidia/nemo:25.09",
                             "container_mounts": [f"{cluster}:{cluster}"], "job_dir": str(cluster / "nemo_run"),
                             **slurm}},
    }


def write(tmp_path: Path, doc: dict[str, Any], name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def dry_run(path: Path, capfd: pytest.CaptureFixture[str], *extra: str) -> tuple[str, dict[str, Any]]:
    assert main(["--config", str(path), "--dry-run", *extra]) == 0
    out = capfd.readouterr().out
    *text, last = out.strip().splitlines()
    return "\n".join(text), json.loads(last)


def printed_config(text: str) -> TrainConfig:
    """The resolved config a dry run prints after its '# Resolved config' line."""
    body = text.split("# Resolved config", 1)[1].split("\n", 1)[1]
    return TrainConfig.from_dict(yaml.safe_load(body)["train"], local_files=False)


def test_slurm_dry_run_prints_the_sbatch_script_and_command(tmp_path: Path,
                                                            capfd: pytest.CaptureFixture[str]) -> None:
    cluster = tmp_path / "cluster"
    text, summary = dry_run(write(tmp_path, slurm_doc(cluster)), capfd)

    for line in ("#SBATCH --account=sea-llm", "#SBATCH --partition=gpu", "#SBATCH --nodes=2",
                 "#SBATCH --gpus-per-node=8", "#SBATCH --time=2-00:00:00", "#SBATCH --job-name=sailyard-s2-1b",
                 "export MLFLOW_TRACKING_URI=http://mlflow.internal:5000"):
        assert line in text.splitlines()
    (srun,) = [line for line in text.splitlines() if line.startswith("srun ")]
    assert "--container-image nvcr.io/nvidia/nemo:25.09" in srun
    assert f"--container-mounts {cluster}:{cluster}," in srun
    # torchrun starts one process per GPU on each node, and each runs the in-process trainer
    torchrun = srun[srun.index(" torchrun "):]
    assert "--nnodes 2 --nproc-per-node 8" in torchrun
    assert summary["config"].startswith(str(cluster / "work" / "launch" / "s2-1b_"))
    assert torchrun.endswith(f"-m trainer.pretrain --config {summary['config']}")

    job_dir = cluster / "nemo_run" / "experiments" / "s2-1b" / summary["experiment"]
    assert summary["command"] == f"sbatch --requeue --parsable {job_dir}/s2-1b_sbatch.sh"
    assert text.splitlines()[2] == summary["command"]
    assert (summary["job"], summary["status"], summary["dry_run"], summary["executor"]) == (
        "train", "ok", True, "slurm")
    # the printed config is the resolved one: the preset with the file's overrides
    cfg = printed_config(text)
    assert (cfg.preset, cfg.model.num_layers, cfg.parallel.nodes, cfg.parallel.devices_per_node) == (
        "sailor2-1b", 48, 2, 8)
    assert cfg == TrainConfig.from_dict(slurm_doc(cluster)["train"])
    # nothing was written or submitted
    assert not cluster.exists()


def test_single_gpu_slurm_job_runs_without_torchrun(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    doc = slurm_doc(tmp_path / "cluster", qos="high")
    doc["train"]["parallel"] = {"devices_per_node": 1, "nodes": 1}
    doc["train"]["schedule"] = {"max_steps": 300, "warmup_ratio": 0.1, "hold_ratio": 0.9}
    text, summary = dry_run(write(tmp_path, doc), capfd, "--max-steps", "200")
    assert "#SBATCH --gpus-per-node=1" in text and "#SBATCH --qos=high" in text
    (srun,) = [line for line in text.splitlines() if line.startswith("srun ")]
    assert "torchrun" not in srun
    assert srun.endswith(f"python -m trainer.pretrain --config {summary['config']}")
    assert printed_config(text).schedule.max_steps == 200  # the command line's override travels


def test_ssh_tunnel_dry_run_needs_no_network_nor_the_clusters_files(tmp_path: Path,
                                                                    capfd: pytest.CaptureFixture[str]) -> None:
    doc = slurm_doc(Path("/lustre/sea"), tunnel={"kind": "ssh", "host": "login.cluster.invalid", "user": "me"})
    doc["train"]["restore_from"] = "/lustre/sea/work/checkpoints/stage1"  # exists on the cluster only
    text, summary = dry_run(write(tmp_path, doc), capfd)
    job_dir = f"/lustre/sea/nemo_run/s2-1b/{summary['experiment']}"
    assert summary["command"] == f"sbatch --requeue --parsable {job_dir}/s2-1b_sbatch.sh"
    assert f"--container-mounts /lustre/sea:/lustre/sea,{job_dir}/s2-1b:/nemo_run" in text


def test_local_dry_run_prints_its_command_and_writes_nothing(tmp_path: Path,
                                                              capfd: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    doc = {"train": {"preset": "tiny", "work_dir": str(work), "data": {"lake": str(tmp_path / "lake")}},
           "launch": {"executor": "local"}}
    text, summary = dry_run(write(tmp_path, doc), capfd)
    assert summary["config"].startswith(str(work / "launch" / "tiny_"))
    assert summary["command"] == (f"PYTHONPATH={REPO} {sys.executable} -m trainer.pretrain "
                                  f"--config {summary['config']}")
    assert text.splitlines()[2] == summary["command"]
    assert not work.exists()

    doc["train"]["parallel"] = {"devices_per_node": 2}
    _, summary = dry_run(write(tmp_path, doc), capfd)
    assert "torchrun" in summary["command"] and "--nproc-per-node 2" in summary["command"]
    assert summary["command"].endswith(f"-m trainer.pretrain --config {summary['config']}")


def test_the_tiny_configs_launch_section_is_the_defaults() -> None:
    assert read_launch(REPO / "configs" / "train_tiny.yaml") == LaunchArgs()
    assert read_launch(REPO / "configs" / "demo.yaml") == LaunchArgs()  # a file without one: local


@pytest.mark.parametrize(("change", "expected"), [
    ({"account": None, "time": None, "container_image": None, "job_dir": None},
     ["launch.slurm.account: required", "launch.slurm.time: required", "launch.slurm.container_image: required",
      "launch.slurm.job_dir: required", "4 problem(s)"]),
    ({"time": "two days", "job_dir": "nemo_run"},
     ["launch.slurm.time: 'two days' is not a Slurm time", "launch.slurm.job_dir: must be an absolute path"]),
    ({"nodes": 4, "gpus_per_node": 4},
     ["launch.slurm.nodes (4) differs from train.parallel.nodes (2)",
      "launch.slurm.gpus_per_node (4) differs from train.parallel.devices_per_node (8)"]),
    ({"tunnel": {"kind": "ssh"}},
     ["launch.slurm.tunnel.host: required with kind: ssh", "launch.slurm.tunnel.user: required with kind: ssh"]),
    ({"tunnel": {"kind": "local", "host": "login"}}, ["launch.slurm.tunnel.host: only used with kind: ssh"]),
    ({"container_mounts": ["relative:/data"]}, ["launch.slurm.container_mounts[0]: expected 'src:dst[:flags]'"]),
    ({"partiton": "gpu"}, ["launch.slurm.partiton: unknown key"]),
])
def test_incomplete_slurm_configs_are_refused(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                              change: dict[str, Any], expected: list[str]) -> None:
    doc = slurm_doc(tmp_path / "cluster")
    doc["launch"]["slurm"].update(change)
    doc["launch"]["slurm"] = {k: v for k, v in doc["launch"]["slurm"].items() if v is not None}
    assert main(["--config", str(write(tmp_path, doc)), "--dry-run"]) == 2
    result = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert result["error_type"] == "ConfigError"
    for text in expected:
        assert text in result["error"]


def test_a_slurm_jobs_paths_must_be_absolute_and_mounted(tmp_path: Path) -> None:
    doc = slurm_doc(tmp_path / "cluster")
    del doc["train"]["work_dir"]
    doc["train"]["data"]["lake"] = "lake"
    doc["train"]["checkpoint_dir"] = "/scratch/ckpt"
    with pytest.raises(ConfigError) as err:
        launch_file(write(tmp_path, doc), dry_run=True)
    message = str(err.value)
    assert "train.work_dir: not set; a Slurm job needs an absolute path on the cluster" in message
    assert "train.data.lake: 'lake' is relative" in message
    assert "train.checkpoint_dir: /scratch/ckpt is inside no launch.slurm.container_mounts target" in message
    # --work-dir on the command line counts as given
    doc["train"]["data"]["lake"] = str(tmp_path / "cluster" / "lake")
    del doc["train"]["checkpoint_dir"]
    summary = launch_file(write(tmp_path, doc), dry_run=True, work_dir=tmp_path / "cluster" / "w2")
    assert summary["config"].startswith(str(tmp_path / "cluster" / "w2" / "launch"))


def test_a_local_launch_cannot_span_nodes_and_the_train_section_is_still_checked(tmp_path: Path) -> None:
    doc = {"train": {"parallel": {"nodes": 2}, "data": {"micro_batch_size": 3}}, "launch": {"executor": "local"}}
    with pytest.raises(ConfigError, match=r"data.global_batch_size \(4\) must be a multiple of"):
        launch_file(write(tmp_path, doc), dry_run=True)
    doc["train"]["data"] = {}
    with pytest.raises(ConfigError, match="launch.executor: local runs on this machine only; "
                                          "train.parallel.nodes is 2"):
        launch_file(write(tmp_path, doc), dry_run=True)


def test_host_path_follows_the_innermost_mount() -> None:
    mounts = ("/lustre/proj:/data", "/lustre/proj/fast:/data/fast", "/scratch")
    assert host_path("/data/work/launch/x.yaml", mounts) == "/lustre/proj/work/launch/x.yaml"
    assert host_path("/data/fast/lake", mounts) == "/lustre/proj/fast/lake"
    assert host_path("/scratch/w", mounts) == "/scratch/w"


def test_code_git_refuses_uncommitted_changes(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "a.py").write_text("x = 1\n", encoding="utf-8")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    (repo / "untracked.txt").write_text("not shipped, not checked\n", encoding="utf-8")
    check_committed(repo)
    (repo / "a.py").write_text("x = 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"1 tracked file\(s\) have uncommitted changes \(a.py\)"):
        check_committed(repo)
    with pytest.raises(ConfigError, match="needs sailyard's git checkout"):
        check_committed(tmp_path / "not-a-repo")


def test_a_local_launch_runs_the_trainer_on_the_resolved_config(tmp_path: Path,
                                                                capfd: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    doc = {"train": {"preset": "tiny", "name": "launched", "work_dir": str(work),
                     "data": {"lake": str(tmp_path / "no-lake")}},
           "launch": {"executor": "local"}}
    assert main(["--config", str(write(tmp_path, doc)), "--launch", "--max-steps", "3"]) == 1
    result = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert result["error_type"] == "LaunchError"
    assert "the local run launched ended FAILED: no shard_manifest table in lake" in result["error"]
    (config,) = (work / "launch").glob("launched_*.yaml")
    cfg = TrainConfig.from_yaml(config)
    assert (cfg.name, cfg.preset, cfg.schedule.max_steps, cfg.data.lake) == ("launched", "tiny", 3,
                                                                             tmp_path / "no-lake")
    # NeMo-Run kept its record of the experiment with the run
    assert list((work / "nemo_run" / "experiments" / "launched").iterdir())
