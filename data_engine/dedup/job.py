"""The dedup job as one call: tracking, the stages, the summary the job prints."""

from __future__ import annotations

import dataclasses
from typing import Any

from data_engine import lake, tracking
from data_engine.config import DedupConfig, to_dict
from data_engine.dedup.inspect import cluster_samples, render_html
from data_engine.dedup.near import scurve
from data_engine.dedup.run import dedup
from data_engine.tables import DROPS


def dedup_job(spark: Any, lake_dir: str, cfg: DedupConfig = DedupConfig(), *,
              input_version: int | None = None) -> dict[str, Any]:
    params = {"lake": lake_dir, "input_version": input_version, "dedup": to_dict(cfg)}
    with tracking.start_run("dedup", work_dir=tracking.work_dir_for(lake_dir), params=params) as run:
        result = dedup(spark, lake_dir, cfg, input_version=input_version, run=run)
        for name, version in result.tables.items():
            run.table_written(name, lake.table_path(lake_dir, name), version)
        metrics: dict[str, float] = {"in": result.records, "kept": result.kept, "dropped": result.dropped}
        for stage, counts in result.stages.items():
            metrics.update({f"{stage}.in": counts.input, f"{stage}.kept": counts.kept,
                            f"{stage}.dropped": counts.dropped})
            for lang, c in counts.by_lang.items():
                metrics.update({f"{stage}.{k}.{lang}": v for k, v in c.items()})
            metrics.update({f"{stage}.{k}": v for k, v in counts.metrics.items()})
        run.log_metrics(metrics)
        if "near" in cfg.stages:
            run.log_dict({"bands": cfg.near.bands, "rows": cfg.near.rows, "threshold": cfg.near.threshold,
                          "p_candidate_at_jaccard": scurve(cfg.near)}, "s_curve.json")
        if DROPS in result.tables:
            samples = cluster_samples(spark, lake_dir, result.input_table, result.input_version,
                                      result.tables[DROPS])
            run.log_text(render_html(samples), "clusters.html")
            run.log_dict(samples, "clusters.json")
    return {"in": result.records, "kept": result.kept, "dropped": result.dropped, "quarantined": 0,
            "tables": result.tables, "tables_read": {result.input_table: result.input_version},
            "mlflow_run_id": run.run_id,
            "stages": {k: dataclasses.asdict(v) for k, v in result.stages.items()}}
