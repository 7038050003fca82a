"""The cleaning job as one call: tracking, the stage, the summary the job prints."""

from __future__ import annotations

from typing import Any

from data_engine import lake, tracking
from data_engine.clean.run import clean
from data_engine.config import CleanConfig, to_dict


def clean_job(spark: Any, lake_dir: str, cfg: CleanConfig = CleanConfig(), *,
              input_version: int | None = None) -> dict[str, Any]:
    params = {"lake": lake_dir, "input_version": input_version, "clean": to_dict(cfg)}
    with tracking.start_run("clean", work_dir=tracking.work_dir_for(lake_dir), params=params) as run:
        result = clean(spark, lake_dir, cfg, input_version=input_version, run=run)
        for name, version in result.tables.items():
            run.table_written(name, lake.table_path(lake_dir, name), version)
        metrics: dict[str, float] = {"in": result.records, "kept": result.kept, "dropped": result.dropped,
                                     "relabelled": result.relabelled}
        for lang, c in result.by_lang.items():
            metrics.update({f"{k}.{lang}": v for k, v in c.items()})
        metrics.update({f"dropped.{reason}": n for reason, n in result.by_reason.items()})
        run.log_metrics(metrics)
        run.log_dict({lang: to_dict(cfg.thresholds(lang)) for lang in sorted(result.by_lang)}, "thresholds.json")
    return {"in": result.records, "kept": result.kept, "dropped": result.dropped, "quarantined": 0,
            "tables": result.tables, "tables_read": {result.input_table: result.input_version},
            "mlflow_run_id": run.run_id, "relabelled": result.relabelled,
            "dropped_by_reason": result.by_reason, "by_lang": result.by_lang}
