"""The whole pipeline on the bundled sample corpus: local Spark, local lake, local MLflow, tiny NeMo.

    spark-submit jobs/pipeline.py [--config configs/demo.yaml] [--work-dir work] [--no-train]

Prints progress, the per-stage per-language count table, where everything is, then the JSON
summary line.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="pipeline YAML (default: built-in defaults)")
    p.add_argument("--work-dir", help="where sample, lake, shards, checkpoints and MLflow go")
    p.add_argument("--no-train", action="store_true", help="stop after the shard export")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> dict:
        import dataclasses

        from trainer.pipeline import PipelineConfig, run_pipeline

        cfg = PipelineConfig.from_yaml(args.config)
        if args.work_dir:
            cfg = dataclasses.replace(cfg, work_dir=args.work_dir)
        summary = run_pipeline(cfg, train=not args.no_train,
                               log=lambda msg: print(msg, file=sys.stderr, flush=True))
        jobs = summary["jobs"]
        stages = {int(k.removeprefix("train_stage")): j for k, j in jobs.items() if k.startswith("train_stage")}
        train = stages[max(stages)] if stages else {}
        print("\n" + summary["report"])
        quality = {lang: {"model": j["model"], "auc": round(j["metrics"]["auc"], 3)}
                   for lang, j in summary["jobs"].get("train_quality", {}).items()}
        if quality:
            print("quality classifiers, held-out AUC: "
                  + ", ".join(f"{lang} {q['auc']:.3f}" for lang, q in sorted(quality.items())))
        search = summary["jobs"].get("mixture_search")
        if search:
            print(f"\nstage-1 mixture ({summary['jobs']['mixture_fit']['runs']} proxy runs"
                  f"{', FORCED past the rho floor' if search['forced'] else ''}): "
                  + ", ".join(f"{lang} {w:.3f} (prior {search['prior'][lang]:.3f})"
                              for lang, w in sorted(search["weights"].items())))
            rho = {t: r for t, r in search["rho"].items() if r is not None}
            if rho:
                print("cross-validated Spearman rho: " + ", ".join(f"{t} {r:.2f}" for t, r in sorted(rho.items())))
        plan = summary["jobs"].get("plan")
        if plan:
            print(f"plan:        {plan['plan']} (digest {plan['plan_digest'][:12]})")
            for stage, s in plan["stages"].items():
                print(f"  {stage}: {s['budget_tokens']:,} tokens, " + ", ".join(
                    f"{k} {w:.3f}" for k, w in sorted(s["blend"].items(), key=lambda kv: -kv[1])[:8])
                    + (" …" if len(s["blend"]) > 8 else ""))
        print(f"\nlake:        {summary['lake']}")
        print(f"shards:      {summary['shards']}")
        if "expand" in jobs or "import_hf" in jobs:
            print(f"base model:  {jobs['base_model']['hf_dir']} → LlamaPro "
                  f"{jobs.get('expand', {}).get('out', '(not expanded)')} → NeMo {jobs['import_hf']['checkpoint']}")
        for number, stage in sorted(stages.items()):
            reused = " (already trained on these exact shards; reused)" if stage.get("resumed_from") \
                and stage.get("final_train_loss") is None else ""
            print(f"stage {number}:     {stage.get('checkpoint')}{reused}")
            if not reused:
                print(f"             {stage.get('steps')} steps from {stage.get('restore_from')}, final train loss "
                      f"{stage.get('final_train_loss'):.4f}")
        if "export_hf" in jobs:
            print(f"HF model:    {jobs['export_hf']['out']}")
        audit = jobs.get("contamination")
        if audit:
            print(f"\ncontamination audit of the {audit['items']} eval items ({', '.join(audit['suites'])}) against "
                  "the training tables: " + "; ".join(
                      f"{t}: {a['contaminated_any']} found by any n-gram, {a['contaminated_share']} by share"
                      for t, a in audit["audits"].items()))
        evals = eval_table(jobs)
        if evals:
            print("\n" + evals)
        if summary.get("lineage_text"):
            print("\nlineage of the last checkpoint (sailyard lineage):\n" + summary["lineage_text"])
        print(f"\nMLflow:      {summary['tracking_uri']}  (run {summary['mlflow_run_id']})")
        print("MLflow UI:   make ui   (or: .venv/bin/sailyard ui --work-dir "
              f"{summary['work_dir']}), then open the pipeline run:\n"
              f"             {summary['mlflow_run_url']}\n")
        tables: dict[str, int] = {}
        for job in summary["jobs"].values():  # in run order: a table's last write wins
            tables.update(job.get("tables", {}))
        return {"in": summary["jobs"]["ingest"]["in"], "kept": summary["jobs"]["export_plan"]["kept"],
                "tables": tables, "quality_models": quality,
                "mixture": (search or {}).get("weights"), "plan": (plan or {}).get("plan"),
                "mlflow_run_id": summary["mlflow_run_id"], "mlflow_run_url": summary["mlflow_run_url"],
                "work_dir": summary["work_dir"],
                "checkpoint": train.get("checkpoint"), "hf_model": jobs.get("export_hf", {}).get("out"),
                "eval": {k.removeprefix("eval_"): {"mlflow_run_id": j.get("mlflow_run_id"), "by_task": j.get("by_task"),
                                                  "sea_average": j.get("sea_average")}
                         for k, j in jobs.items() if k.startswith("eval_stage")},
                "contamination": jobs.get("contamination"),
                "lineage": {k: (summary.get("lineage") or {}).get(k) for k in ("tables", "source_files", "missing")}}

    from data_engine.jobrun import run_job

    return run_job("pipeline", work)


def eval_table(jobs: dict) -> str:
    """Each suite's tasks (primary metric, mean over languages) for each evaluated stage, side by side."""
    from eval.results import render

    runs = {k.removeprefix("eval_"): j for k, j in jobs.items() if k.startswith("eval_stage")}
    if not runs:
        return ""
    stages = sorted({k.split("_", 1)[0] for k in runs})
    suites = list(dict.fromkeys(k.split("_", 1)[1] for k in runs))
    rows = []
    for suite in suites:
        tasks = list(dict.fromkeys(t for st in stages for t in (runs.get(f"{st}_{suite}") or {}).get("results", {})))
        for task in tasks:
            metric = None
            cells = []
            for st in stages:
                per_lang = (runs.get(f"{st}_{suite}") or {}).get("results", {}).get(task, {})
                metric = metric or next((m for m in ("acc_norm", "bits_per_byte", "f1", "chrf_pp")
                                         if any(m in v for v in per_lang.values())), None)
                values = [v[metric] for v in per_lang.values() if metric in v]
                cells.append(f"{sum(values) / len(values):.3f}" if values else "-")
            langs = len((runs.get(f"{stages[-1]}_{suite}") or {}).get("results", {}).get(task, {}))
            rows.append([suite, f"{task} ({metric}, {langs} languages)", *cells])
        rows.append([suite, "SEA average, normalised (0 = chance)",
                     *[f"{(runs.get(f'{st}_{suite}') or {}).get('sea_average') or 0:.2f}" for st in stages]])
    return ("evaluation (mean over languages; per language in MLflow and `sailyard eval compare`):\n"
            + render(["suite", "task", *stages], rows))


if __name__ == "__main__":
    sys.exit(main())
