"""The quality jobs as one call each: train (and register) a language's classifier; score and select."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data_engine import lake, tracking
from data_engine.config import to_dict
from data_engine.quality.config import QualityScoreConfig, QualityTrainConfig
from data_engine.quality.train import train_quality


def train_quality_job(spark: Any, lake_dir: str, lang: str, positives: str,
                      cfg: QualityTrainConfig = QualityTrainConfig()) -> dict[str, Any]:
    params = {"lake": lake_dir, "lang": lang, "positives": positives, "quality": to_dict(cfg)}
    work_dir = tracking.work_dir_for(lake_dir)
    with tracking.start_run(f"train_quality.{lang}", work_dir=work_dir, kind="train_quality", params=params) as run:
        result = train_quality(spark, lake_dir, lang, positives, cfg)
        run.table_read(result.negatives_table, lake.table_path(lake_dir, result.negatives_table),
                       result.negatives_version)
        run.log_metrics(result.metrics)
        run.log_artifact(result.model_dir, "model")
        name = f"{cfg.registry_prefix}-{lang}"
        version = tracking.register(run, name, "model", tags={"lang": lang, "auc": round(result.metrics["auc"], 4)})
        run.set_tags({"registered_model": f"{name}/{version}"})
    return {"in": result.positives + result.negatives, "kept": result.positives + result.negatives,
            "dropped": 0, "quarantined": 0, "tables": {},
            "tables_read": {result.negatives_table: result.negatives_version}, "mlflow_run_id": run.run_id,
            "lang": lang, "model": f"{name}/{version}", "metrics": result.metrics,
            "model_dir": str(Path(result.model_dir))}


def score_quality_job(spark: Any, lake_dir: str, cfg: QualityScoreConfig = QualityScoreConfig(), *,
                      input_version: int | None = None) -> dict[str, Any]:
    from data_engine.quality.score import histogram_png, plan_score
    from data_engine.stage import run_stage

    params = {"lake": lake_dir, "input_version": input_version, "score": to_dict(cfg)}

    def plan(run: Any) -> Any:
        p = plan_score(spark, lake_dir, cfg, input_version=input_version, run=run)
        histograms, cuts = p.summary.pop("histograms"), p.summary.pop("cuts")
        if histograms:
            p.after_commit = lambda run, _v: run.log_artifact(histogram_png(histograms, cuts), "plots")
        return p

    return run_stage(spark, lake_dir, "score_quality", plan, params=params)
