"""The cleaning job as one call: the stage, run by the one stage runner."""

from __future__ import annotations

from typing import Any

from data_engine.clean.config import CleanConfig
from data_engine.clean.run import plan_clean
from data_engine.config import to_dict
from data_engine.stage import run_stage


def clean_job(spark: Any, lake_dir: str, cfg: CleanConfig = CleanConfig(), *,
              input_version: int | None = None) -> dict[str, Any]:
    params = {"lake": lake_dir, "input_version": input_version, "clean": to_dict(cfg)}

    def plan(run: Any) -> Any:
        p = plan_clean(spark, lake_dir, cfg, input_version=input_version)
        p.after_commit = lambda run, _versions: run.log_dict(
            {lang: to_dict(cfg.thresholds(lang)) for lang in sorted(p.counts.by_lang)}, "thresholds.json")
        return p

    return run_stage(spark, lake_dir, "clean", plan, params=params)
