"""The demo path end to end on the sample corpus, in-process with the shared Spark session."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from data_engine import lake, tracking
from data_engine.langs import LANGS
from data_engine.quality.config import QualityScoreConfig, QualityTrainConfig
from jobs import pipeline as pipeline_job
from trainer.config import TrainConfig
from trainer.pipeline import PipelineConfig, run_pipeline


def test_demo_path_reconciles_stage_to_stage_and_trains_on_the_exported_shards(spark, tmp_path, capsys):
    # Six documents per language: the tiny config's validation share must still give each one a
    # document (`trainer.data` refuses a split that leaves a part empty).
    train_yaml = tmp_path / "train.yaml"
    train = TrainConfig.from_yaml(Path("configs/train_tiny.yaml"))
    train_yaml.write_text(dataclasses.replace(train, data=dataclasses.replace(train.data, split="60,40,0"))
                          .to_yaml())
    cfg = PipelineConfig(work_dir=str(tmp_path / "work"), sample_docs_per_lang=6, train_config=str(train_yaml),
                         quality=QualityTrainConfig(min_examples=3, epoch=25),
                         score=QualityScoreConfig(keep_percent=60))
    summary = run_pipeline(cfg, train=True, log=lambda _: None)
    ingest, clean, dedup, export = (summary["jobs"][k] for k in ("ingest", "clean", "dedup", "export_shards"))
    assert ingest["in"] == ingest["kept"] + ingest["quarantined"] and ingest["quarantined"] == 11
    assert clean["in"] == ingest["kept"] and clean["in"] == clean["kept"] + clean["dropped"]
    assert dedup["in"] == clean["kept"] and dedup["in"] == dedup["kept"] + dedup["dropped"]
    assert dedup["dropped"] > 0
    score = summary["jobs"]["score_quality"]
    assert score["in"] == dedup["kept"] and score["in"] == score["kept"] + score["dropped"]
    models = {lang: j["model"] for lang, j in summary["jobs"]["train_quality"].items()}
    assert set(models) == {lang for lang, c in clean["by_lang"].items() if c["kept"] >= 3}
    assert len(models) >= 12 and score["models"] == {lang: f"sailyard-quality-{lang}/1" for lang in models}
    for lang, c in score["by_lang"].items():
        assert c["kept"] == (math.ceil(0.6 * c["in"]) if lang in models else c["in"]), lang
    assert export["in"] == score["kept"] and export["in"] == export["kept"] + export["dropped"]
    assert set(export["shards"]) >= set(LANGS) - {"mya", "zho"}  # short pages of these may all be cleaned away
    lake_dir = summary["lake"]
    assert lake.read_arrow(lake_dir, "docs_dedup").num_rows == dedup["kept"]
    assert lake.read_arrow(lake_dir, "docs_curated").num_rows == score["kept"]
    for lang in LANGS:
        assert f"\n{lang} " in summary["report"]
    client = MlflowClient(tracking.tracking_uri(tmp_path / "work"))
    children = client.search_runs([client.get_run(summary["mlflow_run_id"]).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{summary['mlflow_run_id']}'")
    jobs = ["clean", "dedup", "export_shards", "ingest", "score_quality", "train"]
    assert sorted(r.info.run_name for r in children) == sorted(jobs + [f"train_quality.{x}" for x in models])
    train = summary["jobs"]["train"]
    assert train["status"] == "ok" and train["steps"] == 10 and train["final_train_loss"] > 0
    assert train["tables_read"] == {"shard_manifest": export["tables"]["shard_manifest"]}
    assert Path(train["checkpoint"]).is_dir()
    (train_run,) = [r for r in children if r.info.run_name == "train"]
    assert train_run.data.tags["shard_manifest_digest"] == export["shard_manifest_digest"]
    assert len(client.get_metric_history(train_run.info.run_id, "reduced_train_loss")) == 10
    # A second run, through the job's entry point: ingest adds nothing; dedup, classifiers, selection and
    # export reproduce the same content.
    cfg_yaml = tmp_path / "pipeline.yaml"
    cfg_yaml.write_text(yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(cfg)))))
    capsys.readouterr()
    assert pipeline_job.main(["--config", str(cfg_yaml), "--no-train"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["status"] == "ok" and again["in"] == 0 and again["kept"] == export["kept"]
    assert {lang: q["model"] for lang, q in again["quality_models"].items()} == {
        lang: f"sailyard-quality-{lang}/2" for lang in models}
    assert again["tables"]["docs_dedup"] == 1 and again["tables"]["docs_curated"] == 1
    manifest = json.loads((Path(summary["shards"]) / "stage1" / "manifest.json").read_text())
    assert manifest["digest"] == export["shard_manifest_digest"]
    assert lake.read_arrow(lake_dir, "docs_curated").num_rows == score["kept"]
