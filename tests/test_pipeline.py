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
from data_engine.mixture.config import MixtureConfig
from data_engine.mixture.plan import PlanConfig
from data_engine.mixture.search import SearchConfig
from data_engine.quality.config import QualityScoreConfig, QualityTrainConfig
from jobs import pipeline as pipeline_job
from trainer.config import TrainConfig
from trainer.pipeline import BaseModelConfig, EvalConfig, PipelineConfig, run_pipeline


def test_demo_path_reconciles_stage_to_stage_plans_a_mixture_and_trains_on_the_plan(spark, tmp_path, capsys):
    # Eight documents per language: the tiny configs' validation shares must still give each shard a
    # document (`trainer.data` refuses a split that leaves a part empty).
    train_yaml = tmp_path / "train.yaml"
    train = TrainConfig.from_yaml(Path("configs/train_tiny.yaml"))
    train_yaml.write_text(dataclasses.replace(train, data=dataclasses.replace(train.data, split="60,40,0"))
                          .to_yaml())
    mixture = MixtureConfig(runs=4, sweep={"preset": "tiny", "workers": 2,
                                           "proxy": {"split": "60,40,0", "steps": 8}},
                            search=SearchConfig(samples=2000, top=16), plan=PlanConfig(hq_percent=50))
    # Stage 2 and the HF export are tested on their own (tests/trainer/test_stages.py); here stage 1 from
    # the demo's base model: a random 2-layer Qwen2, grown to 3 layers, imported.
    cfg = PipelineConfig(work_dir=str(tmp_path / "work"), sample_docs_per_lang=8, train_config=str(train_yaml),
                         train_stages=(1,), export_hf=False, base_model=BaseModelConfig(layers=2, expand_to=3),
                         quality=QualityTrainConfig(min_examples=3, epoch=25),
                         score=QualityScoreConfig(keep_percent=60), mixture=mixture, force_mixture_search=True,
                         eval=EvalConfig(suites=("mini",), limit=3))
    summary = run_pipeline(cfg, train=True, log=lambda _: None)
    jobs = summary["jobs"]
    ingest, clean, dedup, proxy = (jobs[k] for k in ("ingest", "clean", "dedup", "export_proxy"))
    assert ingest["in"] == ingest["kept"] + ingest["quarantined"] and ingest["quarantined"] == 11
    assert clean["in"] == ingest["kept"] and clean["in"] == clean["kept"] + clean["dropped"]
    assert dedup["in"] == clean["kept"] and dedup["in"] == dedup["kept"] + dedup["dropped"]
    assert dedup["dropped"] > 0
    score = jobs["score_quality"]
    assert score["in"] == dedup["kept"] and score["in"] == score["kept"] + score["dropped"]
    models = {lang: j["model"] for lang, j in jobs["train_quality"].items()}
    assert set(models) == {lang for lang, c in clean["by_lang"].items() if c["kept"] >= 3}
    assert len(models) >= 12 and score["models"] == {lang: f"sailyard-quality-{lang}/1" for lang in models}
    for lang, c in score["by_lang"].items():
        assert c["kept"] == (math.ceil(0.6 * c["in"]) if lang in models else c["in"]), lang
    # The proxies' shards: the stage-1 languages of docs_curated, and their token counts agree.
    stage1 = set(mixture.langs)
    assert set(proxy["shards"]) == stage1 & {lang for lang, c in score["by_lang"].items() if c["kept"]}
    assert proxy["in"] == sum(c["kept"] for lang, c in score["by_lang"].items() if lang in stage1)
    counted = jobs["count_tokens"]["docs_curated"]["by_lang"]
    for lang, shard in proxy["shards"].items():
        assert (counted[lang]["docs"], counted[lang]["tokens"]) == (shard["docs"], shard["tokens"]), lang
    assert jobs["count_tokens"]["docs_scored"]["in"] == score["in"]
    # Sweep → fit → search → plan.
    assert jobs["mixture_sweep"]["finished"] == 4 and jobs["mixture_fit"]["runs"] == 4
    search = jobs["mixture_search"]
    assert search["forced"] and abs(sum(search["weights"].values()) - 1) < 1e-9
    assert set(search["weights"]) == set(proxy["shards"])
    plan = yaml.safe_load(Path(jobs["plan"]["plan"]).read_text())
    assert plan["plan_digest"] == jobs["plan"]["plan_digest"] == jobs["export_plan"]["plan_digest"]
    blend2 = plan["stages"]["stage2"]["blend"]
    assert abs(sum(e["weight"] for e in blend2 if e["kind"] == "replay") - 0.2) < 1e-9
    assert all(e.get("epochs_total", e["epochs"]) <= 4 + 1e-6 for e in blend2)
    # The plan's shards and data configs; training read the stage-1 one.
    export = jobs["export_plan"]
    assert sorted(export["data_configs"]) == ["stage1", "stage2"]
    stage1_config = yaml.safe_load(Path(export["data_configs"]["stage1"]).read_text())
    assert stage1_config["plan_digest"] == plan["plan_digest"]
    assert abs(sum(stage1_config["paths"][0::2]) - 1) < 1e-6
    planned = {e["lang"] for e in plan["stages"]["stage1"]["blend"]}  # a language searched to weight 0 is left out
    assert set(export["groups"]["stage1"]) == planned and planned <= set(proxy["shards"]) and len(planned) >= 5
    for lang, shard in export["groups"]["stage1"].items():  # the same documents as the proxies' shards
        assert (shard["docs"], shard["tokens"]) == (proxy["shards"][lang]["docs"], proxy["shards"][lang]["tokens"])
    lake_dir = summary["lake"]
    assert lake.read_arrow(lake_dir, "docs_dedup").num_rows == dedup["kept"]
    assert lake.read_arrow(lake_dir, "docs_curated").num_rows == score["kept"]
    for lang in LANGS:
        assert f"\n{lang} " in summary["report"]
    client = MlflowClient(tracking.tracking_uri(tmp_path / "work"))
    children = client.search_runs([client.get_run(summary["mlflow_run_id"]).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{summary['mlflow_run_id']}'")
    names = ["clean", "contamination", "contamination", "count_tokens", "count_tokens", "dedup", "eval-compare",
             "export_shards", "export_shards", "ingest", "mixture_sweep", "score_quality"]
    (plan_run,) = [r for r in children if r.data.tags.get("sailyard.kind") == "train-plan"]
    assert sorted(r.info.run_name for r in children if r is not plan_run) == sorted(
        names + [f"train_quality.{x}" for x in models])
    (sweep_run,) = [r for r in children if r.info.run_name == "mixture_sweep"]
    nested = client.search_runs([sweep_run.info.experiment_id],
                                f"tags.mlflow.parentRunId = '{sweep_run.info.run_id}'")
    assert sorted(r.info.run_name for r in nested if not r.info.run_name.startswith("proxy")) == [
        "mixture_fit", "mixture_search", "plan"]
    assert sum(1 for r in nested if r.info.run_name.startswith("proxy")) == 4
    # Training: LlamaPro 2 → 3 layers, imported, stage 1 from it on the plan's stage-1 shards.
    assert jobs["expand"]["new_layer_indices"] == [2]  # after layer 1 (⌊(i+1)·E/L⌋ − ⌊i·E/L⌋ copies after layer i)
    train = jobs["train_stage1"]
    assert train["status"] == "ok" and train["steps"] == 10 and train["final_train_loss"] > 0
    assert train["restored_from"] == jobs["import_hf"]["checkpoint"] and train["plan_digest"] == plan["plan_digest"]
    assert train["tables_read"] == {"shard_manifest": export["tables"]["shard_manifest"]}
    assert Path(train["checkpoint"]).is_dir()
    assert plan_run.info.run_id == train["parent_run_id"] and plan_run.data.tags["plan_digest"] == plan["plan_digest"]
    (train_run,) = client.search_runs([plan_run.info.experiment_id],
                                      f"tags.mlflow.parentRunId = '{plan_run.info.run_id}'")
    assert train_run.data.tags["shard_manifest_digest"] == export["shard_manifest_digests"]["stage1"]
    assert train_run.data.tags["expansion.layers"] == "2→3"
    assert len(client.get_metric_history(train_run.info.run_id, "reduced_train_loss")) == 10
    # The audit: every eval item against both tables the plan's shards came from; the held-out UDHR text
    # never entered the sample corpus, so nothing is found.
    audit = jobs["contamination"]
    assert sorted(audit["audits"]) == sorted(f"{s['table']}@v{s['version']}" for s in plan["shards"].values())
    assert audit["items"] > 100 and all(a["contaminated_any"] == 0 for a in audit["audits"].values())
    # Eval of the stage-1 checkpoint (exported to HF first), nested under its training run, with the verdict.
    ev = jobs["eval_stage1_mini"]
    assert set(ev["results"]) == {"udhr_bpb", "udhr_cloze", "curated_bpb"}
    assert set(ev["results"]["udhr_bpb"]) == set(LANGS) and all(
        m["n"] == 3 and m["bits_per_byte"] > 0 for m in ev["results"]["udhr_bpb"].values())
    assert set(ev["results"]["curated_bpb"]) <= set(proxy["shards"]) and ev["results"]["curated_bpb"]
    assert ev["contamination"]["audited"] and ev["contamination"]["contaminated_items"] == 0
    eval_run = client.get_run(ev["mlflow_run_id"])
    assert eval_run.data.tags["mlflow.parentRunId"] == train_run.info.run_id
    assert eval_run.data.metrics["udhr_bpb.tha.bits_per_byte"] == ev["results"]["udhr_bpb"]["tha"]["bits_per_byte"]
    assert eval_run.data.tags["eval.contamination"].startswith("0 of ")
    assert jobs["eval_compare"]["runs"] == [ev["mlflow_run_id"]]
    # Lineage: the checkpoint back to the files ingested, with their SHA-256 as ingest_log recorded them.
    chain = summary["lineage"]
    assert chain["missing"] == [] and any(t.startswith("docs_raw@v") for t in chain["tables"])
    log_digests = set(lake.read_arrow(lake_dir, "ingest_log").column("file_digest").to_pylist())
    assert chain["source_files"] and {f["sha256"] for f in chain["source_files"]} <= log_digests
    assert train["checkpoint"] in summary["lineage_text"]
    # A second run, through the job's entry point: ingest adds nothing; dedup, classifiers, selection,
    # the sweep (resumed: every proxy already finished), the plan and the export reproduce the same content.
    cfg_yaml = tmp_path / "pipeline.yaml"
    cfg_yaml.write_text(yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(cfg)))))
    capsys.readouterr()
    assert pipeline_job.main(["--config", str(cfg_yaml), "--no-train"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["status"] == "ok" and again["in"] == 0 and again["kept"] == export["kept"]
    assert {lang: q["model"] for lang, q in again["quality_models"].items()} == {
        lang: f"sailyard-quality-{lang}/2" for lang in models}
    assert again["tables"]["docs_dedup"] == 1 and again["tables"]["docs_curated"] == 1
    assert again["mixture"] == search["weights"]  # same tokens and seeds: the same proxies, fit and search
    assert lake.read_arrow(lake_dir, "docs_curated").num_rows == score["kept"]
