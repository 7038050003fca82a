"""The demo path end to end on the sample corpus, in-process with the shared Spark session."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from data_engine import lake, tracking
from data_engine.config import PipelineConfig
from data_engine.langs import LANGS
from data_engine.pipeline import run_pipeline


def test_data_pipeline_counts_reconcile_stage_to_stage(spark, tmp_path):
    cfg = PipelineConfig(work_dir=str(tmp_path / "work"), sample_docs_per_lang=6)
    summary = run_pipeline(cfg, train=False, log=lambda _: None)
    ingest, dedup, export = (summary["jobs"][k] for k in ("ingest", "dedup", "export_shards"))
    assert ingest["in"] == ingest["kept"] + ingest["quarantined"] and ingest["quarantined"] == 11
    assert dedup["in"] == ingest["kept"] and dedup["in"] == dedup["kept"] + dedup["dropped"]
    assert dedup["dropped"] > 0
    assert export["in"] == dedup["kept"] and export["in"] == export["kept"] + export["dropped"]
    assert set(export["shards"]) == set(LANGS)  # all 15 languages reach a shard
    lake_dir = summary["lake"]
    assert lake.read_arrow(lake_dir, "docs_dedup").num_rows == dedup["kept"]
    for lang in LANGS:
        assert f"\n{lang} " in summary["report"]
    client = MlflowClient(tracking.tracking_uri(tmp_path / "work"))
    children = client.search_runs([client.get_run(summary["mlflow_run_id"]).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{summary['mlflow_run_id']}'")
    assert sorted(r.info.run_name for r in children) == ["dedup", "export_shards", "ingest"]
    # A second run: ingest adds nothing, dedup and export reproduce the same content.
    again = run_pipeline(cfg, train=False, log=lambda _: None)
    assert again["jobs"]["ingest"]["in"] == 0
    assert again["jobs"]["dedup"]["kept"] == dedup["kept"]
    assert again["jobs"]["export_shards"]["shard_manifest_digest"] == export["shard_manifest_digest"]
    assert again["jobs"]["export_shards"]["tables_read"] == {"docs_dedup": 1}
