"""The whole path on one machine: sample corpus → lake → clean → dedup → quality → token counts →
mixture (proxies, fit, search) → two-stage plan → the plan's shards → NeMo stage 1.

One parent MLflow run holds a child run per job. The data jobs share this process's Spark session;
the proxies train in worker processes (`trainer.sweep`), and NeMo runs as `python -m trainer.pretrain`
in a child process (it wants its own `__main__`), nested under the same parent through
`SAILYARD_PARENT_RUN_ID`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_engine import tracking
from data_engine.clean.config import CleanConfig
from data_engine.config import from_dict, load_yaml, to_dict
from data_engine.dedup.config import DedupConfig
from data_engine.errors import SailyardError
from data_engine.export.config import ExportConfig
from data_engine.ingest.config import IngestConfig
from data_engine.mixture.config import MixtureConfig
from data_engine.quality.config import QualityScoreConfig, QualityTrainConfig
from data_engine.tables import DOCS_CURATED, DOCS_SCORED
from data_engine.tokens.config import TokenCountConfig


@dataclass(frozen=True)
class PipelineConfig:
    """The whole demo pipeline; each field is the section of the same name in the YAML."""

    work_dir: str = "work"
    sample_docs_per_lang: int = 40
    ingest: IngestConfig = field(default_factory=IngestConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    quality: QualityTrainConfig = field(default_factory=QualityTrainConfig)
    score: QualityScoreConfig = field(default_factory=QualityScoreConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    tokens: TokenCountConfig = field(default_factory=TokenCountConfig)
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    force_mixture_search: bool = False
    """Search even when the fit's cross-validated ρ is below mixture.search.min_rho (a demo with a
    handful of proxies cannot reach it; a real study should not need this)."""
    stage: str = "stage1"
    """The plan's stage the NeMo run trains (its data config `<shards>/<stage>.data.yaml`)."""
    train_config: str | None = None
    """Trainer YAML for the NeMo run (None: the trainer's built-in tiny defaults)."""

    @staticmethod
    def from_yaml(path: str | Path | None) -> PipelineConfig:
        return PipelineConfig() if path is None else from_dict(PipelineConfig, load_yaml(path),
                                                               source=str(path))


@dataclass
class PipelinePaths:
    work: Path
    sample: Path = field(init=False)
    lake: Path = field(init=False)
    shards: Path = field(init=False)
    sweep: Path = field(init=False)
    mixture: Path = field(init=False)
    plan: Path = field(init=False)

    def __post_init__(self) -> None:
        self.work = self.work.expanduser().resolve()
        self.sample = self.work / "sample"
        self.lake = self.work / "lake"
        self.shards = self.work / "shards"
        self.sweep = self.work / "mixture" / "sweeps"
        self.mixture = self.work / "mixture" / "mixture.yaml"
        self.plan = self.work / "mixture" / "plan.yaml"


