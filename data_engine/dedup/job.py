"""The dedup job as one call: the stages, run by the one stage runner, plus their artifacts."""

from __future__ import annotations

from typing import Any

from data_engine.config import to_dict
from data_engine.dedup.config import DedupConfig
from data_engine.dedup.inspect import cluster_samples, render_html
from data_engine.dedup.near import scurve
from data_engine.dedup.run import plan_dedup
from data_engine.spark import phase
from data_engine.stage import run_stage
from data_engine.tables import DROPS


def dedup_job(spark: Any, lake_dir: str, cfg: DedupConfig = DedupConfig(), *,
              input_version: int | None = None) -> dict[str, Any]:
    params = {"lake": lake_dir, "input_version": input_version, "dedup": to_dict(cfg)}

    def plan(run: Any) -> Any:
        p = plan_dedup(spark, lake_dir, cfg, input_version=input_version)
        for stage, counts in p.summary["stages"].items():
            p.metrics.update({f"{stage}.in": counts["input"], f"{stage}.kept": counts["kept"],
                              f"{stage}.dropped": counts["dropped"]})
            for lang, c in counts["by_lang"].items():
                p.metrics.update({f"{stage}.{k}.{lang}": v for k, v in c.items()})
            p.metrics.update({f"{stage}.{k}": v for k, v in counts["metrics"].items()})
        [(table, version)] = p.inputs.items()

        def artifacts(run: Any, versions: dict[str, int]) -> None:
            if "near" in cfg.stages:
                run.log_dict({"bands": cfg.near.bands, "rows": cfg.near.rows, "threshold": cfg.near.threshold,
                              "p_candidate_at_jaccard": scurve(cfg.near)}, "s_curve.json")
            if DROPS in versions:
                with phase(spark, "dedup: cluster samples"):
                    samples = cluster_samples(spark, lake_dir, table, version, versions[DROPS])
                run.log_text(render_html(samples), "clusters.html")
                run.log_dict(samples, "clusters.json")

        p.after_commit = artifacts
        return p

    return run_stage(spark, lake_dir, "dedup", plan, params=params)
