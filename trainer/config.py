"""The training configuration: what one `python -m trainer.pretrain --config x.yaml` run does.

One YAML file mirrors these dataclasses one-to-one (see configs/train_tiny.yaml). Loading is strict
— an unknown or misspelt key is an error, never silently ignored — because a typo in a learning
rate or a language weight would otherwise train the wrong model for days. All problems of a file
are reported together in one `ConfigError`, so a config is fixed in one edit, not one per launch.

Defaults are the tiny CPU model used by tests and the demo; the Sailor2 values they stand in for
are noted beside each field. `preset: <name>` starts from a named set-up instead (`trainer.presets`:
the Sailor2 1B/8B/20B sizes with their batch, schedule and parallelism), every other key
overriding it. `validate` refuses parallelism that cannot work (sizes that do not divide, a
global batch that is no multiple of micro-batch × data-parallel size, …) before any process
starts; what a config asks of the machine (GPUs) is checked where it runs (`machine_problems`).
"""

from __future__ import annotations

import copy
import dataclasses
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from data_engine.config import build, read_yaml, report
from data_engine.errors import ConfigError
from data_engine.tokenizer import QWEN_PADDED_VOCAB


@dataclass(frozen=True)
class ModelArgs:
    """A Qwen2 decoder (NeMo `Qwen2Config`): RMSNorm, SwiGLU, RoPE, QKV bias, grouped-query attention."""

    num_layers: int = 2  # Sailor2-1B: 48 (Qwen2.5-0.5B's 24 expanded by LlamaPro)
    hidden_size: int = 64  # Qwen2.5-0.5B: 896
    ffn_hidden_size: int = 128  # Qwen2.5-0.5B: 4864
    num_attention_heads: int = 4  # Qwen2.5-0.5B: 14
    num_query_groups: int = 2  # key/value heads; Qwen2.5-0.5B: 2
    seq_length: int = 128  # the longest context RoPE is set up for; Sailor2: 4096
    vocab_size: int = QWEN_PADDED_VOCAB  # the Qwen2 embedding size (151,643 tokens + specials, padded)
    tie_embeddings: bool = False  # share input embedding and output layer (Qwen2.5-0.5B does)


@dataclass(frozen=True)
class DataArgs:
    """Which shards to train on and in what proportions; see `trainer.data.blend_from_manifest`,
    or `trainer.data.blend_from_data_config` when `paths_file` is set."""

    lake: Path = Path("lake")  # the Delta lake root holding the `shard_manifest` table
    stage: str = "stage1"  # rows of the manifest to use (Sailor2: stage1 broad mix, stage2 anneal)
    weights: dict[str, float] | None = None  # lang → weight, normalised; None: by token count
    tokenizer: str = "qwen2.5"  # must be the one the shards were written with (digest is checked)
    seq_length: int = 128  # tokens per training sample; Sailor2: 4096
    micro_batch_size: int = 2  # samples per forward pass on one device
    global_batch_size: int = 4  # samples per optimizer step; Sailor2: 1024
    split: str = "98,2,0"  # train,validation,test shares of every shard's documents
    num_workers: int = 0  # data loader processes per device; 2–8 on a GPU node
    # Extra samples Megatron indexes per language beyond its blend share (its default 0.005 is
    # below one sample on small validation sets, where the blend's rounding asks for one more).
    dataset_surplus: float = 0.1
    # A NeMo data config written by `export_shards --plan` (`<out>/<stage>.data.yaml`): its paths
    # are the blend as they are, and `stage`/`weights` are not used (weights must stay null).
    paths_file: Path | None = None


@dataclass(frozen=True)
class ScheduleArgs:
    """AdamW with a warmup-hold-anneal (WSD) learning rate.

    Sailor2 stage 1 trains at a constant 1e-4 after 500 warmup steps (hold until the end); stage 2
    anneals at a 10× lower rate. The defaults are stage 1's shape on a 10-step run.
    """

    lr: float = 1e-4  # peak rate, held after warmup; Sailor2 stage 1: 1e-4, stage 2: 1e-5
    min_lr: float = 1e-5  # where the anneal ends
    warmup_ratio: float = 0.1  # share of max_steps warming up linearly (when warmup_steps is null)
    warmup_steps: int | None = None  # warmup in optimizer steps, instead of warmup_ratio; Sailor2: 500
    hold_ratio: float = 0.9  # share of max_steps at `lr` after warmup; 1 - warmup_ratio: no anneal
    decay: Literal["linear", "one_minus_square_root"] = "linear"  # anneal shape
    max_steps: int = 10  # optimizer steps of the whole run
    weight_decay: float = 0.1
    clip_grad: float = 1.0  # max global gradient norm; 0 turns clipping off

    @property
    def warmup(self) -> int:
        """Warmup in optimizer steps: `warmup_steps`, else `warmup_ratio` of the run."""
        return self.warmup_steps if self.warmup_steps is not None else int(self.warmup_ratio * self.max_steps)

    @property
    def hold(self) -> int:
        """Steps at the peak rate after warmup (`hold_ratio` of the run, at most what is left)."""
        return min(int(self.hold_ratio * self.max_steps), self.max_steps - self.warmup)

    @property
    def constant(self) -> bool:
        """No anneal: the rate stays at its peak after warmup until the end (Sailor2 stage 1)."""
        return self.warmup + self.hold >= self.max_steps


