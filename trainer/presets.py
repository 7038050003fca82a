"""Named training set-ups: a model size with the batch, schedule and parallelism that fit it.

A train config selects one with `preset: sailor2-8b` and overrides any field beside it (section by
section: `parallel: {nodes: 4}` keeps the preset's tensor parallelism); `TrainConfig.preset`
records the choice.

    tiny         the CPU model of the tests and the demo (`TrainConfig()`'s defaults)
    sailor2-1b   Qwen2.5-0.5B grown by LlamaPro from 24 to 48 layers
    sailor2-8b   Qwen2.5-7B, 28 → 32 layers
    sailor2-20b  Qwen2.5-14B, 48 → 64 layers

The Sailor2 ones share Sailor2's stage-1 recipe: sequences of 4,096 tokens, 1,024 per optimizer
step (4.2M tokens), AdamW at a constant 1e-4 after 500 warmup steps, weight decay 0.01 (from
Megatron-Sailor2's run_train_sailor2_20b.sh, whose 100,000 iterations give `max_steps`; `sailyard
train --plan` replaces them by the plan's token budget in steps). Each
is sized for one node of eight 80 GB GPUs; `parallel.nodes` scales the data-parallel size (the
global batch stays a multiple of micro × data-parallel for 1, 2, 4, 8 … nodes).

Memory arithmetic behind the parallelism (bf16 weights and gradients 4 bytes a parameter, the
distributed optimizer's fp32 master copy and Adam moments 12 bytes a parameter divided over
data parallel; activations with flash attention ≈ 34·seq·hidden bytes a layer and sample, divided
by TP with sequence parallelism; fp32 logits and their gradient 8·seq·vocab bytes a sample / TP):

    1B   0.99B params: 4 GB + 12 GB/8 + 2 samples × (6 GB activations + 5 GB logits) ≈ 28 GB.
         One GPU holds a replica, so no tensor parallelism (896-wide matrices are too small to
         split well, and 14 heads allow only TP 2): data parallel over all 8.
    8B   8.55B params: one replica needs ~150 GB with a plain optimizer. TP 2 + the distributed
         optimizer over DP 4: 17 GB + 13 GB + 8 GB activations + 2.5 GB logits ≈ 41 GB. TP 4
         would also fit, with twice the tensor-parallel traffic and half the data parallelism.
    20B  19.2B params: Megatron-Sailor2's recipe, TP 4 × PP 2 on 8 GPUs: 10 GB weights and
         gradients + 29 GB optimizer (DP 1 on one node; 7 GB at 4 nodes) + 11 GB activations for
         the two micro-batches the first pipeline stage holds + 1 GB logits ≈ 51 GB.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from trainer.config import DataArgs, ModelArgs, ParallelArgs, ScheduleArgs, TrainConfig


@dataclass(frozen=True)
class Preset:
    """One named set-up; `preset_doc` turns it into the config values it stands for."""

    name: str
    base_model: str  # the Hugging Face model LlamaPro expands into this one; "" for none
    base_layers: int  # its layers before the expansion (model.num_layers after it)
    model: ModelArgs
    data: DataArgs  # only the batch fields and num_workers are taken (paths and blend are the run's)
    schedule: ScheduleArgs
    parallel: ParallelArgs
    val_check_interval: int = 5
    limit_val_batches: int = 2
    keep_checkpoints: int = 0
    why: str = ""  # the parallelism's reason, in one line (the module docstring has the arithmetic)
    notes: tuple[str, ...] = field(default_factory=tuple)


#: The DataArgs fields a preset sets; the rest (lake, stage, weights, paths_file, …) are the run's.
PRESET_DATA_FIELDS = ("seq_length", "micro_batch_size", "global_batch_size", "num_workers")

# Sailor2 stage 1 (Megatron-Sailor2 run_train_sailor2_20b.sh): lr 1e-4 constant after 500 warmup
# iterations of 100,000, min_lr 5e-6 (unused by a constant schedule), weight decay 0.01, clip 1.
SAILOR2_STAGE1 = ScheduleArgs(lr=1e-4, min_lr=5e-6, warmup_ratio=0.0, warmup_steps=500, hold_ratio=1.0, decay="linear",
                              max_steps=100_000, weight_decay=0.01, clip_grad=1.0)
SAILOR2_DATA = DataArgs(seq_length=4096, micro_batch_size=1, global_batch_size=1024, num_workers=2)
EIGHT_GPUS = ParallelArgs(devices_per_node=8, nodes=1, precision="bf16-mixed", distributed_optimizer=True)


def _sailor2(name: str, base: str, base_layers: int, model: ModelArgs, parallel: ParallelArgs, *,
             micro_batch_size: int, why: str) -> Preset:
    return Preset(name=name, base_model=base, base_layers=base_layers, model=model,
                  data=dataclasses.replace(SAILOR2_DATA, micro_batch_size=micro_batch_size),
                  schedule=SAILOR2_STAGE1, parallel=parallel, val_check_interval=500, limit_val_batches=8,
                  keep_checkpoints=2, why=why)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(name="tiny", base_model="", base_layers=ModelArgs().num_layers, model=ModelArgs(), data=DataArgs(),
                   schedule=ScheduleArgs(), parallel=ParallelArgs(),
                   why="one CPU device: tests and the demo"),
    "sailor2-1b": _sailor2(
        "sailor2-1b", "Qwen/Qwen2.5-0.5B", 24,
        ModelArgs(num_layers=48, hidden_size=896, ffn_hidden_size=4864, num_attention_heads=14, num_query_groups=2,
                  seq_length=4096, vocab_size=151936, tie_embeddings=False),
        dataclasses.replace(EIGHT_GPUS, recompute="none"), micro_batch_size=2,
        why="a replica fits one GPU (≈28 GB at micro-batch 2): pure data parallelism, optimizer sharded over it"),
    "sailor2-8b": _sailor2(
        "sailor2-8b", "Qwen/Qwen2.5-7B", 28,
        ModelArgs(num_layers=32, hidden_size=3584, ffn_hidden_size=18944, num_attention_heads=28, num_query_groups=4,
                  seq_length=4096, vocab_size=152064, tie_embeddings=False),
        dataclasses.replace(EIGHT_GPUS, tensor_parallel=2, sequence_parallel=True, recompute="selective"),
        micro_batch_size=1,
        why="TP 2 + sequence parallel + the distributed optimizer over DP 4 (≈41 GB a GPU); TP 4 also fits"),
    "sailor2-20b": _sailor2(
        "sailor2-20b", "Qwen/Qwen2.5-14B", 48,
        ModelArgs(num_layers=64, hidden_size=5120, ffn_hidden_size=13824, num_attention_heads=40, num_query_groups=8,
                  seq_length=4096, vocab_size=152064, tie_embeddings=False),
        dataclasses.replace(EIGHT_GPUS, tensor_parallel=4, pipeline_parallel=2, sequence_parallel=True,
                            recompute="selective"),
        micro_batch_size=1,
        why="Megatron-Sailor2's recipe: TP 4, PP 2, sequence parallel, selective recompute, distributed optimizer"),
}


def preset_doc(name: str) -> dict[str, Any]:
    """The config values preset `name` stands for, as plain data `TrainConfig.from_dict` reads.

    Raises:
        KeyError: no such preset.
    """
    p = PRESETS[name]
    return {
        "preset": name, "name": p.name, "val_check_interval": p.val_check_interval,
        "limit_val_batches": p.limit_val_batches, "keep_checkpoints": p.keep_checkpoints,
        "model": dataclasses.asdict(p.model),
        "data": {key: getattr(p.data, key) for key in PRESET_DATA_FIELDS},
        "schedule": dataclasses.asdict(p.schedule),
        "parallel": dataclasses.asdict(p.parallel),
    }


def preset_config(name: str, **overrides: Any) -> TrainConfig:
    """The validated `TrainConfig` of preset `name` with `overrides` (config keys → values) laid over it.

    Raises:
        ConfigError: an unknown preset, or overrides the preset cannot take.
    """
    return TrainConfig.from_dict({"preset": name, **overrides}, source=f"preset {name}")
