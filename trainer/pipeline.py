"""The whole path on one machine: sample corpus → lake → clean → dedup → quality → shards → NeMo.

One parent MLflow run holds a child run per job. The data jobs share this process's Spark session;
training runs as `python -m trainer.pretrain` in a child process (NeMo wants its own `__main__`),
nested under the same parent through `SAILYARD_PARENT_RUN_ID`.
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
from data_engine.quality.config import QualityScoreConfig, QualityTrainConfig


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
    stage: str = "stage1"
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

    def __post_init__(self) -> None:
        self.work = self.work.expanduser().resolve()
        self.sample = self.work / "sample"
        self.lake = self.work / "lake"
        self.shards = self.work / "shards"


def run_pipeline(cfg: PipelineConfig, *, train: bool = True, log: Any = print) -> dict[str, Any]:
    """Run every stage; returns the summary (job summaries, paths, the count table)."""
    from data_engine.clean.job import clean_job
    from data_engine.dedup.job import dedup_job
    from data_engine.export.job import export_job
    from data_engine.ingest.job import ingest_job
    from data_engine.quality.job import score_quality_job, train_quality_job
    from data_engine.report import format_report, lake_report
    from data_engine.sample.corpus import build_sample
    from data_engine.sample.positives import write_positive_sets
    from data_engine.spark import get_spark

    paths = PipelinePaths(Path(cfg.work_dir))
    paths.work.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"work_dir": str(paths.work), "lake": str(paths.lake),
                               "shards": str(paths.shards), "jobs": {}}
    previous_parent = os.environ.get(tracking.PARENT_ENV)
    with tracking.start_run("pipeline", work_dir=paths.work, kind="pipeline",
                            params=to_dict(cfg)) as parent:
        os.environ[tracking.PARENT_ENV] = parent.run_id
        try:
            log(f"[1/8] sample corpus → {paths.sample}")
            stats = build_sample(paths.sample, docs_per_lang=cfg.sample_docs_per_lang)
            parent.log_dict(dataclasses.asdict(stats), "sample_stats.json")
            spark = get_spark("sailyard-pipeline")
            log("[2/8] ingest")
            summary["jobs"]["ingest"] = ingest_job(spark, str(paths.lake), [str(paths.sample)],
                                                   source="sample", cfg=cfg.ingest)
            log("[3/8] clean: normalisation, heuristic rules, language identification")
            summary["jobs"]["clean"] = clean_job(spark, str(paths.lake), cfg.clean)
            log("[4/8] dedup: " + ", ".join(cfg.dedup.stages))
            summary["jobs"]["dedup"] = dedup_job(spark, str(paths.lake), cfg.dedup)
            log("[5/8] quality classifiers, one per language (positives: real text, negatives: docs_clean)")
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
            log("[6/8] score and keep the best of each language")
            summary["jobs"]["score_quality"] = score_quality_job(spark, str(paths.lake), cfg.score)
            log(f"[7/8] export shards → {paths.shards / cfg.stage}")
            summary["jobs"]["export_shards"] = export_job(spark, str(paths.lake), str(paths.shards),
                                                          cfg.stage, cfg.export)
            if train:
                log("[8/8] tiny NeMo pretraining")
                digest = summary["jobs"]["export_shards"]["shard_manifest_digest"]
                summary["jobs"]["train"] = run_training(cfg, paths, digest)
            else:
                log("[8/8] training skipped")
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


def run_training(cfg: PipelineConfig, paths: PipelinePaths, manifest_digest: str) -> dict[str, Any]:
    """`python -m trainer.pretrain` on the exported stage, with lake and work dir pointed here.

    The run is named after the shards' content digest: re-running the pipeline on the same data
    resumes that run's finished checkpoint (nothing to train) instead of training a copy, and new
    data gets a run of its own.
    """
    from trainer.config import TrainConfig

    train = TrainConfig.from_yaml(Path(cfg.train_config)) if cfg.train_config else TrainConfig()
    train = dataclasses.replace(train, name=f"{train.name}-{manifest_digest[:10]}", work_dir=paths.work,
                                data=dataclasses.replace(train.data, lake=paths.lake, stage=cfg.stage))
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
