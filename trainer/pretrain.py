"""Pretrain a Qwen2 model with NeMo 2 on the lake's Megatron shards.

    python -m trainer.pretrain --config configs/train_tiny.yaml [--max-steps N] [--work-dir DIR]
    python -m trainer.pretrain --config Y --launch [--dry-run]    (NeMo-Run: see trainer.launch)
    python -m trainer.pretrain --stage 1|2 --plan plan.yaml [--config Y]   (a plan's stage: trainer.stages)

The run reads in the order it happens:

    setup(cfg)          check the config, pick GPU or CPU (CPU: apply trainer.cpu_patches), read the
                        shard manifest into a blend, build the tokenizer
    build_recipe(...)   pure: every NeMo argument as plain values, testable without NeMo
    run(...)            build the NeMo objects from the recipe and call `llm.pretrain`

`pretrain(cfg)` chains them inside an MLflow run (child of $SAILYARD_PARENT_RUN_ID when set), into
which Lightning's `MLFlowLogger` writes the training curves. Stage 2 is the same command with
`restore_from` set: weights come from the stage-1 checkpoint, the optimizer and schedule start
fresh (Sailor2 anneals stage 2 at its own, lower learning rate). A rerun under the same `name`
resumes from that run's newest checkpoint, optimizer included: a preempted job, or a longer
`--max-steps`.

The last line on stdout is the job summary (`data_engine.jobrun`); NeMo's own output goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_engine import tracking
from data_engine.config import report
from data_engine.errors import ConfigError
from data_engine.jobrun import run_job
from data_engine.tables import SHARD_MANIFEST
from trainer import checkpoints
from trainer.config import ModelArgs, ParallelArgs, ScheduleArgs, TrainConfig, machine_problems
from trainer.data import Blend, blend_from_data_config, blend_from_manifest

JOB = "train"


@dataclass(frozen=True)
class Prepared:
    """What `setup` found out about the machine and the data."""

    cfg: TrainConfig
    blend: Blend
    tokenizer: Any  # a NeMo TokenizerSpec
    gpu: bool
    lineage: dict[str, Any] | None = None  # restore_from's base model and expansion (checkpoints.lineage)


@dataclass(frozen=True)
class Recipe:
    """Every argument NeMo is built from, as plain values.

    Each field holds the keyword arguments of one NeMo/Megatron constructor, named in its comment;
    `run` adds only what cannot be plain data (the tokenizer, the MLflow logger).
    """

    model: dict[str, Any]  # llm.Qwen2Config
    data: dict[str, Any]  # llm.PreTrainingDataModule
    optimizer: dict[str, Any]  # megatron.core.optimizer.OptimizerConfig
    scheduler: dict[str, Any]  # WarmupHoldPolicyScheduler ("constant") or WarmupHoldAnnealScheduler ("anneal")
    strategy: dict[str, Any]  # nl.MegatronStrategy
    precision: str  # nl.MegatronMixedPrecision
    trainer: dict[str, Any]  # nl.Trainer
    checkpoint: dict[str, Any]  # nl.ModelCheckpoint
    log_dir: Path  # NeMoLogger(explicit_log_dir=...): NeMo's text logs
    seed: int  # lightning.seed_everything: weight init and dropout (NeMo alone always uses 1234)
    resume: dict[str, Any]  # nl.AutoResume; its "restore_config" holds nl.RestoreConfig's or None
    trainable_layers: tuple[int, ...] | None = None  # decoder layers that train (None: every parameter)
    model_args: ModelArgs = ModelArgs()  # for the throughput callback's FLOPs
    throughput: dict[str, Any] = dataclasses.field(default_factory=dict)  # trainer.throughput.callback


@dataclass(frozen=True)
class Outcome:
    """Where the run got to."""

    steps: int  # the global step reached, counting steps of a run this one resumed
    final_train_loss: float | None  # None when a resumed run had no steps left
    checkpoint: Path | None
    resumed_from: Path | None


# --- setup --------------------------------------------------------------------------------------


def setup(cfg: TrainConfig) -> Prepared:
    """Validate `cfg`, prepare this machine, and resolve the data; no training yet.

    The returned config names the exact checkpoint `restore_from` resolved to.

    Raises:
        ConfigError: an invalid config, manifest or tokenizer (see `blend_from_manifest`).
    """
    cfg.validate()
    lineage = None
    if cfg.restore_from is not None:
        cfg = dataclasses.replace(cfg, restore_from=resolve_checkpoint(cfg.restore_from))
        lineage = checkpoints.lineage(cfg.restore_from)
    trainable_layers(cfg, lineage)  # a switch that cannot apply fails before NeMo starts
    if cfg.data.paths_file is not None:  # a plan's data config: its paths as they are
        blend = blend_from_data_config(cfg.data.lake, cfg.data.paths_file, tokenizer=cfg.data.tokenizer,
                                       split=cfg.data.split)
    else:
        blend = blend_from_manifest(cfg.data.lake, cfg.data.stage, cfg.data.weights,
                                    tokenizer=cfg.data.tokenizer, split=cfg.data.split)
    from trainer import cpu_patches  # imports torch: not at module level, see the note at the end

    gpu = not cpu_patches.apply()  # only without a GPU; before NeMo is imported (next line)
    from trainer.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(cfg.data.tokenizer, vocab_size=cfg.model.vocab_size)
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    return Prepared(cfg=cfg, blend=blend, tokenizer=tokenizer, gpu=gpu, lineage=lineage)


def trainable_layers(cfg: TrainConfig, lineage: dict[str, Any] | None) -> tuple[int, ...] | None:
    """The decoder layers `train_only_new_blocks` trains (None: all parameters train).

    Raises:
        ConfigError: the switch is on but restore_from's lineage records no LlamaPro expansion, or
            one of another depth than the model.
    """
    if not cfg.train_only_new_blocks:
        return None
    expansion = (lineage or {}).get("expansion")
    if not expansion or not expansion.get("new_layer_indices"):
        raise ConfigError(f"train_only_new_blocks: restore_from ({cfg.restore_from}) records no LlamaPro expansion "
                          "(no sailyard_import.json of an expanded model, nor a run started from one); "
                          "expand with `sailyard expand`, import with `sailyard import-hf`, and restore from that")
    if expansion.get("new_layers") != cfg.model.num_layers:
        raise ConfigError(f"train_only_new_blocks: the expansion made {expansion.get('new_layers')} layers, the "
                          f"model has model.num_layers = {cfg.model.num_layers}")
    return tuple(int(i) for i in expansion["new_layer_indices"])


def resolve_checkpoint(path: Path) -> Path:
    """`path` if it is a NeMo checkpoint, else the newest `*-last` checkpoint inside it.

    Lets a stage-2 config name the stage-1 run's checkpoint folder instead of a folder name that
    embeds the step count.
    """
    if (path / "weights").is_dir():
        return path
    last = sorted((p for p in path.glob("*-last") if (p / "weights").is_dir()),
                  key=lambda p: p.stat().st_mtime)
    if not last:
        raise ConfigError(f"restore_from: {path} is neither a NeMo checkpoint (no weights/ inside) "
                          "nor a folder holding a '*-last' checkpoint")
    return last[-1]


# --- the recipe (pure) --------------------------------------------------------------------------


def build_recipe(cfg: TrainConfig, blend: Blend, *, gpu: bool, lineage: dict[str, Any] | None = None) -> Recipe:
    """Translate the config into NeMo's arguments. Pure: reads nothing, imports no NeMo.

    Raises:
        ConfigError: the config's parallelism asks for what this machine lacks (`gpu=False` and
            several devices, bf16 or the distributed optimizer), every problem listed.
    """
    m, d, s, par = cfg.model, cfg.data, cfg.schedule, cfg.parallel
    problems = machine_problems(par, gpu=gpu)
    if problems:
        raise ConfigError(report(f"config on this {'GPU' if gpu else 'CPU'} machine", problems))
    # Lightning refuses an interval longer than the run; a short run (--max-steps 3, say) still
    # validates and checkpoints once, at its end.
    val_every = min(cfg.val_check_interval, s.max_steps)
    model = dict(
        num_layers=m.num_layers, hidden_size=m.hidden_size, ffn_hidden_size=m.ffn_hidden_size,
        num_attention_heads=m.num_attention_heads, num_query_groups=m.num_query_groups,
        seq_length=m.seq_length, vocab_size=m.vocab_size,
        share_embeddings_and_output_weights=m.tie_embeddings,
        **RECOMPUTE[par.recompute],
    )
    if not gpu:
        # The fused kernels are CUDA-only; weights are initialised on the host.
        model.update(gradient_accumulation_fusion=False, masked_softmax_fusion=False,
                     bias_activation_fusion=False, bias_dropout_fusion=False, apply_rope_fusion=False,
                     persist_layer_norm=False, use_cpu_initialization=True)
    data = dict(
        paths=list(blend.paths), seq_length=d.seq_length, micro_batch_size=d.micro_batch_size,
        global_batch_size=d.global_batch_size, split=d.split, seed=cfg.seed,
        num_workers=d.num_workers, pin_memory=gpu, persistent_workers=False,
        # Megatron caches its sample index next to the shards unless told otherwise; the lake may
        # be read-only and shared, so the cache lives with the run.
        index_mapping_dir=str(cfg.work_dir / "dataset_index"),
        # not a PreTrainingDataModule argument: see run()
        mid_level_dataset_surplus=dataset_surplus(cfg, blend, val_every),
    )
    optimizer = dict(
        optimizer="adam", lr=s.lr, min_lr=s.min_lr, weight_decay=s.weight_decay,
        adam_beta1=0.9, adam_beta2=0.95, adam_eps=1e-8, clip_grad=s.clip_grad,
        # Megatron's distributed optimizer shards state over data-parallel GPUs; it needs CUDA.
        use_distributed_optimizer=gpu if par.distributed_optimizer is None else par.distributed_optimizer,
    )
    scheduler = schedule(s)
    strategy = dict(
        tensor_model_parallel_size=par.tensor_parallel, pipeline_model_parallel_size=par.pipeline_parallel,
        context_parallel_size=par.context_parallel, sequence_parallel=par.sequence_parallel,
        ckpt_async_save=False, ckpt_parallel_load=gpu,
        process_group_backend="nccl" if gpu else "gloo",
    )
    trainer = dict(
        accelerator="gpu" if gpu else "cpu", devices=par.devices_per_node, num_nodes=par.nodes,
        max_steps=s.max_steps,
        val_check_interval=val_every, limit_val_batches=cfg.limit_val_batches,
        limit_test_batches=0, log_every_n_steps=cfg.log_every_n_steps, num_sanity_val_steps=0,
        use_distributed_sampler=False,  # Megatron's sampler shards the data
        logger=False,  # no default TensorBoard logger: MLflow is added by NeMoLogger
    )
    checkpoint = dict(
        dirpath=str(cfg.checkpoints), filename=f"{cfg.name}--{{step}}-{{consumed_samples}}",
        # Keep the newest `keep_checkpoints` by step, plus `*-last` (what stage 2 and resumes read).
        monitor="step", mode="max", save_top_k=cfg.keep_checkpoints, save_last=True,
        every_n_train_steps=val_every,
        # The final checkpoint keeps the optimizer state, so that an interrupted or extended run
        # can resume from it (without it resuming fails with KeyError: optimizer.state…).
        save_optim_on_train_end=True,
    )
    resume = dict(
        # A rerun under the same name (a preempted job, or more max_steps) continues from the
        # run's newest checkpoint, optimizer state included; that wins over restore_from.
        resume_if_exists=True, resume_ignore_no_checkpoint=True,
        resume_from_directory=str(cfg.checkpoints),
        # Otherwise restore_from gives the initial weights only: stage 2 starts a new optimizer
        # and schedule.
        # (load_artifacts: the tokenizer is built from data.tokenizer, not read back from the checkpoint)
        restore_config=(dict(path=str(cfg.restore_from), load_model_state=True, load_optim_state=False,
                             load_artifacts=False)
                        if cfg.restore_from else None),
    )
    return Recipe(model=model, data=data, optimizer=optimizer, scheduler=scheduler, strategy=strategy,
                  precision=precision(par, gpu=gpu), trainer=trainer, checkpoint=checkpoint,
                  log_dir=cfg.work_dir / "logs" / cfg.name, seed=cfg.seed, resume=resume,
                  trainable_layers=trainable_layers(cfg, lineage), model_args=m,
                  throughput=dict(seq_length=d.seq_length, global_batch_size=d.global_batch_size,
                                  devices=par.world_size))


def schedule(s: ScheduleArgs) -> dict[str, Any]:
    """The learning-rate scheduler: its NeMo class under "kind", its arguments beside.

    A run without an anneal (Sailor2 stage 1: constant after warmup) uses NeMo's
    `WarmupHoldPolicyScheduler`: its hold-then-anneal scheduler divides by max_steps - hold_steps,
    zero when holding to the end, once stepped after the last optimizer step (nemo 2.7.3). The
    anneal (stage 2) scheduler takes ratios only and truncates ratio × max_steps, so the exact step
    counts go in as (steps + ½) / max_steps.
    """
    if s.constant:
        return {"kind": "constant", "warmup_steps": s.warmup, "max_steps": s.max_steps, "min_lr": s.min_lr}
    return {"kind": "anneal", "warmup_ratio": (s.warmup + 0.5) / s.max_steps,
            "hold_ratio": (s.hold + 0.5) / s.max_steps, "max_steps": s.max_steps,
            "decay_schedule": s.decay, "min_lr": s.min_lr}


#: Megatron TransformerConfig fields for each `parallel.recompute`: selective recomputes the attention
#: core (its default module list), full recomputes every layer's input (uniformly, one layer a unit).
RECOMPUTE: dict[str, dict[str, Any]] = {
    "none": {},
    "selective": {"recompute_granularity": "selective"},
    "full": {"recompute_granularity": "full", "recompute_method": "uniform", "recompute_num_layers": 1},
}


def precision(par: ParallelArgs, *, gpu: bool) -> str:
    """`nl.MegatronMixedPrecision`'s precision: `auto` is bf16-mixed on a GPU, fp32 on a CPU."""
    if par.precision == "auto":
        return "bf16-mixed" if gpu else "32"
    return "32" if par.precision == "fp32" else par.precision


