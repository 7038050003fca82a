"""The contamination job as one call: the audit, run by the one stage runner, plus its MLflow record."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from data_engine.config import to_dict
from data_engine.contamination.audit import STAGE, plan_audit
from data_engine.contamination.config import ContaminationConfig
from data_engine.contamination.items import Item
from data_engine.stage import StagePlan, run_stage


def contamination_job(spark: Any, lake_dir: str, items: Sequence[Item],
                      cfg: ContaminationConfig = ContaminationConfig(), *, input_version: int | None = None,
                      decontaminate: bool = False, items_source: str = "") -> dict[str, Any]:
    """Audit `items` against `cfg.table` (and decontaminate it when asked); the job's summary.

    Besides the usual fields the summary has `audited` {table, version}, `items`, `contaminated_any`,
    `contaminated_share`, `contamination` {task: {lang: {items, contaminated_any, contaminated_share}}},
    `hit_pairs` and `decontaminated` (documents dropped, None without `decontaminate`); the MLflow run
    has metrics `items.<task>.<lang>`, `contaminated.<task>.<lang>` (any n-gram) and
    `contaminated_share.<task>.<lang>` (share ≥ threshold), and the audit as `contamination.json`.
    """
    params = {"lake": lake_dir, "input_version": input_version, "decontaminate": decontaminate,
              "items_source": items_source, "items": len(items), "contamination": to_dict(cfg)}

    def plan(run: Any) -> StagePlan:
        p = plan_audit(spark, lake_dir, items, cfg, input_version=input_version, decontaminate=decontaminate,
                       run=run)
        audited = p.summary["audited"]
        run.set_tags({"audited": f"{audited['table']}@v{audited['version']}", "items_source": items_source})
        p.after_commit = lambda run, _versions: run.log_dict(
            {k: p.summary[k] for k in ("audited", "contamination", "ngram", "share_threshold", "drop_rule",
                                       "decontaminated")}, "contamination.json")
        return p

    return run_stage(spark, lake_dir, STAGE, plan, params=params)
