"""Sailor2's two continual-pretraining stages, run from a mixture plan.

    sailyard train --stage 1 --plan plan.yaml [--config Y] [--shards DIR] [--max-steps N] [--launch | --dry-run]
    sailyard train --stage 2 --plan plan.yaml [--config Y] ...

Both stages are the plain trainer (`trainer.pretrain`) on a config derived here from three things:

    the plan        which shards each stage reads (`export_shards --plan` wrote `<shards>/stage<N>.data.yaml`)
                    and how many tokens: the stage's budget in steps, unless a step count is given
    the config      the YAML's `train:` section is stage 1 (model, batch, parallelism, `restore_from`: the
                    imported base model); its `stage2:` section is laid over it for stage 2, key by key,
                    on top of `STAGE2_DEFAULTS` (Sailor2's anneal: 1e-5, decaying to the end)
    stage 1's run   stage 2 starts from stage 1's final weights with a fresh optimizer and schedule, and
                    refuses to start before stage 1 has finished (the trainer records a run's last step)

Each stage is a run named `<name>-<plan digest[:8]>-stage<N>`: rerunning the same command resumes it
(`trainer.pretrain`), a new plan trains afresh. In MLflow both stages are children of one parent run
per plan and config name (`train-plan`), which carries the plan, its tables and the base model.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_engine import tracking
from data_engine.config import read_yaml
from data_engine.errors import ConfigError
from data_engine.export.plan_export import DATA_CONFIG_SUFFIX, Plan, read_plan
from trainer import checkpoints
from trainer.config import DataArgs, TrainConfig, overlay

STAGES = (1, 2)
#: Stage 2's schedule unless the `stage2:` section says otherwise: Sailor2 anneals at 1e-5 on the
#: stage-2 blend, here linearly (WSD's decay; `decay: one_minus_square_root` for 1-sqrt) to a tenth.
STAGE2_DEFAULTS: dict[str, Any] = {
    "schedule": {"lr": 1e-5, "min_lr": 1e-6, "warmup_ratio": 0.0, "warmup_steps": None, "hold_ratio": 0.0,
                 "decay": "linear"},
}
PARENT_KIND = "train-plan"


@dataclass(frozen=True)
class Stage:
    """One stage's resolved run and where each of its settings came from."""

    number: int
    cfg: TrainConfig
    plan: Plan
    data_config: Path
    budget_tokens: int | None
    steps_from: str  # "--max-steps", "config" or "plan budget"

    @property
    def planned_steps(self) -> int | None:
        """The plan's budget in optimizer steps, whatever the run was told."""
        return budget_steps(self.budget_tokens, self.cfg.data)


def budget_steps(budget_tokens: int | None, data: DataArgs) -> int | None:
    """A token budget in optimizer steps of `data`'s batch (rounded up); None without a budget."""
    if not budget_tokens:
        return None
    return math.ceil(budget_tokens / (data.global_batch_size * data.seq_length))


def stage_config(number: int, plan_path: str | Path, config_file: str | Path | None = None, *,
                 shards: str | Path | None = None, max_steps: int | None = None,
                 work_dir: Path | None = None, local_files: bool = True) -> Stage:
    """Resolve stage `number` of `plan_path` with the config's settings into one training run.

    Raises:
        ConfigError: an unknown stage, a plan or config that does not check out, no exported data
            config for the stage, or (stage 2) a stage 1 that has not finished.
    """
    if number not in STAGES:
        raise ConfigError(f"--stage: expected 1 or 2, got {number}")
    plan = read_plan(plan_path)
    name = f"stage{number}"
    if name not in plan.stages:
        raise ConfigError(f"plan {plan.path} has no {name} (stages: {', '.join(sorted(plan.stages))})")
    train_doc, stage2_doc = read_sections(config_file)
    doc = copy.deepcopy(train_doc)
    explicit = "max_steps" in (doc.get("schedule") or {})
    if number == 2:
        doc.pop("restore_from", None)  # stage 1's base model; stage 2 starts from stage 1
        (doc.get("schedule") or {}).pop("max_steps", None)
        doc = overlay(overlay(doc, STAGE2_DEFAULTS), stage2_doc)
        explicit = "max_steps" in (stage2_doc.get("schedule") or {})
        if "restore_from" not in stage2_doc:
            stage1 = stage_config(1, plan_path, config_file, shards=shards, work_dir=work_dir, local_files=local_files)
            doc["restore_from"] = str(finished_checkpoint(stage1.cfg, local_files=local_files))
    source = f"{config_file or 'the default config'} ({name})"
    cfg = TrainConfig.from_dict(doc, where="train", source=source, local_files=False)
    base_name = cfg.name
    lake = cfg.data.lake if "lake" in (doc.get("data") or {}) or not plan.lake else Path(plan.lake)
    data_config = find_data_config(plan, name, lake, shards)
    cfg = dataclasses.replace(cfg, name=run_name(base_name, plan, number),
                              data=dataclasses.replace(cfg.data, lake=Path(lake), stage=name, weights=None,
                                                       paths_file=data_config))
    if work_dir is not None:
        cfg = dataclasses.replace(cfg, work_dir=work_dir)
    budget = plan.stages[name].budget_tokens
    steps_from = "--max-steps" if max_steps is not None else "config" if explicit else "plan budget"
    if max_steps is None and not explicit:
        if not budget:
            raise ConfigError(f"plan {plan.path}: {name} has no budget_tokens; give the stage's schedule.max_steps "
                              "or --max-steps")
        max_steps = budget_steps(budget, cfg.data)
    if max_steps is not None:
        cfg = dataclasses.replace(cfg, schedule=dataclasses.replace(cfg.schedule, max_steps=max_steps))
    cfg.validate(source=source, local_files=local_files)
    return Stage(number=number, cfg=cfg, plan=plan, data_config=data_config, budget_tokens=budget,
                 steps_from=steps_from)


def run_name(base: str, plan: Plan, number: int) -> str:
    return f"{base}-{plan.digest[:8]}-stage{number}"


def read_sections(config_file: str | Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `train:` and `stage2:` sections of the config (empty without a file)."""
    if config_file is None:
        return {}, {}
    doc = read_yaml(Path(config_file), "config")
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{config_file}: expected a mapping with a train: section")
    if "stage2" in doc and "train" not in doc:
        raise ConfigError(f"{config_file}: a file with a stage2: section keeps stage 1's config under train:")
    train = doc.get("train", {k: v for k, v in doc.items() if k not in ("launch", "stage2")}) or {}
    stage2 = doc.get("stage2") or {}
    for key, value in (("train", train), ("stage2", stage2)):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{config_file}: {key}: expected a mapping, got {type(value).__name__}")
    return dict(train), dict(stage2)


def find_data_config(plan: Plan, stage: str, lake: str | Path, shards: str | Path | None) -> Path:
    """`<shards>/<stage>.data.yaml` for this plan: in `--shards`, else where the lake's shard manifest
    says the plan's shards were exported (each shard sits in `<shards>/<group>/`).

    Raises:
        ConfigError: no data config of this plan's digest for the stage.
    """
    if shards is not None:
        candidates = [Path(shards).expanduser().absolute()]
    else:
        candidates = _export_dirs(lake, plan.digest)
    for out in candidates:
        path = out / f"{stage}{DATA_CONFIG_SUFFIX}"
        if path.is_file():
            doc = read_yaml(path, "data config")
            if isinstance(doc, Mapping) and doc.get("plan_digest") == plan.digest:
                return path
            raise ConfigError(f"{path} was written for plan {str(doc.get('plan_digest'))[:12]}…, not for "
                              f"{plan.path} ({plan.digest[:12]}…); export this plan's shards: "
                              f"`sailyard export-shards --plan {plan.path} --out <dir>`")
    where = f"--shards {candidates[0]}" if shards is not None else f"the shard manifest of {lake}"
    raise ConfigError(f"no {stage}{DATA_CONFIG_SUFFIX} of plan {plan.path} ({plan.digest[:12]}…) in {where}: "
                      f"export its shards first, `sailyard export-shards --lake {lake} --plan {plan.path} --out <dir>`")


def _export_dirs(lake: str | Path, digest: str) -> list[Path]:
    """Folders the manifest's rows of plan `digest` were exported into (a shard prefix's grandparent)."""
    from data_engine import lake as lake_io
    from data_engine.tables import SHARD_MANIFEST

    if lake_io.table_version(lake, SHARD_MANIFEST) is None:
        return []
    table = lake_io.read_arrow(lake, SHARD_MANIFEST)
    if "plan_digest" not in table.column_names:
        return []
    rows = table.select(["prefix", "plan_digest"]).to_pylist()
    return sorted({Path(r["prefix"]).parent.parent for r in rows if r["plan_digest"] == digest})


def finished_checkpoint(stage1: TrainConfig, *, local_files: bool = True) -> Path:
    """Stage 1's final checkpoint, which stage 2 starts from.

    Raises:
        ConfigError: stage 1 has not finished (the trainer records its last step when it gets there).
    """
    done = checkpoints.finished(stage1.checkpoints)
    if done is None:
        if not local_files:  # submitting to a cluster that holds stage 1's run: its folder, resolved there
            return stage1.checkpoints
        raise ConfigError(f"stage 1 ({stage1.name}) has not finished: {stage1.checkpoints} holds no "
                          f"{checkpoints.FINISHED_RECORD}. Run `sailyard train --stage 1` with the same plan and "
                          "config first (a rerun resumes it)")
    checkpoint = Path(done["checkpoint"])
    if local_files and not (checkpoint / "weights").is_dir():
        raise ConfigError(f"stage 1's final checkpoint {checkpoint} (recorded in {stage1.checkpoints}) is gone")
    return checkpoint


# --- MLflow: one parent run per plan ------------------------------------------------------------


def parent_run(stage: Stage) -> str:
    """The id of the `train-plan` run both stages of this plan and config nest under (made once).

    Inside a pipeline (`$SAILYARD_PARENT_RUN_ID` set) it is itself a child of the pipeline's run.
    """
    cfg, plan = stage.cfg, stage.plan
    base = cfg.name.removesuffix(f"-{plan.digest[:8]}-stage{stage.number}")
    tags = {"sailyard.kind": PARENT_KIND, "plan_digest": plan.digest, "train.base_name": base}
    outer = os.environ.get(tracking.PARENT_ENV)
    if outer:
        tags["mlflow.parentRunId"] = outer
    found = tracking.find_runs(cfg.work_dir, tags)
    if found:
        return found[0]
    with tracking.start_run(f"train-{base}-{plan.digest[:8]}", work_dir=cfg.work_dir, kind=PARENT_KIND) as run:
        run.set_tags({**tags, "plan": str(plan.path),
                      **{f"table.{g.table}": f"v{g.version}" for g in plan.groups.values()}})
        run.log_params({f"plan.{name}.budget_tokens": s.budget_tokens for name, s in sorted(plan.stages.items())})
        run.log_artifact(plan.path, "plan")
    return run.run_id


# --- the command ----------------------------------------------------------------------------------


def train_stage(number: int, plan_path: str | Path, config_file: str | Path | None = None, *,
                shards: str | Path | None = None, max_steps: int | None = None, work_dir: Path | None = None,
                launch: bool = False, dry_run: bool = False) -> dict[str, Any]:
    """`sailyard train --stage N --plan P`: resolve the stage, then train here or hand it to NeMo-Run.

    Returns the job summary: the trainer's (or the launcher's) fields and the stage's.
    """
    from trainer.launch import LaunchArgs, read_launch

    args = read_launch(config_file) if config_file is not None else LaunchArgs()
    remote = args.executor == "slurm" and args.slurm.tunnel.kind == "ssh"
    stage = stage_config(number, plan_path, config_file, shards=shards, max_steps=max_steps, work_dir=work_dir,
                         local_files=not remote)
    info = {"stage": number, "plan": str(stage.plan.path), "plan_digest": stage.plan.digest,
            "data_config": str(stage.data_config), "budget_tokens": stage.budget_tokens,
            "planned_steps": stage.planned_steps, "max_steps": stage.cfg.schedule.max_steps,
            "steps_from": stage.steps_from, "restore_from": str(stage.cfg.restore_from or "") or None}
    if launch or dry_run:
        return {**_launch(stage, args, config_file, dry_run=dry_run, remote=remote), **info}
    from trainer.pretrain import pretrain

    parent = parent_run(stage)
    previous = os.environ.get(tracking.PARENT_ENV)
    with tracking.reopen_run(parent, work_dir=stage.cfg.work_dir):
        os.environ[tracking.PARENT_ENV] = parent
        try:
            summary = pretrain(stage.cfg, config_file=Path(config_file) if config_file else None)
        finally:
            if previous is None:
                os.environ.pop(tracking.PARENT_ENV, None)
            else:
                os.environ[tracking.PARENT_ENV] = previous
    return {**summary, **info, "parent_run_id": parent}


def _launch(stage: Stage, args: Any, config_file: str | Path | None, *, dry_run: bool, remote: bool) -> dict[str, Any]:
    """Submit the resolved stage with NeMo-Run; the job trains the stage's config as resolved here."""
    from data_engine.config import report
    from trainer.launch import Launch, launch_problems, submit

    cfg = stage.cfg
    # The paths the plan and stage 1 supplied count as given (they are absolute, resolved here).
    train_doc = overlay(read_sections(config_file)[0], {
        "work_dir": str(cfg.work_dir), "restore_from": str(cfg.restore_from) if cfg.restore_from else None,
        "data": {"lake": str(cfg.data.lake), "paths_file": str(cfg.data.paths_file)}})
    problems = launch_problems(args, cfg, train_doc)
    if problems:
        raise ConfigError(report(f"{config_file or 'config'} (launch)", problems))
    if not dry_run and not remote:  # the job's MLflow store is reachable from here: nest it under the plan
        args = dataclasses.replace(args, env_vars={**args.env_vars, tracking.PARENT_ENV: parent_run(stage)})
    return submit(Launch(cfg=cfg, args=args, config_text=cfg.to_yaml()), dry_run=dry_run)
