"""`build_recipe` is pure: these tests check what NeMo would be given, without starting NeMo."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from data_engine.errors import ConfigError
from trainer.config import DataArgs, ScheduleArgs, TrainConfig
from trainer.data import Blend
from trainer.pretrain import build_recipe, resolve_checkpoint


def blend(tmp_path: Path) -> Blend:
    return Blend(paths=[0.7, str(tmp_path / "ind_text_document"), 0.3, str(tmp_path / "vie_text_document")],
                 lang_weights={"ind": 0.7, "vie": 0.3}, manifest_path=tmp_path / "lake" / "shard_manifest",
                 manifest_version=2, digest="0" * 64)


def test_cpu_recipe(tmp_path: Path) -> None:
    cfg = TrainConfig(name="tiny", work_dir=tmp_path / "work",
                      data=DataArgs(seq_length=64, micro_batch_size=1, global_batch_size=2, split="90,10,0"))
    recipe = build_recipe(cfg, blend(tmp_path), gpu=False)

    assert recipe.model["num_layers"] == 2 and recipe.model["vocab_size"] == 151936
    assert recipe.model["use_cpu_initialization"] is True
    assert not any(recipe.model[k] for k in ("gradient_accumulation_fusion", "masked_softmax_fusion",
                                              "bias_activation_fusion", "bias_dropout_fusion",
                                              "apply_rope_fusion", "persist_layer_norm"))
    assert recipe.data["paths"] == blend(tmp_path).paths
    assert (recipe.data["seq_length"], recipe.data["micro_batch_size"], recipe.data["global_batch_size"],
            recipe.data["split"], recipe.data["pin_memory"]) == (64, 1, 2, "90,10,0", False)
    assert recipe.data["index_mapping_dir"] == str(tmp_path / "work" / "dataset_index")
    # 12 validation samples (NeMo: (10 // 5 + 1) · 2 batches · 2); vie's share ⌈3.6⌉ = 4 gets 2 spare
    assert recipe.data["mid_level_dataset_surplus"] == 0.5
    assert recipe.optimizer["use_distributed_optimizer"] is False
    assert (recipe.optimizer["lr"], recipe.optimizer["min_lr"]) == (1e-4, 1e-5)
    assert recipe.precision == "32"
    assert recipe.strategy["process_group_backend"] == "gloo"
    assert recipe.strategy["ckpt_async_save"] is False
    assert recipe.trainer["accelerator"] == "cpu"
    assert (recipe.trainer["devices"], recipe.trainer["num_nodes"]) == (1, 1)
    assert {k: recipe.strategy[k] for k in ("tensor_model_parallel_size", "pipeline_model_parallel_size",
                                            "context_parallel_size", "sequence_parallel")} == {
        "tensor_model_parallel_size": 1, "pipeline_model_parallel_size": 1, "context_parallel_size": 1,
        "sequence_parallel": False}
    assert not any(k.startswith("recompute") for k in recipe.model)
    assert recipe.trainer["max_steps"] == recipe.scheduler["max_steps"] == 10
    assert recipe.checkpoint["dirpath"] == str(tmp_path / "work" / "checkpoints" / "tiny")
    assert recipe.checkpoint["save_optim_on_train_end"] is True
    assert recipe.log_dir == tmp_path / "work" / "logs" / "tiny"
    assert recipe.resume == {"resume_if_exists": True, "resume_ignore_no_checkpoint": True,
                             "resume_from_directory": str(tmp_path / "work" / "checkpoints" / "tiny"),
                             "restore_config": None}


def test_gpu_recipe_keeps_nemo_defaults(tmp_path: Path) -> None:
    recipe = build_recipe(TrainConfig(work_dir=tmp_path), blend(tmp_path), gpu=True)
    assert "use_cpu_initialization" not in recipe.model
    assert "masked_softmax_fusion" not in recipe.model
    assert recipe.precision == "bf16-mixed"
    assert recipe.trainer["accelerator"] == "gpu"
    assert recipe.strategy["process_group_backend"] == "nccl"
    assert recipe.optimizer["use_distributed_optimizer"] is True
    assert recipe.data["pin_memory"] is True


def _rates(scheduler: dict, steps: int, lr: float) -> list[float]:
    """The learning rate NeMo's scheduler built from `scheduler` gives at steps 0..steps (inclusive)."""
    import torch
    from nemo.lightning.pytorch.optim import WarmupHoldAnnealScheduler, WarmupHoldPolicyScheduler

    args = dict(scheduler)
    kind = {"constant": WarmupHoldPolicyScheduler, "anneal": WarmupHoldAnnealScheduler}[args.pop("kind")]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = kind(**args).scheduler(None, optimizer)["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(steps + 1):  # Lightning steps it once more after the last optimizer step
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        sched.step()
    return rates


def test_constant_after_warmup_sailor2_stage1(tmp_path: Path) -> None:
    """Stage 1: linear warmup over warmup_steps, then the peak to the end and one step past it."""
    cfg = TrainConfig(work_dir=tmp_path, schedule=ScheduleArgs(lr=1e-4, min_lr=1e-5, warmup_steps=3, hold_ratio=1.0,
                                                               max_steps=10))
    scheduler = build_recipe(cfg, blend(tmp_path), gpu=False).scheduler
    assert scheduler["kind"] == "constant"
    expected = [1e-4 * (k + 1) / 4 for k in range(3)] + [1e-4] * 8  # NeMo's warmup: lr·(s+1)/(W+1)
    assert _rates(scheduler, 10, 1e-4) == pytest.approx(expected, rel=1e-12)
    # The tiny defaults (warmup_ratio 0.1 + hold_ratio 0.9) are constant too, with no division by zero.
    assert build_recipe(TrainConfig(work_dir=tmp_path), blend(tmp_path), gpu=False).scheduler["kind"] == "constant"


@pytest.mark.parametrize("decay", ["linear", "one_minus_square_root"])
def test_stage2_anneal_decays_to_min_lr_at_the_end(tmp_path: Path, decay: str) -> None:
    cfg = TrainConfig(work_dir=tmp_path, schedule=ScheduleArgs(lr=1e-5, min_lr=1e-6, warmup_ratio=0.0, hold_ratio=0.0,
                                                               decay=decay, max_steps=8))
    scheduler = build_recipe(cfg, blend(tmp_path), gpu=False).scheduler
    assert scheduler["kind"] == "anneal"
    rates = _rates(scheduler, 8, 1e-5)
    if decay == "linear":
        expected = [1e-5 - 9e-6 * s / 8 for s in range(9)]
    else:
        expected = [max(1e-6, 1e-5 * (1 - (s / 8) ** 0.5)) for s in range(9)]
    assert rates == pytest.approx(expected, rel=1e-9)
    assert rates[0] == pytest.approx(1e-5) and rates[-1] == pytest.approx(1e-6)


def test_exact_warmup_and_hold_steps_reach_nemo(tmp_path: Path) -> None:
    """NeMo's anneal scheduler takes ratios and truncates ratio × max_steps: 500 of 100,000 must stay 500."""
    import torch
    from nemo.lightning.pytorch.optim import WarmupHoldAnnealScheduler

    cfg = TrainConfig(work_dir=tmp_path, schedule=ScheduleArgs(warmup_steps=500, hold_ratio=0.7, max_steps=100_000))
    args = dict(build_recipe(cfg, blend(tmp_path), gpu=False).scheduler)
    assert args.pop("kind") == "anneal"
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupHoldAnnealScheduler(**args).scheduler(None, optimizer)["lr_scheduler"]["scheduler"]
    assert sched.warmup_steps == 500 and sched.hold_steps == 500 + 70_000
    with pytest.raises(ConfigError, match="warmup_steps: must be 0 or more"):
        TrainConfig(work_dir=tmp_path, schedule=ScheduleArgs(warmup_steps=-1)).validate()
    # A preset's 500 warmup steps give way to a file's own warmup_ratio.
    short = TrainConfig.from_dict({"preset": "sailor2-1b", "schedule": {"max_steps": 300, "warmup_ratio": 0.1}})
    assert (short.schedule.warmup_steps, short.schedule.warmup) == (None, 30)


def test_restore_from_gives_weights_only(tmp_path: Path) -> None:
    ckpt = tmp_path / "stage1--step=9-consumed_samples=40.0-last"
    (ckpt / "weights").mkdir(parents=True)
    cfg = TrainConfig(name="stage2", work_dir=tmp_path, restore_from=ckpt)
    assert build_recipe(cfg, blend(tmp_path), gpu=False).resume["restore_config"] == {
        "path": str(ckpt), "load_model_state": True, "load_optim_state": False, "load_artifacts": False}


def test_resolve_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "checkpoints" / "stage1"
    older = run / "stage1--step=4-consumed_samples=20.0-last"
    newer = run / "stage1--step=9-consumed_samples=40.0-last"
    periodic = run / "stage1--step=9-consumed_samples=40.0"
    for path in (older, newer, periodic):
        (path / "weights").mkdir(parents=True)
    (run / "stage1--step=12-consumed_samples=48.0-last").mkdir()  # unfinished: no weights/
    os.utime(older, (1_000_000, 1_000_000))
    os.utime(newer, (2_000_000, 2_000_000))

    assert resolve_checkpoint(run) == newer
    assert resolve_checkpoint(periodic) == periodic
    with pytest.raises(ConfigError, match="neither a NeMo checkpoint"):
        resolve_checkpoint(tmp_path / "checkpoints")


def test_recipe_follows_the_config(tmp_path: Path) -> None:
    cfg = TrainConfig(name="b", work_dir=tmp_path, checkpoint_dir=tmp_path / "elsewhere", keep_checkpoints=3,
                      seed=7, val_check_interval=2, limit_val_batches=1, log_every_n_steps=3)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, tie_embeddings=True, num_layers=4))
    recipe = build_recipe(cfg, blend(tmp_path), gpu=False)
    assert recipe.model["share_embeddings_and_output_weights"] is True
    assert recipe.model["num_layers"] == 4
    assert (recipe.checkpoint["dirpath"], recipe.checkpoint["save_top_k"],
            recipe.checkpoint["every_n_train_steps"]) == (str(tmp_path / "elsewhere"), 3, 2)
    assert recipe.resume["resume_from_directory"] == str(tmp_path / "elsewhere")
    assert (recipe.trainer["val_check_interval"], recipe.trainer["limit_val_batches"],
            recipe.trainer["log_every_n_steps"]) == (2, 1, 3)
    assert recipe.seed == recipe.data["seed"] == 7


def test_a_run_shorter_than_the_validation_interval_still_validates_at_its_end(tmp_path: Path) -> None:
    cfg = TrainConfig(work_dir=tmp_path, val_check_interval=5, schedule=ScheduleArgs(max_steps=3))
    recipe = build_recipe(cfg, blend(tmp_path), gpu=False)
    assert recipe.trainer["val_check_interval"] == recipe.checkpoint["every_n_train_steps"] == 3


def test_dataset_surplus_is_the_configured_share_on_a_large_run(tmp_path: Path) -> None:
    cfg = TrainConfig(name="big", work_dir=tmp_path / "work", schedule=ScheduleArgs(max_steps=20000),
                      data=DataArgs(global_batch_size=1024, dataset_surplus=0.01))
    assert build_recipe(cfg, blend(tmp_path), gpu=False).data["mid_level_dataset_surplus"] == 0.01
