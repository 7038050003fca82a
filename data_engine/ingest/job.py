"""The ingest job as one call: tracking, the ingest itself, the summary the job prints."""

from __future__ import annotations

from typing import Any

from data_engine import tracking
from data_engine.config import to_dict
from data_engine.ingest.config import IngestConfig
from data_engine.ingest.run import ingest


def ingest_job(spark: Any, lake_dir: str, inputs: list[str], *, source: str | None = None,
               cfg: IngestConfig = IngestConfig()) -> dict[str, Any]:
    params = {"inputs": inputs, "lake": lake_dir, "source": source, "ingest": to_dict(cfg)}
    with tracking.start_run("ingest", work_dir=tracking.work_dir_for(lake_dir), params=params) as run:
        result = ingest(spark, lake_dir, inputs, source=source, cfg=cfg, run=run)
        metrics = {"in": result.records, "kept": result.docs, "quarantined": result.quarantined,
                   "files": result.files, "skipped_files": result.skipped_files,
                   "ignored_files": result.ignored_files, "incomplete_files": result.incomplete_files,
                   "resumed_files": result.resumed_files, "skipped_records": result.skipped_records}
        metrics.update({f"kept.{lang}": n for lang, n in result.per_lang.items()})
        metrics.update({f"quarantined.{code}": n for code, n in result.per_reason.items()})
        run.log_metrics(metrics)
        run.set_tags({"batch_id": result.batch_id, "source": result.source})
        if result.already_ingested:
            import sys

            print(f"ingest: batch {result.batch_id} was committed by another run of the same input "
                  "while this one ran; nothing added", file=sys.stderr, flush=True)
    return {"in": result.records, "kept": result.docs, "dropped": 0,
            "quarantined": result.quarantined, "tables": result.tables,
            "mlflow_run_id": run.run_id, "batch_id": result.batch_id, "source": result.source,
            "files": result.files, "skipped_files": result.skipped_files,
            "ignored_files": result.ignored_files, "incomplete_files": result.incomplete_files,
            "resumed_files": result.resumed_files, "skipped_records": result.skipped_records,
            "already_ingested": result.already_ingested, "kept_by_lang": result.per_lang,
            "quarantined_by_reason": result.per_reason}
