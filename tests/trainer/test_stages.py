"""`sailyard train --stage 1|2 --plan plan.yaml`: Sailor2's two stages from an exported plan.

The plan is exported by Spark (`plan_export` in conftest.py). The resolution tests need no NeMo; the
chain runs the commands a user types, each in its own process: a random Qwen2 (hidden 64, the full
Qwen vocabulary) expanded by LlamaPro 2 → 4 layers (new: 1 and 3), imported into NeMo, stage 1 from it
(every parameter), stage 2 from stage 1 training only the new layers (`train_only_new_blocks`), that
stage resumed with a longer `--max-steps`, and the result exported to Hugging Face.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
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


NEW_LAYERS = (1, 3)  # LlamaPro's placement for 2 → 4: a copy after each original layer
OPTIMIZER_KEY = re.compile(r"^optimizer\.state\.(exp_avg|exp_avg_sq)\.module\.decoder\.layers\.(\d+)\.")


def _run(tmp: Path, *args: str, ok: bool = True, stderr: list[str] | None = None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SAILYARD_PARENT_RUN_ID")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", *args], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=600)
    assert (proc.returncode == 0) == ok, proc.stderr[-4000:]
    if stderr is not None:
        stderr.append(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def model_tensors(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Every model tensor of a NeMo checkpoint (per-layer tensors are [num_layers, …])."""
    from trainer.convert import CheckpointWeights

    weights = CheckpointWeights(checkpoint)
    return {key: weights[key] for key in weights}


def optimizer_keys(checkpoint: Path) -> list[str]:
    from torch.distributed.checkpoint import FileSystemReader

    meta = FileSystemReader(str(checkpoint / "weights")).read_metadata().state_dict_metadata
    return sorted(k for k in meta if k.startswith("optimizer."))


