"""The shard export jobs as one call each: tracking, the export, the summary the job prints."""

from __future__ import annotations

from typing import Any

from data_engine import lake, tracking
from data_engine.config import to_dict
from data_engine.export.config import ExportConfig
from data_engine.export.plan_export import export_plan
from data_engine.export.shards import export_shards
from data_engine.tables import SHARD_MANIFEST


def export_job(spark: Any, lake_dir: str, out_dir: str, stage: str,
               cfg: ExportConfig = ExportConfig(), *, input_version: int | None = None) -> dict[str, Any]:
    params = {"lake": lake_dir, "out": out_dir, "stage": stage, "input_version": input_version,
              "export": to_dict(cfg)}
    with tracking.start_run("export_shards", work_dir=tracking.work_dir_for(lake_dir),
                            params=params) as run:
        result = export_shards(spark, lake_dir, out_dir, stage, cfg, input_version=input_version, run=run)
        for name, version in result.tables.items():
            run.table_written(name, lake.table_path(lake_dir, name), version)
        metrics: dict[str, float] = {"in": result.docs + result.dropped, "kept": result.docs,
                                     "dropped": result.dropped, "tokens": result.tokens}
        for lang, shard in result.shards.items():
            metrics[f"docs.{lang}"] = shard["docs"]
            metrics[f"tokens.{lang}"] = shard["tokens"]
            metrics[f"parts.{lang}"] = len(shard["parts"])
        run.log_metrics(metrics)
        run.set_tags({"shard_manifest_digest": result.manifest_digest, "shards_dir": result.out_dir,
                      "stage": stage, "langs_replaced": ",".join(result.langs_replaced),
                      "tokenizer": result.tokenizer.get("name"), "tokenizer_digest": result.tokenizer.get("digest"),
                      "tokenizer_revision": result.tokenizer.get("revision")})
    return {"in": result.docs + result.dropped, "kept": result.docs, "dropped": result.dropped,
            "quarantined": 0, "tables": result.tables,
            "tables_read": {result.source_table: result.source_version},
            "mlflow_run_id": run.run_id, "stage": stage, "out": result.out_dir,
            "tokens": result.tokens, "shards": result.shards,
            "shard_manifest_digest": result.manifest_digest, "langs_replaced": result.langs_replaced,
            "shards_removed": result.removed, "tokenizer": result.tokenizer}


def plan_export_job(spark: Any, lake_dir: str, out_dir: str, plan_path: str,
                    cfg: ExportConfig = ExportConfig()) -> dict[str, Any]:
    """`export_shards --plan`: every shard group of the plan and a NeMo data config per stage, in
    one MLflow run tagged with the plan's digest (the plan and the data configs as artifacts)."""
    params = {"lake": lake_dir, "out": out_dir, "plan": str(plan_path), "export": to_dict(cfg)}
    with tracking.start_run("export_shards", work_dir=tracking.work_dir_for(lake_dir),
                            params=params) as run:
        result = export_plan(spark, lake_dir, out_dir, plan_path, cfg, run=run)
        exports = result.exports.values()
        docs, dropped = sum(r.docs for r in exports), sum(r.dropped for r in exports)
        tokens = sum(r.tokens for r in exports)
        run.table_written(SHARD_MANIFEST, lake.table_path(lake_dir, SHARD_MANIFEST), result.manifest_version)
        metrics: dict[str, float] = {"in": docs + dropped, "kept": docs, "dropped": dropped, "tokens": tokens}
        for group, shards in result.groups.items():
            for lang, shard in shards.items():
                metrics[f"docs.{group}.{lang}"] = shard["docs"]
                metrics[f"tokens.{group}.{lang}"] = shard["tokens"]
        run.log_metrics(metrics)
        run.set_tags({"plan_digest": result.plan_digest, "plan": str(result.plan.path), "shards_dir": result.out_dir,
                      "tokenizer": cfg.tokenizer, "tokenizer_digest": result.plan.tokenizer_digest,
                      **{f"data_config.{stage}": path for stage, path in result.data_configs.items()}})
        run.log_artifact(result.plan.path, "plan")
        for path in result.data_configs.values():
            run.log_artifact(path, "data_configs")
    first = next(iter(exports), None)
    return {"in": docs + dropped, "kept": docs, "dropped": dropped, "quarantined": 0,
            "tables": {SHARD_MANIFEST: result.manifest_version},
            "tables_read": {r.source_table: r.source_version for r in exports},
            "mlflow_run_id": run.run_id, "plan_digest": result.plan_digest, "out": result.out_dir,
            "data_configs": result.data_configs, "groups": result.groups,
            "selected": {g: r.selected for g, r in sorted(result.exports.items()) if r.selected},
            "tokens": tokens,
            "shard_manifest_digests": {g: r.manifest_digest for g, r in sorted(result.exports.items())},
            "shards_removed": sorted(p for r in exports for p in r.removed),
            "tokenizer": first.tokenizer if first else {}}