def run_pipeline(cfg: PipelineConfig, *, train: bool = True, log: Any = print) -> dict[str, Any]:
    """Run every stage; returns the summary (job summaries, paths, the count table)."""
    from data_engine.clean.job import clean_job
    from data_engine.dedup.job import dedup_job
    from data_engine.export.job import export_job, plan_export_job
    from data_engine.ingest.job import ingest_job
    from data_engine.quality.job import score_quality_job, train_quality_job
    from data_engine.report import format_report, lake_report
    from data_engine.sample.corpus import build_sample
    from data_engine.sample.positives import write_positive_sets
    from data_engine.spark import get_spark
    from data_engine.tokens.job import count_tokens_job
    from trainer.sweep import SweepConfig

    # The proxies' settings are plain data until the sweep: check them before minutes of other work.
    from_dict(SweepConfig, {**cfg.mixture.sweep, "runs": cfg.mixture.runs}, "mixture.sweep")
    paths = PipelinePaths(Path(cfg.work_dir))
    paths.work.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"work_dir": str(paths.work), "lake": str(paths.lake),
                               "shards": str(paths.shards), "jobs": {}}
    previous_parent = os.environ.get(tracking.PARENT_ENV)
    with tracking.start_run("pipeline", work_dir=paths.work, kind="pipeline",
                            params=to_dict(cfg)) as parent:
        os.environ[tracking.PARENT_ENV] = parent.run_id
        try:
            log(f"[1/14] sample corpus → {paths.sample}")
            stats = build_sample(paths.sample, docs_per_lang=cfg.sample_docs_per_lang)
            parent.log_dict(dataclasses.asdict(stats), "sample_stats.json")
            spark = get_spark("sailyard-pipeline")
            log("[2/14] ingest")
            summary["jobs"]["ingest"] = ingest_job(spark, str(paths.lake), [str(paths.sample)],
                                                   source="sample", cfg=cfg.ingest)
            log("[3/14] clean: normalisation, heuristic rules, language identification")
            summary["jobs"]["clean"] = clean_job(spark, str(paths.lake), cfg.clean)
            log("[4/14] dedup: " + ", ".join(cfg.dedup.stages))
            summary["jobs"]["dedup"] = dedup_job(spark, str(paths.lake), cfg.dedup)
            log("[5/14] quality classifiers, one per language (positives: real text, negatives: docs_clean)")
            positives = write_positive_sets(paths.work / "positives")
            langs = sorted(summary["jobs"]["clean"]["by_lang"])
            summary["jobs"]["train_quality"] = {}
            for lang in langs:
                clean_docs = summary["jobs"]["clean"]["by_lang"][lang]["kept"]
                if lang not in positives or clean_docs < cfg.quality.min_examples:
                    log(f"      {lang}: {clean_docs} clean documents, fewer than quality.min_examples: no classifier")
                    continue
                summary["jobs"]["train_quality"][lang] = train_quality_job(
                    spark, str(paths.lake), lang, str(positives[lang]), cfg.quality)
            log("[6/14] score and keep the best of each language")
            summary["jobs"]["score_quality"] = score_quality_job(spark, str(paths.lake), cfg.score)
            log(f"[7/14] export the proxies' shards → {paths.shards / sweep_stage(cfg)}")
            summary["jobs"]["export_proxy"] = export_job(
                spark, str(paths.lake), str(paths.shards), sweep_stage(cfg),
                dataclasses.replace(cfg.export, langs=tuple(cfg.mixture.langs)))
            log("[8/14] count tokens: docs_curated, docs_scored (quality bands)")
            summary["jobs"]["count_tokens"] = {
                table: count_tokens_job(spark, str(paths.lake), dataclasses.replace(cfg.tokens, table=table))
                for table in (DOCS_CURATED, DOCS_SCORED)}
            summary["jobs"].update(run_mixture(cfg, paths, log))
            log(f"[13/14] export the plan's shards and NeMo data configs → {paths.shards}")
            summary["jobs"]["export_plan"] = plan_export_job(spark, str(paths.lake), str(paths.shards),
                                                             str(paths.plan), cfg.export)
            if train:
                log(f"[14/14] tiny NeMo pretraining on the plan's {cfg.stage}")
                summary["jobs"]["train"] = run_training(cfg, paths, summary["jobs"]["export_plan"])
            else:
                log("[14/14] training skipped")
            report = lake_report(spark, str(paths.lake), stage=cfg.stage)
            summary["report"] = format_report(report)
            parent.log_text(summary["report"], "count_table.txt")
            parent.set_tags({f"table.{k}": f"v{v}" for k, v in report.versions.items()})
        finally:
            if previous_parent is None:
                os.environ.pop(tracking.PARENT_ENV, None)
            else:
                os.environ[tracking.PARENT_ENV] = previous_parent
    summary["mlflow_run_id"] = parent.run_id
    summary["tracking_uri"] = tracking.tracking_uri(paths.work)
    return summary


def sweep_stage(cfg: PipelineConfig) -> str:
    """The shard stage the proxies train on (`mixture.sweep.stage`, default 'proxy')."""
    return str(cfg.mixture.sweep.get("stage", "proxy"))


