"""The shard export job as one call: tracking, the export, the summary the job prints."""

from __future__ import annotations

from typing import Any

from data_engine import lake, tracking
from data_engine.config import to_dict
from data_engine.export.config import ExportConfig
from data_engine.export.shards import export_shards


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