def dataset_surplus(cfg: TrainConfig, blend: Blend, val_every: int) -> float:
    """The sample surplus Megatron indexes per language and split, beyond its blend share.

    Megatron builds ⌈⌈n·w⌉·(1 + surplus)⌉ samples of a language with weight w for a split of n
    samples, and its blend's rounding may draw up to two more than ⌈n·w⌉. On a big run the
    configured relative surplus covers that; on a small validation set it is below one sample, so
    the smallest language's share gets at least two samples of slack (samples index the shards:
    a larger surplus costs index entries, not data).
    """
    d, gbs = cfg.data, cfg.data.global_batch_size
    train = cfg.schedule.max_steps * gbs
    val = (cfg.schedule.max_steps // val_every + 1) * cfg.limit_val_batches * gbs  # as NeMo sizes it
    smallest = min(blend.lang_weights.values(), default=1.0)
    slack = [2 / math.ceil(n * smallest) for n in (train, val) if n * smallest > 0]
    return max([d.dataset_surplus, *slack])


# --- run ----------------------------------------------------------------------------------------


def run(recipe: Recipe, tokenizer: Any, *, mlflow_run_id: str | None, tracking_uri: str | None) -> Outcome:
    """Build NeMo's objects from `recipe` and train; returns what the run reached.

    Only the process that tracks (global rank 0) passes an MLflow run; the others log nowhere.
    """
    from lightning.pytorch import seed_everything
    from lightning.pytorch.loggers import MLFlowLogger
    from megatron.core.optimizer import OptimizerConfig
    from nemo import lightning as nl
    from nemo.collections import llm
    from nemo.lightning.ckpt_utils import ckpt_to_dir
    from nemo.lightning.pytorch.optim import (
        MegatronOptimizerModule,
        WarmupHoldAnnealScheduler,
        WarmupHoldPolicyScheduler,
    )

    from trainer import freeze, throughput, validation

    seed_everything(recipe.seed, verbose=False)
    model = llm.Qwen2Model(llm.Qwen2Config(**recipe.model), tokenizer=tokenizer)
    data_args = dict(recipe.data)
    surplus = data_args.pop("mid_level_dataset_surplus")
    data = llm.PreTrainingDataModule(tokenizer=tokenizer, **data_args)
    data.build_kwargs["mid_level_dataset_surplus"] = surplus  # passed on to GPTDatasetConfig
    data = validation.prepare(data)
    sched = dict(recipe.scheduler)
    kind = {"constant": WarmupHoldPolicyScheduler, "anneal": WarmupHoldAnnealScheduler}[sched.pop("kind")]
    optim = MegatronOptimizerModule(config=OptimizerConfig(**recipe.optimizer), lr_scheduler=kind(**sched))
    trainer = nl.Trainer(strategy=nl.MegatronStrategy(**recipe.strategy),
                         plugins=nl.MegatronMixedPrecision(precision=recipe.precision),
                         **recipe.trainer)
    # Added after construction: NeMo pickles the Trainer's arguments into every checkpoint's context,
    # and a checkpoint must load without sailyard (NeMo unpickles only its own and framework classes).
    trainer.callbacks[:0] = [*validation.callbacks(), *freeze.callbacks(recipe.trainable_layers),
                             throughput.callback(recipe.model_args, gpu=recipe.trainer["accelerator"] == "gpu",
                                                 **recipe.throughput)]
    checkpoint = nl.ModelCheckpoint(**recipe.checkpoint)
    loggers = [MLFlowLogger(run_id=mlflow_run_id, tracking_uri=tracking_uri)] if mlflow_run_id else []
    log = nl.NeMoLogger(explicit_log_dir=str(recipe.log_dir), ckpt=checkpoint, extra_loggers=loggers)
    restore = recipe.resume["restore_config"]
    resume = nl.AutoResume(**{**recipe.resume,
                              "restore_config": nl.RestoreConfig(**restore) if restore else None})

    llm.pretrain(model=model, data=data, trainer=trainer, log=log, resume=resume, optim=optim)

    loss = trainer.callback_metrics.get("reduced_train_loss")
    last, resumed = checkpoint.last_model_path, trainer.ckpt_path
    return Outcome(steps=int(trainer.global_step),
                   final_train_loss=float(loss) if loss is not None else None,
                   checkpoint=_checkpoint_dir(ckpt_to_dir(last)) if last else None,
                   resumed_from=_checkpoint_dir(Path(resumed)) if resumed else None)


def _checkpoint_dir(path: Path) -> Path:
    """The checkpoint folder (holding context/ and weights/) for a path NeMo reports."""
    return path.parent if path.name == "weights" else path


def pretrain(cfg: TrainConfig, *, config_file: Path | None = None) -> dict[str, Any]:
    """setup → build_recipe → run, recorded in one MLflow run; returns the job summary fields.

    Under torchrun or srun every rank runs this; only global rank 0 repairs and records the
    checkpoint folder and talks to MLflow, the others wait for the folder to be ready and train.
    """
    prepared = setup(cfg)
    cfg, blend = prepared.cfg, prepared.blend
    recipe = build_recipe(cfg, blend, gpu=prepared.gpu, lineage=prepared.lineage)
    if not checkpoints.is_rank_zero():
        checkpoints.wait_until_repaired(cfg.checkpoints)
        outcome = run(recipe, prepared.tokenizer, mlflow_run_id=None, tracking_uri=None)
        return _summary(cfg, blend, outcome, mlrun=None)
    checkpoints.check_identity(cfg.checkpoints, run_identity(cfg, blend, prepared.lineage))
    # A save killed half-way would make NeMo refuse to start; carry on from the newest complete one.
    repaired = checkpoints.repair(cfg.checkpoints)
    for name in repaired.set_aside:
        print(f"train: checkpoint {name} was not finished (the run was stopped while saving it); set aside "
              f"under {checkpoints.ASIDE}/", file=sys.stderr, flush=True)
    done = checkpoints.finished(cfg.checkpoints)
    if done is not None and done["steps"] >= cfg.schedule.max_steps and (Path(done["checkpoint"]) / "weights").is_dir():
        # Nothing left to train: NeMo would rebuild the data only to find no sample left to consume.
        print(f"train: {cfg.name} already reached step {done['steps']} (max_steps {cfg.schedule.max_steps}); "
              f"its final checkpoint is {done['checkpoint']}", file=sys.stderr, flush=True)
        final = Path(done["checkpoint"])
        summary = _summary(cfg, blend, Outcome(steps=done["steps"], final_train_loss=None, checkpoint=final,
                                               resumed_from=final), mlrun=None)
        return {**summary, "mlflow_run_id": done.get("mlflow_run_id")}
    with tracking.start_run(JOB, work_dir=cfg.work_dir, kind=JOB, params=cfg.to_dict()) as mlrun:
        mlrun.table_read(SHARD_MANIFEST, blend.manifest_path, blend.manifest_version)
        mlrun.set_tags({"train.name": cfg.name, "train.stage": cfg.data.stage,
                        "shard_manifest_digest": blend.digest, "plan_digest": blend.plan_digest,
                        "data_config": cfg.data.paths_file, "source_tables": ",".join(blend.sources),
                        "restore_from": cfg.restore_from, "accelerator": recipe.trainer["accelerator"],
                        "checkpoints": cfg.checkpoints, **lineage_tags(prepared.lineage)})
        mlrun.log_text(cfg.to_yaml(), "config/train.yaml")
        if prepared.lineage is not None:
            mlrun.log_dict(prepared.lineage, "lineage.json")
        if config_file is not None:
            mlrun.log_artifact(config_file, "config/source")
        outcome = run(recipe, prepared.tokenizer, mlflow_run_id=mlrun.run_id,
                      tracking_uri=tracking.tracking_uri(cfg.work_dir))
        mlrun.set_tags({"checkpoint": outcome.checkpoint, "resumed_from": outcome.resumed_from})
        if outcome.checkpoint is not None and outcome.steps == cfg.schedule.max_steps:
            checkpoints.mark_finished(cfg.checkpoints, steps=outcome.steps, checkpoint=outcome.checkpoint,
                                      mlflow_run_id=mlrun.run_id, work_dir=cfg.work_dir)
    return _summary(cfg, blend, outcome, mlrun=mlrun)


def lineage_tags(lineage: dict[str, Any] | None) -> dict[str, Any]:
    """The base model and its LlamaPro expansion as run tags (the whole record is lineage.json)."""
    if not lineage:
        return {}
    expansion = lineage.get("expansion") or {}
    tags = {"base_model": lineage.get("base_model"), "base_checkpoint": lineage.get("import")}
    if expansion:
        tags.update({"expansion.source": expansion.get("source"),
                     "expansion.layers": f"{expansion.get('old_layers')}→{expansion.get('new_layers')}",
                     "expansion.new_layers": ",".join(str(i) for i in expansion.get("new_layer_indices") or [])})
    return tags


def _summary(cfg: TrainConfig, blend: Blend, outcome: Outcome, *, mlrun: Any) -> dict[str, Any]:
    return {
        "run": cfg.name,
        "steps": outcome.steps,
        "final_train_loss": outcome.final_train_loss,
        "checkpoint": str(outcome.checkpoint) if outcome.checkpoint else None,
        # A resumed run continued its own checkpoint; restore_from applied only to its first start.
        "restored_from": str(cfg.restore_from) if cfg.restore_from and not outcome.resumed_from else None,
        "resumed_from": str(outcome.resumed_from) if outcome.resumed_from else None,
        "blend": blend.lang_weights,
        "shard_manifest_digest": blend.digest,
        "plan_digest": blend.plan_digest,
        "tables": {},
        "tables_read": dict(mlrun.tables_read) if mlrun is not None else {},
        "mlflow_run_id": mlrun.run_id if mlrun is not None else None,
    }


def run_identity(cfg: TrainConfig, blend: Blend, lineage: dict[str, Any] | None = None) -> dict[str, Any]:
    """What this run's checkpoints are a run of: the data (the shard rows used, their blend, the
    plan that named them) and the model. A resume must match it (`checkpoints.check_identity`);
    the schedule may change (a longer `--max-steps` extends a run)."""
    return {"model": dataclasses.asdict(cfg.model), "shard_manifest_digest": blend.digest,
            "blend": {lang: round(w, 12) for lang, w in sorted(blend.lang_weights.items())},
            "plan_digest": blend.plan_digest, "tokenizer": cfg.data.tokenizer, "seq_length": cfg.data.seq_length,
            "lineage": lineage, "train_only_new_blocks": cfg.train_only_new_blocks}


# --- command line -------------------------------------------------------------------------------


def load_config(args: argparse.Namespace) -> TrainConfig:
    """The YAML config with the command-line overrides applied (then validated again)."""
    return with_overrides(TrainConfig.from_yaml(args.config), max_steps=args.max_steps, work_dir=args.work_dir,
                          source=f"{args.config} with command-line overrides")


def with_overrides(cfg: TrainConfig, *, max_steps: int | None = None, work_dir: Path | None = None,
                   source: str = "config with command-line overrides", local_files: bool = True) -> TrainConfig:
    """`cfg` with the command line's `--max-steps` / `--work-dir` (when given), validated again."""
    if max_steps is not None:
        cfg = dataclasses.replace(cfg, schedule=dataclasses.replace(cfg.schedule, max_steps=max_steps))
    if work_dir is not None:
        cfg = dataclasses.replace(cfg, work_dir=work_dir)
    cfg.validate(source=source, local_files=local_files)
    return cfg


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to file descriptor 1 to stderr for the duration of the block.

    NeMo, Lightning and Megatron print progress with `print` and from C code alike; the job
    contract wants stdout to end with the summary line alone.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.pretrain",
                                     description="Pretrain a Qwen2 model with NeMo 2 on the lake's shards.")
    parser.add_argument("--config", type=Path,
                        help="YAML file; its `train:` section is used when it has one (required without --plan)")
    parser.add_argument("--stage", type=int, choices=(1, 2),
                        help="with --plan: train this Sailor2 stage of the plan (stage 2 starts from stage 1)")
    parser.add_argument("--plan", type=Path, help="a plan.yaml (`sailyard plan`) whose exported shards to train on")
    parser.add_argument("--shards", type=Path,
                        help="with --plan: the folder `export-shards --plan` wrote (default: found from the lake's "
                             "shard manifest)")
    parser.add_argument("--max-steps", type=int, help="override schedule.max_steps")
    parser.add_argument("--work-dir", type=Path, help="override work_dir (checkpoints, MLflow, logs)")
    parser.add_argument("--launch", action="store_true",
                        help="submit the run with NeMo-Run as the config's `launch:` section says (local or "
                             "Slurm) instead of training in this process")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what --launch would submit (the sbatch script or the local command) and "
                             "submit nothing")
    args = parser.parse_args(argv)
    if (args.stage is None) != (args.plan is None):
        parser.error("--stage and --plan go together")
    if args.plan is None and args.config is None:
        parser.error("--config is required (or --stage with --plan)")
    if args.shards is not None and args.plan is None:
        parser.error("--shards needs --plan")

    def work() -> dict[str, Any]:
        if args.plan is not None:
            from trainer.stages import train_stage

            with stdout_to_stderr() if not args.dry_run else contextlib.nullcontext():
                return train_stage(args.stage, args.plan, args.config, shards=args.shards, max_steps=args.max_steps,
                                   work_dir=args.work_dir, launch=args.launch, dry_run=args.dry_run)
        if args.launch or args.dry_run:
            from trainer.launch import launch_file

            return launch_file(args.config, dry_run=args.dry_run, max_steps=args.max_steps, work_dir=args.work_dir)
        with stdout_to_stderr():
            return pretrain(load_config(args), config_file=args.config)

    return run_job(JOB, work)


# Megatron's checkpoint writer starts a helper process with the "spawn" method, which re-imports
# this module as __mp_main__: the guard keeps it from training again, and the module-level imports
# are kept free of torch and NeMo so that the helper starts in a fraction of a second.
if __name__ == "__main__":
    sys.exit(main())
