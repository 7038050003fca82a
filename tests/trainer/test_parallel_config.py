"""Parallelism in the train config, the presets, and what `build_recipe` hands NeMo for them.

The expected sizes are the Qwen2.5 configs' and Megatron-Sailor2's numbers written out here, and
what Megatron itself refuses is asked of Megatron (its TransformerConfig), not of our validation.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from data_engine.errors import ConfigError
from trainer.config import ParallelArgs, TrainConfig
from trainer.data import Blend
from trainer.presets import PRESETS, preset_config
from trainer.pretrain import build_recipe

# (layers, hidden, ffn, heads, kv heads, vocab) of the expanded models: Qwen2.5-0.5B / 7B / 14B's
# config.json with LlamaPro's layer counts (24→48, 28→32, 48→64).
SAILOR2_SHAPES = {
    "sailor2-1b": (48, 896, 4864, 14, 2, 151936),
    "sailor2-8b": (32, 3584, 18944, 28, 4, 152064),
    "sailor2-20b": (64, 5120, 13824, 40, 8, 152064),
}
SAILOR2 = tuple(SAILOR2_SHAPES)
PATHS = {"work_dir": "/cluster/work", "data": {"lake": "/cluster/lake"}}


def blend(tmp_path: Path) -> Blend:
    return Blend(paths=[str(tmp_path / "ind_text_document")], lang_weights={"ind": 1.0},
                 manifest_path=tmp_path / "lake" / "shard_manifest", manifest_version=1, digest="0" * 64)


def params(layers: int, hidden: int, ffn: int, heads: int, kv: int, vocab: int) -> int:
    """A Qwen2 decoder's parameters: QKV with bias, O, SwiGLU, two RMSNorms a layer, untied embeddings."""
    head = hidden // heads
    attention = hidden * hidden * 2 + 2 * hidden * kv * head + hidden + 2 * kv * head
    return layers * (attention + 3 * hidden * ffn + 2 * hidden) + 2 * vocab * hidden + hidden


def with_parallel(cfg: TrainConfig, **changes: Any) -> dict[str, Any]:
    doc = cfg.to_dict()
    doc["parallel"].update(changes)
    return doc


# --- presets --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAILOR2)
def test_sailor2_presets_have_the_papers_sizes_and_stage1_recipe(name: str) -> None:
    cfg = preset_config(name, **PATHS)
    m = cfg.model
    assert (m.num_layers, m.hidden_size, m.ffn_hidden_size, m.num_attention_heads, m.num_query_groups,
            m.vocab_size) == SAILOR2_SHAPES[name]
    assert m.tie_embeddings is False
    assert cfg.preset == name
    assert m.seq_length == cfg.data.seq_length == 4096
    assert cfg.data.global_batch_size == 1024
    s = cfg.schedule
    assert s.lr == 1e-4
    assert s.warmup_steps == s.warmup == 500
    assert s.constant  # held to the end: constant after warmup
    # the name's size: 0.99B, 8.55B and 19.2B parameters
    nominal = float(name.split("-")[1].rstrip("b"))
    assert params(*SAILOR2_SHAPES[name]) / 1e9 == pytest.approx(nominal, rel=0.1)


def test_sailor2_20b_is_megatron_sailor2s_recipe() -> None:
    p = preset_config("sailor2-20b", **PATHS).parallel
    assert (p.devices_per_node, p.tensor_parallel, p.pipeline_parallel, p.sequence_parallel, p.recompute,
            p.distributed_optimizer, p.precision) == (8, 4, 2, True, "selective", True, "bf16-mixed")
    assert preset_config("sailor2-20b", **PATHS).data.micro_batch_size == 1


@pytest.mark.parametrize(("name", "devices", "nodes"), [
    ("sailor2-1b", 1, 1), ("sailor2-1b", 8, 1), ("sailor2-1b", 8, 4),
    ("sailor2-8b", 8, 1), ("sailor2-8b", 8, 2), ("sailor2-8b", 8, 8),
    ("sailor2-20b", 8, 1), ("sailor2-20b", 8, 4), ("sailor2-20b", 8, 16),
])
def test_presets_validate_for_their_device_counts(name: str, devices: int, nodes: int) -> None:
    cfg = preset_config(name, **PATHS, parallel={"devices_per_node": devices, "nodes": nodes})
    p = cfg.parallel
    assert p.world_size == devices * nodes
    # the section is merged key by key: the preset's model parallelism stays
    assert (p.tensor_parallel, p.pipeline_parallel) == (PRESETS[name].parallel.tensor_parallel,
                                                        PRESETS[name].parallel.pipeline_parallel)
    dp = devices * nodes // (p.tensor_parallel * p.pipeline_parallel * p.context_parallel)
    assert p.data_parallel == dp
    assert cfg.data.global_batch_size % (cfg.data.micro_batch_size * dp) == 0


def test_tiny_preset_is_the_defaults() -> None:
    assert TrainConfig.from_dict({"preset": "tiny"}) == TrainConfig(preset="tiny")
    assert preset_config("tiny").parallel == ParallelArgs()


def test_a_yaml_selects_a_preset_and_overrides_any_field(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"train": {
        "preset": "sailor2-8b", "name": "s2-8b", **PATHS,
        "schedule": {"max_steps": 2000, "warmup_ratio": 0.25, "hold_ratio": 0.75},
        "parallel": {"nodes": 2}, "data": {"lake": "/cluster/lake", "micro_batch_size": 2},
    }}), encoding="utf-8")
    cfg = TrainConfig.from_yaml(path)
    assert (cfg.preset, cfg.name, cfg.model.num_layers, cfg.model.hidden_size) == ("sailor2-8b", "s2-8b", 32, 3584)
    assert (cfg.schedule.max_steps, cfg.schedule.lr, cfg.schedule.weight_decay) == (2000, 1e-4, 0.01)
    assert (cfg.parallel.nodes, cfg.parallel.tensor_parallel, cfg.parallel.sequence_parallel) == (2, 2, True)
    assert (cfg.data.micro_batch_size, cfg.data.global_batch_size, cfg.data.seq_length) == (2, 1024, 4096)
    assert cfg.work_dir == Path("/cluster/work")
    # what the run records reads back to the same config
    assert TrainConfig.from_dict(yaml.safe_load(cfg.to_yaml())["train"]) == cfg


def test_an_unknown_preset_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"train": {"preset": "sailor2-3b", "seed": "x"}}), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_yaml(path)
    known = "tiny, sailor2-1b, sailor2-8b, sailor2-20b"
    assert f"train.preset: unknown preset 'sailor2-3b' (known: {known})" in str(err.value)
    assert "train.seed: expected int" in str(err.value)


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "overrides", "expected"), [
    ("sailor2-8b", {"parallel": {"devices_per_node": 1}},
     "parallel: devices_per_node × nodes = 1 × 1 = 1 devices is not divisible by tensor × pipeline × context "
     "parallel = 2 × 1 × 1 = 2"),
    ("sailor2-1b", {"data": {"global_batch_size": 1000}},
     "data.global_batch_size (1000) must be a multiple of data.micro_batch_size × data-parallel size = 2 × 8 = 16"),
    ("sailor2-1b", {"parallel": {"tensor_parallel": 4}},
     "model.num_attention_heads (14) must be divisible by parallel.tensor_parallel (4)"),
    ("sailor2-8b", {"parallel": {"tensor_parallel": 8}},
     "model.num_query_groups (4) must be divisible by parallel.tensor_parallel (8)"),
    ("sailor2-20b", {"parallel": {"pipeline_parallel": 3, "devices_per_node": 12}},
     "model.num_layers (64) must be divisible by parallel.pipeline_parallel (3)"),
    ("sailor2-1b", {"parallel": {"sequence_parallel": True}},
     "parallel.sequence_parallel needs parallel.tensor_parallel > 1"),
    ("sailor2-1b", {"parallel": {"context_parallel": 2}, "data": {"seq_length": 4094}},
     "data.seq_length (4094) must be divisible by 2 × parallel.context_parallel = 4"),
    ("sailor2-20b", {"data": {"seq_length": 4094}},
     "data.seq_length (4094) must be divisible by tensor × context parallel = 4 with parallel.sequence_parallel"),
    ("tiny", {"parallel": {"nodes": 0}}, "parallel.nodes: must be positive, got 0"),
])
def test_combinations_that_cannot_work_are_refused(name: str, overrides: dict[str, Any], expected: str) -> None:
    paths = PATHS if name != "tiny" else {}
    sections = {k: {**paths.get(k, {}), **v} if isinstance(v, dict) else v for k, v in overrides.items()}
    with pytest.raises(ConfigError) as err:
        preset_config(name, **{**paths, **sections})
    assert expected in str(err.value)


def test_every_problem_is_listed_at_once() -> None:
    doc = {**PATHS, "parallel": {"devices_per_node": 8, "tensor_parallel": 4, "sequence_parallel": True,
                                 "context_parallel": 3, "recompute": "some"},
           "data": {"lake": "/cluster/lake", "seq_length": 4090}}
    with pytest.raises(ConfigError) as err:
        preset_config("sailor2-1b", **doc)
    assert "parallel.recompute: expected one of 'none', 'selective', 'full', got 'some'" in str(err.value)
    del doc["parallel"]["recompute"]
    with pytest.raises(ConfigError) as err:
        preset_config("sailor2-1b", **doc)
    message = str(err.value)
    for expected in ("8 devices is not divisible by tensor × pipeline × context parallel = 4 × 1 × 3 = 12",
                     "model.num_attention_heads (14) must be divisible by parallel.tensor_parallel (4)",
                     "model.num_query_groups (2) must be divisible by parallel.tensor_parallel (4)",
                     "data.seq_length (4090) must be divisible by 2 × parallel.context_parallel = 6",
                     "data.seq_length (4090) must be divisible by tensor × context parallel = 12"):
        assert expected in message
    assert "5 problem(s)" in message


def test_megatron_refuses_what_validation_refuses_and_takes_the_presets() -> None:
    """Megatron-Core's own TransformerConfig checks (heads, groups, sequence parallel) agree."""
    import torch
    from megatron.core.transformer.transformer_config import TransformerConfig

    def megatron(cfg: TrainConfig) -> None:
        m, p = cfg.model, cfg.parallel
        TransformerConfig(num_layers=m.num_layers, hidden_size=m.hidden_size, ffn_hidden_size=m.ffn_hidden_size,
                          num_attention_heads=m.num_attention_heads, num_query_groups=m.num_query_groups,
                          tensor_model_parallel_size=p.tensor_parallel,
                          pipeline_model_parallel_size=p.pipeline_parallel,
                          context_parallel_size=p.context_parallel, sequence_parallel=p.sequence_parallel,
                          pipeline_dtype=torch.bfloat16, recompute_granularity=None if p.recompute == "none"
                          else p.recompute, recompute_method="uniform" if p.recompute == "full" else None,
                          recompute_num_layers=1 if p.recompute == "full" else None)

    for name in SAILOR2:
        megatron(preset_config(name, **PATHS))
    bad = [("sailor2-1b", {"tensor_parallel": 4}), ("sailor2-8b", {"tensor_parallel": 8}),
           ("sailor2-1b", {"sequence_parallel": True})]
    for name, change in bad:
        cfg = preset_config(name, **PATHS)
        with pytest.raises(ConfigError):
            TrainConfig.from_dict(with_parallel(cfg, **change))
        with pytest.raises(ValueError):
            megatron(dataclasses.replace(cfg, parallel=dataclasses.replace(cfg.parallel, **change)))


# --- the recipe -----------------------------------------------------------------------------------


def test_the_20b_gpu_recipe_passes_the_parallelism_to_nemo(tmp_path: Path) -> None:
    cfg = preset_config("sailor2-20b", **PATHS, parallel={"nodes": 4})
    recipe = build_recipe(cfg, blend(tmp_path), gpu=True)
    assert {k: recipe.strategy[k] for k in ("tensor_model_parallel_size", "pipeline_model_parallel_size",
                                            "context_parallel_size", "sequence_parallel")} == {
        "tensor_model_parallel_size": 4, "pipeline_model_parallel_size": 2, "context_parallel_size": 1,
        "sequence_parallel": True}
    assert (recipe.trainer["devices"], recipe.trainer["num_nodes"], recipe.trainer["accelerator"]) == (8, 4, "gpu")
    assert recipe.model["recompute_granularity"] == "selective"
    assert "recompute_method" not in recipe.model and "recompute_num_layers" not in recipe.model
    assert recipe.optimizer["use_distributed_optimizer"] is True
    assert recipe.precision == "bf16-mixed"
    assert (recipe.data["micro_batch_size"], recipe.data["global_batch_size"], recipe.data["seq_length"]) == (
        1, 1024, 4096)


def test_recompute_and_precision_choices(tmp_path: Path) -> None:
    full = preset_config("sailor2-8b", **PATHS, parallel={"recompute": "full", "precision": "16-mixed",
                                                          "distributed_optimizer": False})
    recipe = build_recipe(full, blend(tmp_path), gpu=True)
    assert {k: recipe.model[k] for k in ("recompute_granularity", "recompute_method", "recompute_num_layers")} == {
        "recompute_granularity": "full", "recompute_method": "uniform", "recompute_num_layers": 1}
    assert recipe.precision == "16-mixed"
    assert recipe.optimizer["use_distributed_optimizer"] is False
    none = build_recipe(TrainConfig(work_dir=tmp_path), blend(tmp_path), gpu=True)
    assert not any(k.startswith("recompute") for k in none.model)
    fp32 = TrainConfig(work_dir=tmp_path, parallel=ParallelArgs(precision="fp32"))
    assert build_recipe(fp32, blend(tmp_path), gpu=True).precision == "32"
    assert build_recipe(fp32, blend(tmp_path), gpu=False).precision == "32"


def test_gpu_only_settings_are_refused_on_a_cpu(tmp_path: Path) -> None:
    cfg = preset_config("sailor2-1b", **PATHS)
    with pytest.raises(ConfigError) as err:
        build_recipe(cfg, blend(tmp_path), gpu=False)
    message = str(err.value)
    assert "3 problem(s)" in message
    assert "parallel: 8 devices (devices_per_node × nodes) need GPUs" in message
    assert "parallel.precision: bf16-mixed is GPU only" in message
    assert "parallel.distributed_optimizer: Megatron's distributed optimizer is GPU only" in message
    # the tiny defaults pick what the machine has
    assert build_recipe(TrainConfig(work_dir=tmp_path), blend(tmp_path), gpu=False).precision == "32"


def test_nemo_takes_the_recipes_arguments(tmp_path: Path) -> None:
    """NeMo 2.7.3's constructors accept what the recipe says for the 8B and 20B presets (no model is built)."""
    import torch
    from megatron.core.optimizer import OptimizerConfig
    from nemo import lightning as nl
    from nemo.collections import llm

    for name in ("sailor2-8b", "sailor2-20b"):
        cfg = preset_config(name, **PATHS)
        recipe = build_recipe(cfg, blend(tmp_path), gpu=True)
        strategy = nl.MegatronStrategy(**recipe.strategy)
        assert strategy.parallelism.tensor_model_parallel_size == cfg.parallel.tensor_parallel
        assert strategy.parallelism.pipeline_model_parallel_size == cfg.parallel.pipeline_parallel
        assert strategy.parallelism.sequence_parallel is cfg.parallel.sequence_parallel
        plugin = nl.MegatronMixedPrecision(precision=recipe.precision)
        assert plugin.dtype_config.bf16 and plugin.dtype_config.pipeline_dtype == torch.bfloat16
        # the strategy copies its parallelism into the model config when it connects the model
        model = llm.Qwen2Config(**recipe.model, tensor_model_parallel_size=cfg.parallel.tensor_parallel,
                                pipeline_model_parallel_size=cfg.parallel.pipeline_parallel,
                                sequence_parallel=cfg.parallel.sequence_parallel, pipeline_dtype=torch.bfloat16)
        assert (model.num_layers, model.recompute_granularity) == (cfg.model.num_layers, "selective")
        assert OptimizerConfig(**recipe.optimizer).use_distributed_optimizer is True
