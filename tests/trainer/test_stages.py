"""`sailyard train --stage 1|2 --plan plan.yaml`: Sailor2's two stages from an exported plan.

The plan is exported by Spark (`plan_export` in conftest.py). The resolution tests need no NeMo; the
chain test runs the commands a user types, each in its own process: a random Qwen2 expanded by
LlamaPro 2 → 3 layers, imported into NeMo, stage 1 from it, stage 2 from stage 1, export to HF.
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

from data_engine.errors import ConfigError
from trainer import checkpoints
from trainer.stages import STAGE2_DEFAULTS, stage_config

REPO = Path(__file__).resolve().parents[2]


def _train_doc(work: Path, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": "t", "work_dir": str(work), "val_check_interval": 3, "limit_val_batches": 1,
                           "model": {"seq_length": 32},
                           "data": {"seq_length": 32, "micro_batch_size": 1, "global_batch_size": 4,
                                    "split": "80,20,0"}}
    for key, value in overrides.items():
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
    return doc


def _config(path: Path, train: dict[str, Any], stage2: dict[str, Any] | None = None) -> Path:
    path.write_text(yaml.safe_dump({"train": train, **({"stage2": stage2} if stage2 else {})}), encoding="utf-8")
    return path


def test_stage1_reads_the_plans_data_config_for_its_budget(plan_export: dict[str, Any], tmp_path: Path) -> None:
    plan = yaml.safe_load(plan_export["plan"].read_text())
    config = _config(tmp_path / "c.yaml", _train_doc(tmp_path / "work"))
    stage = stage_config(1, plan_export["plan"], config)  # no --shards: found from the lake's manifest
    cfg = stage.cfg
    assert cfg.name == f"t-{plan['plan_digest'][:8]}-stage1"
    assert cfg.data.paths_file == plan_export["data_configs"]["stage1"]
    assert cfg.data.lake == Path(plan_export["lake"])  # the plan's lake, the config named none
    # The plan's 1,000 stage-1 tokens at 4 × 32 tokens a step, rounded up.
    assert (cfg.schedule.max_steps, stage.steps_from) == (math.ceil(1000 / 128), "plan budget")
    assert stage.planned_steps == 8 and cfg.restore_from is None
    assert stage_config(1, plan_export["plan"], config, max_steps=3).cfg.schedule.max_steps == 3
    explicit = _config(tmp_path / "e.yaml", _train_doc(tmp_path / "work", schedule={"max_steps": 5}))
    assert (stage_config(1, plan_export["plan"], explicit).cfg.schedule.max_steps,
            stage_config(1, plan_export["plan"], explicit).steps_from) == (5, "config")
    assert stage_config(1, plan_export["plan"], config, shards=plan_export["shards"]).data_config == \
        plan_export["data_configs"]["stage1"]


def test_stage2_waits_for_stage1_then_anneals_from_its_final_weights(plan_export: dict[str, Any],
                                                                     tmp_path: Path) -> None:
    work = tmp_path / "work"
    config = _config(tmp_path / "c.yaml", _train_doc(work, schedule={"max_steps": 5, "lr": 3e-4}),
                     {"schedule": {"decay": "one_minus_square_root"}})
    with pytest.raises(ConfigError, match=r"stage 1 \(t-\w{8}-stage1\) has not finished"):
        stage_config(2, plan_export["plan"], config)
    stage1 = stage_config(1, plan_export["plan"], config).cfg
    final = stage1.checkpoints / "t--step=4-consumed_samples=20.0-last"
    (final / "weights").mkdir(parents=True)
    checkpoints.mark_finished(stage1.checkpoints, steps=5, checkpoint=final, mlflow_run_id=None, work_dir=work)
    stage = stage_config(2, plan_export["plan"], config)
    s = stage.cfg.schedule
    assert stage.cfg.restore_from == final and stage.cfg.name.endswith("-stage2")
    assert stage.cfg.data.paths_file == plan_export["data_configs"]["stage2"]
    # Sailor2's anneal, the config's decay shape; stage 1's lr and max_steps stay stage 1's.
    assert (s.lr, s.min_lr, s.warmup, s.hold, s.decay) == (1e-5, STAGE2_DEFAULTS["schedule"]["min_lr"], 0, 0,
                                                           "one_minus_square_root")
    assert not s.constant
    assert (s.max_steps, stage.steps_from) == (math.ceil(200 / 128), "plan budget")


def test_a_missing_export_or_another_plans_export_is_named(plan_export: dict[str, Any], tmp_path: Path) -> None:
    config = _config(tmp_path / "c.yaml", _train_doc(tmp_path / "work"))
    with pytest.raises(ConfigError, match=r"no stage1.data.yaml of plan .* export its shards first, "
                                          r"`sailyard export-shards"):
        stage_config(1, plan_export["plan"], config, shards=tmp_path / "empty")
    # The same plan with another budget has another digest: the exported data configs are not its.
    from data_engine.mixture.plan import plan_digest, write_plan

    doc = yaml.safe_load(plan_export["plan"].read_text())
    doc["stages"]["stage1"]["budget_tokens"] = 2000
    doc["plan_digest"] = plan_digest(doc)
    other = write_plan(doc, tmp_path / "other.yaml")
    with pytest.raises(ConfigError, match="no stage1.data.yaml of plan"):
        stage_config(1, other, config)
    with pytest.raises(ConfigError, match="was written for plan"):
        stage_config(1, other, config, shards=plan_export["shards"])
    with pytest.raises(ConfigError, match="--stage: expected 1 or 2"):
        stage_config(3, plan_export["plan"], config)


# --- the chain, as a user runs it ---------------------------------------------------------------------


def _run(tmp: Path, *args: str, ok: bool = True) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SAILYARD_PARENT_RUN_ID")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", *args], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=600)
    assert (proc.returncode == 0) == ok, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def chain(plan_export: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from trainer.base_model import model_args, write_random_qwen2
    from trainer.config import ModelArgs

    tmp = tmp_path_factory.mktemp("chain")
    base = write_random_qwen2(tmp / "base", ModelArgs(num_layers=2, seq_length=32), seed=3)
    expanded = _run(tmp, "jobs.expand", "--model", str(base), "--to-layers", "3", "--out", str(tmp / "expanded"))
    imported = _run(tmp, "jobs.import_hf", "--model", str(tmp / "expanded"), "--out", str(tmp / "nemo"),
                    "--seq-length", "32")
    hf_config = json.loads((tmp / "expanded" / "config.json").read_text())
    work = tmp / "work"
    train = _train_doc(work, restore_from=str(tmp / "nemo"), model=vars(model_args(hf_config, seq_length=32)),
                       data={"global_batch_size": 2}, schedule={"max_steps": 3, "warmup_steps": 1})
    config = _config(tmp / "train.yaml", train, {"schedule": {"max_steps": 2}})
    plan = str(plan_export["plan"])
    early = _run(tmp, "trainer.pretrain", "--stage", "2", "--plan", plan, "--config", str(config), ok=False)
    s1 = _run(tmp, "trainer.pretrain", "--stage", "1", "--plan", plan, "--config", str(config))
    s2 = _run(tmp, "trainer.pretrain", "--stage", "2", "--plan", plan, "--config", str(config))
    export = _run(tmp, "jobs.export_hf", "--checkpoint", s2["checkpoint"], "--out", str(tmp / "hf"))
    return {"tmp": tmp, "work": work, "expanded": expanded, "imported": imported, "early": early, "s1": s1,
            "s2": s2, "export": export}


def test_stage1_starts_from_the_import_and_stage2_from_stage1(chain: dict[str, Any]) -> None:
    early, s1, s2 = chain["early"], chain["s1"], chain["s2"]
    assert early["status"] == "error" and "has not finished" in early["error"]
    assert (s1["stage"], s1["steps"], s1["steps_from"]) == (1, 3, "config")
    assert s1["restored_from"] == str(chain["tmp"] / "nemo")
    assert (s2["stage"], s2["steps"]) == (2, 2)
    assert s2["restored_from"] == s1["checkpoint"]  # stage 1's final weights, a fresh optimizer
    assert s1["plan_digest"] == s2["plan_digest"] and s1["parent_run_id"] == s2["parent_run_id"]
    # Rerunning a finished stage trains nothing more and keeps its place.
    again = _run(chain["tmp"], "trainer.pretrain", "--stage", "1", "--plan", s1["plan"], "--config",
                 str(chain["tmp"] / "train.yaml"))
    assert again["steps"] == 3 and again["resumed_from"] == s1["checkpoint"]


def test_the_exported_model_is_the_trained_expansion(chain: dict[str, Any]) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    new = chain["expanded"]["new_layer_indices"]
    assert len(new) == 1
    model = AutoModelForCausalLM.from_pretrained(chain["tmp"] / "hf", dtype=torch.float32)
    assert model.config.num_hidden_layers == 3
    # LlamaPro's new block starts as the identity (zero output projections); training moved it.
    o_proj = model.model.layers[new[0]].self_attn.o_proj.weight
    assert o_proj.abs().max() > 0
    assert chain["export"]["hf_model_logged"] is True


def test_mlflow_shows_the_chain(chain: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient

    from data_engine import tracking

    client = MlflowClient(tracking.tracking_uri(chain["work"]))
    s1, s2 = chain["s1"], chain["s2"]
    parent = client.get_run(s1["parent_run_id"])
    assert parent.data.tags["sailyard.kind"] == "train-plan" and parent.data.tags["plan_digest"] == s1["plan_digest"]
    assert parent.data.tags["table.docs_curated"] == "v0" and parent.data.tags["table.docs_scored"] == "v0"
    children = {r.info.run_id: r for r in client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")}
    assert sorted(r.info.run_name for r in children.values()) == ["export_hf", "train", "train"]
    run1, run2 = children[s1["mlflow_run_id"]], children[s2["mlflow_run_id"]]
    for run, stage in ((run1, "stage1"), (run2, "stage2")):
        tags = run.data.tags
        assert tags["train.stage"] == stage and tags["plan_digest"] == s1["plan_digest"]
        assert tags["expansion.layers"] == "2→3"
        assert tags["expansion.new_layers"] == ",".join(map(str, chain["expanded"]["new_layer_indices"]))
        assert tags["base_model"] == str(chain["tmp"] / "expanded")
        assert tags["checkpoint"] and tags["shard_manifest_digest"]
    assert run1.data.tags["source_tables"] == "docs_curated@v0"
    assert run2.data.tags["source_tables"] == "docs_curated@v0,docs_scored@v0"
    assert run2.data.params["schedule.lr"] == "1e-05"
    lr = [m.value for m in sorted(client.get_metric_history(run2.info.run_id, "lr"), key=lambda m: m.step)]
    assert lr[0] == pytest.approx(1e-5) and lr[-1] < lr[0]  # stage 2 decays
    assert client.get_metric_history(run1.info.run_id, "tokens_per_sec")
    assert client.get_metric_history(run1.info.run_id, "grad_norm")
    (export,) = [r for r in children.values() if r.info.run_name == "export_hf"]
    assert export.data.tags["train_run_id"] == s2["mlflow_run_id"]
    assert [f.path for f in client.list_artifacts(export.info.run_id)] == ["hf_model"]


def test_a_stage_dry_runs_on_slurm_with_its_resolved_config(plan_export: dict[str, Any], tmp_path: Path,
                                                           capfd: pytest.CaptureFixture[str]) -> None:
    from trainer.pretrain import main

    cluster = tmp_path / "cluster"
    doc = {"train": {"preset": "sailor2-1b", "name": "s2-1b", "work_dir": str(cluster / "work"),
                     "parallel": {"nodes": 2}},
           "launch": {"executor": "slurm", "slurm": {
               "account": "sea-llm", "time": "2-00:00:00", "container_image": "nvcr.io/nvidia/nemo:25.09",
               "container_mounts": [f"{cluster}:{cluster}", f"{plan_export['root']}:{plan_export['root']}"],
               "job_dir": str(cluster / "nemo_run"), "tunnel": {"kind": "local"}}}}
    config = tmp_path / "s2-1b.yaml"
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    plan = str(plan_export["plan"])
    # The plan's 1,000-token budget is under one 4M-token step of the preset.
    assert main(["--stage", "1", "--plan", plan, "--config", str(config), "--dry-run"]) == 0
    summary = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert (summary["max_steps"], summary["steps_from"], summary["planned_steps"]) == (1, "plan budget", 1)
    assert main(["--stage", "1", "--plan", plan, "--config", str(config), "--dry-run", "--max-steps", "2000"]) == 0
    *text, last = capfd.readouterr().out.strip().splitlines()
    summary = json.loads(last)
    assert (summary["dry_run"], summary["executor"], summary["stage"], summary["max_steps"]) == (True, "slurm", 1, 2000)
    assert "#SBATCH --nodes=2" in text
    body = "\n".join(text).split("# Resolved config", 1)[1].split("\n", 1)[1]
    resolved = yaml.safe_load(body)["train"]
    assert resolved["name"] == f"s2-1b-{summary['plan_digest'][:8]}-stage1"
    assert resolved["data"]["paths_file"] == str(plan_export["data_configs"]["stage1"])
    assert resolved["schedule"]["warmup_steps"] == 500 and resolved["model"]["num_layers"] == 48
    assert not cluster.exists()  # nothing written, nothing submitted
    # Stage 2 cannot be submitted before stage 1 has finished.
    assert main(["--stage", "2", "--plan", plan, "--config", str(config), "--dry-run", "--max-steps", "10"]) == 2
    assert "has not finished" in capfd.readouterr().out