@dataclass(frozen=True)
class ParallelArgs:
    """How one run spreads over devices (Megatron's tensor, pipeline, context and data parallelism).

    The data-parallel size is what remains: devices_per_node · nodes / (tensor · pipeline · context).
    The defaults are one device, which is what the tiny CPU model uses; `trainer.presets` gives the
    Sailor2 sizes theirs. On a CPU only one device, fp32 and the plain optimizer exist: `auto`
    precision and an unset distributed optimizer pick those there and bf16 / the distributed
    optimizer on a GPU (what the trainer did before this section existed); set explicitly, the
    GPU-only ones are refused on a CPU (`machine_problems`).
    """

    devices_per_node: int = 1  # GPUs per node (one training process each); Sailor2: 8
    nodes: int = 1
    tensor_parallel: int = 1  # splits every layer's matrices; must divide heads and query groups
    pipeline_parallel: int = 1  # splits the layers into stages; must divide num_layers
    context_parallel: int = 1  # splits each sequence; needs transformer_engine (GPU)
    sequence_parallel: bool = False  # shards norms/dropout activations over the TP ranks (TP > 1)
    recompute: Literal["none", "selective", "full"] = "none"  # activation recomputation; Sailor2-20B: selective
    distributed_optimizer: bool | None = None  # shard optimizer state over data parallel; None: on GPU
    precision: Literal["auto", "fp32", "bf16-mixed", "16-mixed"] = "auto"  # auto: bf16-mixed on GPU, fp32 on CPU

    @property
    def world_size(self) -> int:
        return self.devices_per_node * self.nodes

    @property
    def model_parallel(self) -> int:
        """Devices holding one copy of the model."""
        return self.tensor_parallel * self.pipeline_parallel * self.context_parallel

    @property
    def data_parallel(self) -> int:
        return self.world_size // self.model_parallel