def run_mixture(cfg: PipelineConfig, paths: PipelinePaths, log: Any) -> dict[str, Any]:
    """Sweep, fit, search and plan: each step the `sailyard` command does, in this process."""
    from data_engine.mixture.study import fit_sweep, plan_job, proxy_inputs, search_sweep
    from trainer.sweep import SweepConfig, run_sweep, sweep_id, sweep_results

    m = cfg.mixture
    sweep_cfg = from_dict(SweepConfig, {**m.sweep, "runs": m.runs}, "mixture.sweep")
    log(f"[9/14] mixture sweep: {m.runs} proxies ({sweep_cfg.preset}) over {', '.join(sorted(m.langs))}")
    budget1, budget2 = _budgets(paths, m)
    inputs = proxy_inputs(str(paths.lake), sweep_cfg.stage, m, budget1, m.runs)
    jobs: dict[str, Any] = {}
    # One folder per sweep's inputs: a rerun on the same data resumes (nothing to train), other data
    # (a new table version) gets a sweep of its own instead of being refused by the old one's folder.
    folder = paths.sweep / sweep_id(inputs.langs, inputs.mixtures, inputs.meta, sweep_cfg)[:16]
    result = run_sweep(str(paths.lake), str(folder), inputs.langs, inputs.mixtures, sweep_cfg,
                       meta=inputs.meta, tokenizer=inputs.tokenizer, log=lambda msg: log(f"      {msg}"))
    jobs["mixture_sweep"] = dataclasses.asdict(result)
    results = sweep_results(str(folder))
    log("[10/14] mixture fit: LightGBM per language, cross-validated")
    jobs["mixture_fit"] = fit_sweep(folder, results, m)
    log(f"[11/14] mixture search → {paths.mixture}")
    jobs["mixture_search"] = search_sweep(folder, results, paths.mixture, m, force=cfg.force_mixture_search)
    log(f"[12/14] two-stage plan → {paths.plan}")
    jobs["plan"] = plan_job(paths.mixture, paths.plan, m, budget_stage1=budget1, budget_stage2=budget2,
                            lake=str(paths.lake))
    return jobs


def _budgets(paths: PipelinePaths, m: MixtureConfig) -> tuple[int, int]:
    """The configured stage budgets; unset, one pass over the curated stage-1 tokens for each stage
    (a default that always fits the caps, whatever the corpus)."""
    from data_engine.tokens import read_token_counts

    if m.budget_stage1 and m.budget_stage2:
        return m.budget_stage1, m.budget_stage2
    tokens = read_token_counts(str(paths.lake), m.plan.base_table).tokens()
    one_pass = sum(n for lang, n in tokens.items() if lang in m.langs)
    return m.budget_stage1 or one_pass, m.budget_stage2 or m.budget_stage1 or one_pass


def run_training(cfg: PipelineConfig, paths: PipelinePaths, export: dict[str, Any]) -> dict[str, Any]:
    """`python -m trainer.pretrain` on the plan's stage, its NeMo data config as exported.

    The run is named after the plan's digest: re-running the pipeline on the same data and plan
    resumes that run's finished checkpoint (nothing to train) instead of training a copy, and a new
    plan gets a run of its own.
    """
    from trainer.config import TrainConfig

    data_configs = export.get("data_configs", {})
    if cfg.stage not in data_configs:
        raise SailyardError(f"the plan has no stage {cfg.stage!r} to train (stages: {sorted(data_configs)})")
    train = TrainConfig.from_yaml(Path(cfg.train_config)) if cfg.train_config else TrainConfig()
    train = dataclasses.replace(train, name=f"{train.name}-{export['plan_digest'][:10]}", work_dir=paths.work,
                                data=dataclasses.replace(train.data, lake=paths.lake, stage=cfg.stage, weights=None,
                                                         paths_file=Path(data_configs[cfg.stage])))
    config_path = paths.work / "train.yaml"
    config_path.write_text(train.to_yaml(), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "trainer.pretrain", "--config", str(config_path)],
                          stdout=subprocess.PIPE, stderr=None, text=True, env=os.environ.copy())
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    try:
        result = json.loads(last)
    except json.JSONDecodeError:
        result = {"status": "error", "error": f"trainer printed no summary (exit {proc.returncode})"}
    if proc.returncode != 0 or result.get("status") != "ok":
        raise SailyardError(f"training failed: {result.get('error', 'see the log above')}")
    return result