@pytest.fixture(scope="module")
def chain(plan_export: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from trainer.base_model import model_args, write_random_qwen2
    from trainer.config import ModelArgs

    tmp = tmp_path_factory.mktemp("chain")
    base = write_random_qwen2(tmp / "base", ModelArgs(num_layers=2, seq_length=32), seed=3)
    expanded = _run(tmp, "jobs.expand", "--model", str(base), "--to-layers", "4", "--out", str(tmp / "expanded"))
    imported = _run(tmp, "jobs.import_hf", "--model", str(tmp / "expanded"), "--out", str(tmp / "nemo"),
                    "--seq-length", "32")
    hf_config = json.loads((tmp / "expanded" / "config.json").read_text())
    work = tmp / "work"
    train = _train_doc(work, restore_from=str(tmp / "nemo"), model=vars(model_args(hf_config, seq_length=32)),
                       data={"global_batch_size": 2}, schedule={"max_steps": 3, "warmup_steps": 1})
    # Stage 2 at a rate that moves whatever the optimizer holds (weight decay included) in two steps.
    config = _config(tmp / "train.yaml", train, {"train_only_new_blocks": True,
                                                 "schedule": {"max_steps": 2, "lr": 1e-3, "min_lr": 1e-4}})
    plan, logs = str(plan_export["plan"]), []
    stage = ["trainer.pretrain", "--plan", plan, "--config", str(config), "--stage"]
    early = _run(tmp, *stage, "2", ok=False)
    s1 = _run(tmp, *stage, "1")
    s2 = _run(tmp, *stage, "2", stderr=logs)
    s2_weights, s2_optimizer = model_tensors(Path(s2["checkpoint"])), optimizer_keys(Path(s2["checkpoint"]))
    extended = _run(tmp, *stage, "2", "--max-steps", "3")  # resumes stage 2, optimizer state included
    export = _run(tmp, "jobs.export_hf", "--checkpoint", extended["checkpoint"], "--out", str(tmp / "hf"))
    return {"tmp": tmp, "work": work, "expanded": expanded, "imported": imported, "early": early, "s1": s1,
            "s2": s2, "s2_log": logs[0], "s2_weights": s2_weights, "s2_optimizer": s2_optimizer,
            "extended": extended, "export": export}


def _assert_only_new_layers_changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> None:
    assert sorted(before) == sorted(after)
    assert "embedding.word_embeddings.weight" in after and "output_layer.weight" in after  # untied
    for key, old in before.items():
        new = after[key]
        if key.startswith("decoder.layers."):
            assert new.shape[0] == 4, key
            for layer in range(4):
                same = torch.equal(old[layer], new[layer])
                assert same == (layer not in NEW_LAYERS), f"{key} layer {layer}: {'unchanged' if same else 'changed'}"
        else:  # embeddings, output layer, final norm
            assert torch.equal(old, new), f"{key} changed"


def test_stage1_starts_from_the_import_and_stage2_from_stage1(chain: dict[str, Any]) -> None:
    early, s1, s2 = chain["early"], chain["s1"], chain["s2"]
    assert tuple(chain["expanded"]["new_layer_indices"]) == NEW_LAYERS
    assert early["status"] == "error" and "has not finished" in early["error"]
    assert (s1["stage"], s1["steps"], s1["steps_from"]) == (1, 3, "config")
    assert s1["restored_from"] == str(chain["tmp"] / "nemo")
    assert (s2["stage"], s2["steps"]) == (2, 2)
    assert s2["restored_from"] == s1["checkpoint"]  # stage 1's final weights, a fresh optimizer
    assert s1["plan_digest"] == s2["plan_digest"] and s1["parent_run_id"] == s2["parent_run_id"]
    # Stage 1 trained every parameter: the new blocks are no longer LlamaPro's identity.
    imported, trained = model_tensors(chain["tmp"] / "nemo"), model_tensors(Path(s1["checkpoint"]))
    assert all(not torch.equal(imported[k], trained[k]) for k in imported)
    # Rerunning a finished stage trains nothing more and keeps its place.
    again = _run(chain["tmp"], "trainer.pretrain", "--stage", "1", "--plan", s1["plan"], "--config",
                 str(chain["tmp"] / "train.yaml"))
    assert again["steps"] == 3 and again["resumed_from"] == s1["checkpoint"]


def test_stage2_trains_only_the_new_blocks(chain: dict[str, Any]) -> None:
    stage1 = model_tensors(Path(chain["s1"]["checkpoint"]))
    _assert_only_new_layers_changed(stage1, chain["s2_weights"])
    # The optimizer holds exp_avg and exp_avg_sq of the 7 tensors of each new layer, nothing else.
    keys = chain["s2_optimizer"]
    assert keys and all(OPTIMIZER_KEY.match(k) for k in keys), keys
    assert {int(OPTIMIZER_KEY.match(k).group(2)) for k in keys} == set(NEW_LAYERS)
    assert len(keys) == 2 * 7 * len(NEW_LAYERS)
    # 2 old layers, embeddings, output layer and final norm frozen (config arithmetic by hand).
    h, f, v, kv = 64, 128, 151936, 32
    layer = h * (h + 2 * kv) + (h + 2 * kv) + h * h + 3 * h * f + 2 * h
    assert (f"freeze: {2 * layer:,} parameters train ({2 * layer / (4 * layer + 2 * v * h + h):.2%}), "
            f"{2 * layer + 2 * v * h + h:,} frozen; training decoder layers 1, 3 (0-based)") in chain["s2_log"]


def test_a_frozen_stage_resumes_with_its_optimizer_state(chain: dict[str, Any]) -> None:
    s2, extended = chain["s2"], chain["extended"]
    assert extended["steps"] == 3 and extended["resumed_from"] == s2["checkpoint"]
    last = Path(extended["checkpoint"])
    after = model_tensors(last)
    _assert_only_new_layers_changed(model_tensors(Path(chain["s1"]["checkpoint"])), after)
    _assert_only_new_layers_changed(chain["s2_weights"], after)  # and they kept training
    assert optimizer_keys(last) == chain["s2_optimizer"]
    # Adam's step in the checkpoint's common state: 2 loaded + 1 taken (a fresh optimizer would say 1).
    common = torch.load(last / "weights" / "common.pt", weights_only=False)
    assert float(common["optimizer"][0]["state"]["common_step"]) == 3


def test_the_exported_model_is_the_trained_expansion(chain: dict[str, Any]) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(chain["tmp"] / "hf", dtype=torch.float32)
    assert model.config.num_hidden_layers == 4
    # LlamaPro's new blocks start as the identity (zero output projections); training moved them.
    for i in NEW_LAYERS:
        assert model.model.layers[i].self_attn.o_proj.weight.abs().max() > 0
    trained = model_tensors(Path(chain["extended"]["checkpoint"]))
    assert torch.equal(model.model.embed_tokens.weight, trained["embedding.word_embeddings.weight"])
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
    assert sorted(r.info.run_name for r in children.values()) == ["export_hf", "train", "train", "train"]
    run1, run2 = children[s1["mlflow_run_id"]], children[s2["mlflow_run_id"]]
    for run, stage in ((run1, "stage1"), (run2, "stage2")):
        tags = run.data.tags
        assert tags["train.stage"] == stage and tags["plan_digest"] == s1["plan_digest"]
        assert tags["expansion.layers"] == "2→4"
        assert tags["expansion.new_layers"] == ",".join(map(str, chain["expanded"]["new_layer_indices"]))
        assert tags["base_model"] == str(chain["tmp"] / "expanded")
        assert tags["checkpoint"] and tags["shard_manifest_digest"]
    assert run1.data.tags["source_tables"] == "docs_curated@v0"
    assert run2.data.tags["source_tables"] == "docs_curated@v0,docs_scored@v0"
    assert run2.data.params["schedule.lr"] == "0.001" and run2.data.params["train_only_new_blocks"] == "true"
    lr = [m.value for m in sorted(client.get_metric_history(run2.info.run_id, "lr"), key=lambda m: m.step)]
    assert lr[0] == pytest.approx(1e-3) and lr[-1] < lr[0]  # stage 2 decays
    assert client.get_metric_history(run1.info.run_id, "tokens_per_sec")
    assert client.get_metric_history(run1.info.run_id, "grad_norm")
    (export,) = [r for r in children.values() if r.info.run_name == "export_hf"]
    assert export.data.tags["train_run_id"] == chain["extended"]["mlflow_run_id"]
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
