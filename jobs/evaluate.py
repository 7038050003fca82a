"""Score a checkpoint on an eval suite, per task and language, into MLflow.

    sailyard eval --checkpoint <hf dir | NeMo checkpoint | run folder> --suite <mini | sea-mini | suite.yaml>
                  [--work-dir work] [--batch-size 8] [--device cpu|cuda] [--limit N]
    sailyard eval --checkpoint C --mc items.jsonl        # {"id","lang","context","choices":[...],"gold":k}
    sailyard eval --checkpoint C --corpus items.jsonl    # {"id","lang","text"}
    sailyard eval compare <eval run | training run | checkpoint>... [--work-dir work]

A NeMo checkpoint is exported to Hugging Face format first (the trainer's export-hf, cached under
<work-dir>/eval/hf/) and scored there, with lm-evaluation-harness's definitions. The last stdout
line is the job JSON: {"results": {task: {lang: {metric: value}}}, "normalised", "by_language", ...}.
Exit codes: 0 done, 2 bad arguments or input, 1 anything else.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="HF dir, NeMo checkpoint, or a run's checkpoint folder")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--suite", help="built-in suite name (mini, sea-mini) or a suite YAML")
    what.add_argument("--mc", help="multiple-choice items JSONL, scored zero-shot")
    what.add_argument("--corpus", help="corpus items JSONL (bits per byte)")
    p.add_argument("--work-dir", default=None, help="MLflow store and export cache (default: the work dir the "
                   "checkpoint's training run recorded, else work)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--max-length", type=int, default=None, help="context length (default: the model's)")
    p.add_argument("--limit", type=int, default=None, help="items per task and language (overrides the suite)")
    p.add_argument("--data-root", default=None, help="where the eval sets are (default: the suite's, else "
                   "$SAILYARD_EVAL_DATA, else ../shared/data)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-mlflow", action="store_true", help="print results only")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:
        return compare(argv[1:])
    args = build_parser().parse_args(argv)
    from data_engine.jobrun import run_job

    return run_job("eval", lambda: run(args))


def run(args: argparse.Namespace) -> dict:
    from eval import harness, results
    from eval.checkpoint import resolve
    from eval.items import read_choice_jsonl, read_text_jsonl
    from eval.model import CausalLM, ModelConfig
    from eval.suites import load_suite

    started = time.time()
    from eval.checkpoint import recorded_work_dir

    work_dir = Path(args.work_dir or recorded_work_dir(args.checkpoint) or "work").absolute()
    if args.suite:
        suite, suite_path = load_suite(args.suite)
        if args.limit is not None:
            suite = replace(suite, tasks=tuple(replace(t, limit=args.limit) for t in suite.tasks))
        if args.data_root:
            suite = replace(suite, data_root=str(Path(args.data_root).absolute()))
        items = None
    else:
        path = Path(args.mc or args.corpus)
        items = read_choice_jsonl(path) if args.mc else read_text_jsonl(path)
        suite_path = path
    ckpt = resolve(args.checkpoint, work_dir=work_dir)
    log(f"eval: {ckpt.label} ({'exported to ' + str(ckpt.hf_dir) if ckpt.nemo else 'Hugging Face dir'})")
    model = CausalLM(ckpt.hf_dir, ModelConfig(batch_size=args.batch_size, device=args.device,
                                              max_length=args.max_length))
    progress = not args.no_progress
    if items is None:
        from eval.tasks import EvalContext

        context = EvalContext(training_run_id=ckpt.training_run_id, work_dir=work_dir,
                              decode=lambda ids: model.tokenizer.decode(ids, skip_special_tokens=True))
        result = harness.run_suite(model, suite, suite_path, progress=progress, log=log, context=context)
    else:
        result = harness.score_items(model, items, name=path.stem, progress=progress)
    doc = result.to_dict()
    doc.update({"checkpoint": ckpt.label, "hf_dir": str(ckpt.hf_dir), "training_run_id": ckpt.training_run_id,
                "device": str(getattr(model, "device", args.device or "cpu"))})
    doc["contamination"] = _verdict(ckpt.training_run_id, work_dir)
    if not args.no_mlflow:
        doc["mlflow_run_id"] = results.log(doc, work_dir=work_dir, checkpoint_label=ckpt.label,
                                           training_run_id=ckpt.training_run_id,
                                           suite_file=suite_path if args.suite else None)
    doc["job_seconds"] = round(time.time() - started, 2)
    print(_table(doc), file=sys.stderr)
    return doc


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _verdict(run_id: str | None, work_dir: Path) -> dict | None:
    if run_id is None:
        return None
    from eval.training_data import contamination_verdict

    try:
        return contamination_verdict(run_id, work_dir)
    except ImportError:  # pragma: no cover - the audit is part of the data extra
        return None


def _table(doc: dict) -> str:
    """Task × language, the primary metric of each (what the demo prints)."""
    from eval.results import render
    from eval.suites import PRIMARY

    langs = list(dict.fromkeys(lang for per in doc["results"].values() for lang in per))
    header = ["task"] + langs
    rows = []
    for task, per in doc["results"].items():
        metric = next((m for m in (PRIMARY.get("multiple_choice"), "bits_per_byte", "f1", "chrf_pp")
                       if any(m in v for v in per.values())), None)
        rows.append([f"{task} ({metric})"] + [f"{per[lang][metric]:.3f}" if lang in per and metric in per[lang]
                                              else "" for lang in langs])
    if doc["by_language"]:
        rows.append(["normalised mean"] + [f"{doc['by_language'].get(lang, 0):.1f}" if lang in doc["by_language"]
                                           else "" for lang in langs])
    return render(header, rows)


def compare(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="eval compare", description="compare eval runs across checkpoints")
    p.add_argument("targets", nargs="+", help="eval run ids, training run ids or checkpoints")
    p.add_argument("--work-dir", default="work")
    p.add_argument("--no-mlflow", action="store_true")
    args = p.parse_args(argv)
    from data_engine.errors import ConfigError
    from data_engine.jobrun import run_job
    from eval import results

    def work() -> dict:
        work_dir = Path(args.work_dir).absolute()
        runs = []
        for target in args.targets:
            found = results.eval_runs(work_dir, target)
            if not found:
                raise ConfigError(f"no eval run found for {target} in {work_dir}'s MLflow store")
            runs.extend(found)
        header, rows = results.compare_table(runs)
        table = results.render(header, rows)
        print(table, flush=True)
        summary = {"runs": [r.info.run_id for r in runs], "metrics": len(rows), "table": {
            row[0]: dict(zip(header[1:], row[1:], strict=True)) for row in rows}}
        if not args.no_mlflow:
            summary["mlflow_run_id"] = results.log_comparison(work_dir, runs, table)
        return summary

    return run_job("eval-compare", work)


if __name__ == "__main__":
    sys.exit(main())