@dataclass(frozen=True)
class TrainConfig:
    """One training run: model, data, schedule, and where its outputs go."""

    # A named starting point (`trainer.presets`: tiny, sailor2-1b, sailor2-8b, sailor2-20b); every
    # field given beside it overrides the preset's value. Recorded so a run says where it came from.
    preset: str | None = None
    name: str = "tiny"  # names the checkpoint folder; a rerun under the same name resumes there
    work_dir: Path = Path("work")  # checkpoints, MLflow store (unless MLFLOW_TRACKING_URI), caches
    checkpoint_dir: Path | None = None  # None: <work_dir>/checkpoints/<name>
    # Stage 2: a checkpoint, or a run's checkpoint folder (its newest `*-last`), whose weights start
    # this run; optimizer and schedule start fresh.
    restore_from: Path | None = None
    # Train only the decoder layers LlamaPro added (the LlamaPro paper freezes the others; Sailor2
    # trained every parameter). The new layers are read from restore_from's lineage: the import
    # record of an expanded model (`sailyard expand` → `sailyard import-hf`), or the run it came from.
    train_only_new_blocks: bool = False
    seed: int = 1234
    val_check_interval: int = 5  # validate and checkpoint every N steps
    keep_checkpoints: int = 0  # periodic checkpoints kept besides the newest (`*-last`) one
    limit_val_batches: int = 2  # batches per validation
    log_every_n_steps: int = 1
    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    schedule: ScheduleArgs = field(default_factory=ScheduleArgs)
    parallel: ParallelArgs = field(default_factory=ParallelArgs)

    def __post_init__(self) -> None:
        # Relative paths resolve once, against the current directory, so a later chdir (by a
        # launcher, say) changes nothing.
        for name in ("work_dir", "checkpoint_dir", "restore_from"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value).expanduser().absolute())
        paths_file = self.data.paths_file
        object.__setattr__(self, "data", dataclasses.replace(
            self.data, lake=Path(self.data.lake).expanduser().absolute(),
            paths_file=Path(paths_file).expanduser().absolute() if paths_file is not None else None))

    @property
    def checkpoints(self) -> Path:
        """Where this run writes its checkpoints."""
        return self.checkpoint_dir or self.work_dir / "checkpoints" / self.name

    @classmethod
    def from_yaml(cls, path: str | Path, *, local_files: bool = True) -> TrainConfig:
        """Load and validate a YAML config; a top-level `train:` section is used if present.

        `local_files=False` skips checking that files named in the config exist here (a config
        submitted to a cluster names files on the cluster).

        Raises:
            ConfigError: the file is unreadable, has unknown keys or wrong types, or fails
                `validate()`; the message lists every problem found.
        """
        doc, where = read_section(path, "train")
        return cls.from_dict(doc if doc is not None else {}, where=where, source=str(path), local_files=local_files)

    @classmethod
    def from_dict(cls, doc: Any, *, where: str = "", source: str = "config", local_files: bool = True) -> TrainConfig:
        """Build from plain data (parsed YAML), checking keys and types; then `validate()`.

        A `preset` key starts from that preset's values (`trainer.presets`); the other keys override
        them, section by section.
        """
        problems: list[str] = []
        cfg = build(cls, _apply_preset(doc, where, problems), where, problems)
        if problems:
            raise ConfigError(report(source, problems))
        assert isinstance(cfg, TrainConfig)
        cfg.validate(source=source, local_files=local_files)
        return cfg

    def validate(self, *, source: str = "config", local_files: bool = True) -> None:
        """Check the values against each other (machine-independent; see `machine_problems`).

        Raises:
            ConfigError: listing every problem, one per line.
        """
        problems = [*_check_model(self.model), *_check_data(self.data, self.model, local_files=local_files),
                    *_check_schedule(self.schedule), *_check_parallel(self.parallel, self.model, self.data)]
        if self.preset is not None:
            from trainer.presets import PRESETS

            if self.preset not in PRESETS:
                problems.append(f"preset: unknown preset {self.preset!r} (known: {', '.join(PRESETS)})")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            problems.append(f"name: {self.name!r} must be a plain folder name (letters, digits, . _ -)")
        for key in ("seed", "val_check_interval", "log_every_n_steps"):
            if getattr(self, key) <= 0:
                problems.append(f"{key}: must be positive, got {getattr(self, key)}")
        if self.keep_checkpoints < 0:
            problems.append(f"keep_checkpoints: must be 0 or more, got {self.keep_checkpoints}")
        if self.limit_val_batches < 0:
            problems.append(f"limit_val_batches: must be 0 (no validation) or more, "
                            f"got {self.limit_val_batches}")
        if local_files and self.restore_from is not None and not self.restore_from.is_dir():
            problems.append(f"restore_from: no checkpoint directory at {self.restore_from}")
        if self.train_only_new_blocks and self.restore_from is None:
            problems.append("train_only_new_blocks: needs restore_from (an imported LlamaPro expansion, or a run "
                            "started from one): a model trained from scratch has no new blocks")
        if problems:
            raise ConfigError(report(source, problems))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (paths as strings) that `from_dict` reads back; also the MLflow params."""
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump({"train": self.to_dict()}, sort_keys=False, allow_unicode=True)


def _check_model(m: ModelArgs) -> list[str]:
    ints = [name for name, hint in typing.get_type_hints(ModelArgs).items() if hint is int]
    problems = [f"model.{name}: must be positive, got {getattr(m, name)}"
                for name in ints if getattr(m, name) <= 0]
    if problems:
        return problems
    if m.hidden_size % m.num_attention_heads:
        problems.append(f"model.hidden_size ({m.hidden_size}) must be divisible by "
                        f"model.num_attention_heads ({m.num_attention_heads})")
    if m.num_attention_heads % m.num_query_groups:
        problems.append(f"model.num_attention_heads ({m.num_attention_heads}) must be divisible by "
                        f"model.num_query_groups ({m.num_query_groups})")
    return problems


def _check_data(d: DataArgs, m: ModelArgs, *, local_files: bool = True) -> list[str]:
    problems = []
    if not d.stage:
        problems.append("data.stage: must not be empty")
    if d.weights is not None:
        if not d.weights:
            problems.append("data.weights: empty; leave it out to weight languages by token count")
        problems += [f"data.weights.{lang}: must be positive, got {w}"
                     for lang, w in d.weights.items() if not w > 0]
    if d.paths_file is not None:
        if d.weights is not None:
            problems.append("data.weights: must be null with data.paths_file, whose paths carry the weights")
        if local_files and not Path(d.paths_file).is_file():
            problems.append(f"data.paths_file: no data config at {d.paths_file} (export_shards --plan writes "
                            "<out>/<stage>.data.yaml)")
    for key in ("seq_length", "micro_batch_size", "global_batch_size"):
        if getattr(d, key) <= 0:
            problems.append(f"data.{key}: must be positive, got {getattr(d, key)}")
    if d.num_workers < 0:
        problems.append(f"data.num_workers: must be 0 or more, got {d.num_workers}")
    if d.dataset_surplus < 0:
        problems.append(f"data.dataset_surplus: must be 0 or more, got {d.dataset_surplus}")
    if d.micro_batch_size > 0 and d.global_batch_size % d.micro_batch_size:
        problems.append(f"data.global_batch_size ({d.global_batch_size}) must be a multiple of "
                        f"data.micro_batch_size ({d.micro_batch_size})")
    if d.seq_length > m.seq_length:
        problems.append(f"data.seq_length ({d.seq_length}) exceeds model.seq_length ({m.seq_length})")
    parts = d.split.split(",")
    if len(parts) != 3 or not all(re.fullmatch(r"\d+(\.\d+)?", p.strip()) for p in parts):
        problems.append(f"data.split: expected three non-negative numbers 'train,validation,test', "
                        f"got {d.split!r}")
    elif float(parts[0]) <= 0:
        problems.append(f"data.split: the train share must be positive, got {d.split!r}")
    return problems


def _check_schedule(s: ScheduleArgs) -> list[str]:
    problems = []
    if s.max_steps <= 0:
        problems.append(f"schedule.max_steps: must be positive, got {s.max_steps}")
    if not s.lr > 0:
        problems.append(f"schedule.lr: must be positive, got {s.lr}")
    if not 0 <= s.min_lr <= s.lr:
        problems.append(f"schedule.min_lr: must be between 0 and lr ({s.lr}), got {s.min_lr}")
    for key in ("warmup_ratio", "hold_ratio"):
        if not 0 <= getattr(s, key) <= 1:
            problems.append(f"schedule.{key}: must be between 0 and 1, got {getattr(s, key)}")
    if s.warmup_steps is not None:
        # At or past max_steps the whole run warms up (a short smoke test of a preset): allowed.
        if s.warmup_steps < 0:
            problems.append(f"schedule.warmup_steps: must be 0 or more, got {s.warmup_steps}")
    elif s.warmup_ratio + s.hold_ratio > 1:
        problems.append(f"schedule: warmup_ratio + hold_ratio = {s.warmup_ratio + s.hold_ratio:g} "
                        "exceeds 1")
    if s.weight_decay < 0:
        problems.append(f"schedule.weight_decay: must be 0 or more, got {s.weight_decay}")
    if s.clip_grad < 0:
        problems.append(f"schedule.clip_grad: must be 0 (off) or more, got {s.clip_grad}")
    return problems



def _check_parallel(p: ParallelArgs, m: ModelArgs, d: DataArgs) -> list[str]:
    """What Megatron would refuse, or get wrong, only once every process had started."""
    sizes = ("devices_per_node", "nodes", "tensor_parallel", "pipeline_parallel", "context_parallel")
    problems = [f"parallel.{key}: must be positive, got {getattr(p, key)}" for key in sizes if getattr(p, key) <= 0]
    if problems:
        return problems
    tp, pp, cp = p.tensor_parallel, p.pipeline_parallel, p.context_parallel
    if p.world_size % p.model_parallel:
        problems.append(f"parallel: devices_per_node × nodes = {p.devices_per_node} × {p.nodes} = {p.world_size} "
                        f"devices is not divisible by tensor × pipeline × context parallel = "
                        f"{tp} × {pp} × {cp} = {p.model_parallel}")
    elif (p.data_parallel > 1 and d.micro_batch_size > 0
          and d.global_batch_size % (d.micro_batch_size * p.data_parallel)):
        problems.append(f"data.global_batch_size ({d.global_batch_size}) must be a multiple of "
                        f"data.micro_batch_size × data-parallel size = {d.micro_batch_size} × {p.data_parallel} = "
                        f"{d.micro_batch_size * p.data_parallel} (data-parallel size = {p.world_size} devices "
                        f"/ (TP {tp} × PP {pp} × CP {cp}))")
    # Each tensor-parallel rank holds whole attention heads, key/value groups and equal slices of the
    # MLP and of the embedding.
    for key in ("num_attention_heads", "num_query_groups", "ffn_hidden_size", "vocab_size"):
        value = getattr(m, key)
        if value > 0 and value % tp:
            problems.append(f"model.{key} ({value}) must be divisible by parallel.tensor_parallel ({tp})")
    if m.num_layers > 0 and m.num_layers % pp:
        problems.append(f"model.num_layers ({m.num_layers}) must be divisible by parallel.pipeline_parallel ({pp}): "
                        "Megatron gives every pipeline stage the same number of layers unless told how to split "
                        "unevenly (num_layers_in_first/last_pipeline_stage), which this config does not set")
    if p.sequence_parallel and tp == 1:
        problems.append("parallel.sequence_parallel needs parallel.tensor_parallel > 1 (it shards activations "
                        "over the tensor-parallel ranks)")
    if cp > 1 and d.seq_length % (2 * cp):
        problems.append(f"data.seq_length ({d.seq_length}) must be divisible by 2 × parallel.context_parallel = "
                        f"{2 * cp} (context parallelism cuts each sequence into 2·CP chunks)")
    if p.sequence_parallel and tp > 1 and d.seq_length % (tp * cp):
        problems.append(f"data.seq_length ({d.seq_length}) must be divisible by tensor × context parallel = "
                        f"{tp * cp} with parallel.sequence_parallel (each rank holds an equal slice of the sequence)")
    return problems


def machine_problems(p: ParallelArgs, *, gpu: bool) -> list[str]:
    """What `p` asks of the machine that this one cannot do; empty on a GPU machine.

    Kept apart from `TrainConfig.validate` because a config is checked where it is written (a laptop
    submitting to a cluster), and the machine only where it runs.
    """
    if gpu:
        return []
    problems = []
    if p.world_size > 1:
        problems.append(f"parallel: {p.world_size} devices (devices_per_node × nodes) need GPUs; on a CPU train "
                        "on one device (devices_per_node: 1, nodes: 1)")
    if p.precision in ("bf16-mixed", "16-mixed"):
        problems.append(f"parallel.precision: {p.precision} is GPU only; on a CPU use fp32 (or auto)")
    if p.distributed_optimizer:
        problems.append("parallel.distributed_optimizer: Megatron's distributed optimizer is GPU only; on a CPU "
                        "set it false (or null)")
    return problems


def read_section(path: str | Path, section: str) -> tuple[Any, str]:
    """The `section:` part of a YAML file and its name, or the whole file (and "") if it has none.

    Raises:
        ConfigError: the file is unreadable or not YAML.
    """
    path = Path(path)
    doc = read_yaml(path, "config")
    if isinstance(doc, Mapping) and section in doc:
        return doc[section], section
    return doc, ""


#: The fields holding a nested section: a preset's values there are overridden key by key.
SECTIONS = ("model", "data", "schedule", "parallel")


def _apply_preset(doc: Any, where: str, problems: list[str]) -> Any:
    """`doc` laid over its preset's values (`doc` itself when it names none)."""
    if not isinstance(doc, Mapping) or doc.get("preset") is None:
        return doc
    from trainer.presets import PRESETS, preset_doc  # presets are built from this module's classes

    name = doc["preset"]
    if not isinstance(name, str) or name not in PRESETS:
        problems.append(f"{where + '.' if where else ''}preset: unknown preset {name!r} "
                        f"(known: {', '.join(PRESETS)})")
        return {k: v for k, v in doc.items() if k != "preset"}
    merged = preset_doc(name)
    schedule = doc.get("schedule")
    if isinstance(schedule, Mapping) and "warmup_ratio" in schedule and "warmup_steps" not in schedule:
        # The file's warmup_ratio replaces the preset's warmup steps; a constant preset stays constant.
        merged["schedule"]["warmup_steps"] = None
        if "hold_ratio" not in schedule and isinstance(schedule["warmup_ratio"], int | float):
            merged["schedule"]["hold_ratio"] = max(0.0, 1.0 - schedule["warmup_ratio"])
    return overlay(merged, doc)


def overlay(doc: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` laid on `doc`: the nested sections (model, data, schedule, parallel) key by key, other
    keys replaced. Neither input is changed (a preset under a file, stage 2's section over stage 1's)."""
    out = copy.deepcopy(dict(doc))
    for key, value in over.items():
        if key in SECTIONS and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = {**out[key], **copy.deepcopy(dict(value))}
        else:
            out[key] = copy.deepcopy(value)
    return out


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj
