"""The token-count job as one call: the stage, run by the one stage runner, plus its MLflow record."""

from __future__ import annotations

from typing import Any

from data_engine.config import to_dict
from data_engine.stage import StagePlan, run_stage
from data_engine.tokens.config import TokenCountConfig
from data_engine.tokens.count import STAGE, plan_count_tokens


def count_tokens_job(spark: Any, lake_dir: str, cfg: TokenCountConfig = TokenCountConfig(), *,
                     input_version: int | None = None) -> dict[str, Any]:
    """Count `cfg.table` (pinned at `input_version`, default latest) into `token_counts`; the summary.

    Besides the usual fields the summary has `by_lang` {lang: {docs, tokens}} and `tokenizer`; the
    MLflow run has metrics `tokens.<lang>` and `docs.<lang>` and the tokenizer's name and digest as tags.
    """
    params = {"lake": lake_dir, "input_version": input_version, "tokens": to_dict(cfg)}

    def plan(run: Any) -> StagePlan:
        p = plan_count_tokens(spark, lake_dir, cfg, input_version=input_version, run=run)
        tok = p.summary["tokenizer"]
        run.set_tags({"tokenizer": tok["name"], "tokenizer_digest": tok["digest"],
                      "tokenizer_revision": tok["revision"],
                      "counted": f"{p.summary['table']}@v{p.summary['table_version']}"})
        p.after_commit = lambda run, _versions: run.log_dict(
            {"table": p.summary["table"], "version": p.summary["table_version"], "by_lang": p.summary["by_lang"],
             "tokenizer": tok}, "token_counts.json")
        return p

    return run_stage(spark, lake_dir, STAGE, plan, params=params)
