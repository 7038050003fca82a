"""`sailyard <command>`: the jobs without remembering their paths.

Each command runs the same `main()` as its spark-submit entry point (local Spark, in this
process), so flags, output and exit codes are identical.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("jobs.pipeline", "run the whole pipeline on the bundled sample corpus"),
    "ingest": ("jobs.ingest", "raw JSONL/Parquet → docs_raw + quarantine"),
    "clean": ("jobs.clean", "docs_raw → docs_clean + drops: normalisation, heuristics, LID"),
    "dedup": ("jobs.dedup", "docs_clean → docs_dedup + drops, line_drops"),
    "train-quality": ("jobs.train_quality", "train + register a language's fastText quality classifier"),
    "score-quality": ("jobs.score_quality", "docs_dedup → docs_scored → docs_curated (top p%% per language)"),
    "count-tokens": ("jobs.count_tokens", "exact tokens per language, source and quality band → token_counts"),
    "mixture": ("jobs.mixture", "RegMix-style mixture study: sweep (proxies), fit, search → mixture.yaml"),
    "plan": ("jobs.plan", "mixture.yaml + budgets → plan.yaml (both training stages)"),
    "export-shards": ("jobs.export_shards", "a table → Megatron shards + shard_manifest (or every shard of a plan)"),
    "expand": ("jobs.expand", "LlamaPro block expansion of a Hugging Face Qwen2/Llama checkpoint"),
    "import-hf": ("jobs.import_hf", "a Hugging Face Qwen2 checkpoint → a NeMo checkpoint (every tensor accounted for)"),
    "export-hf": ("jobs.export_hf", "a NeMo checkpoint → a Hugging Face Qwen2 checkpoint"),
    "train": ("trainer.pretrain", "NeMo pretraining: a plan's stage (--stage 1|2 --plan) or a config; --launch"),
    "eval": ("jobs.evaluate", "score a checkpoint on an eval suite per task and language (or `eval compare` runs)"),
    "contamination": ("jobs.contamination", "n-gram audit of eval items against a training table (+ decontaminate)"),
    "lineage": ("jobs.lineage", "a checkpoint's chain back to plan, shards, table versions and source files"),
    "reproduce-shards": ("jobs.reproduce_shards", "rebuild a run's shards from pinned versions; byte-compare"),
    "report": ("jobs.report", "per-stage, per-language counts of a lake"),
    "vacuum": ("jobs.vacuum", "delete files no table version needs (and dead writers' leftovers)"),
    "sample": ("jobs.sample", "write the bundled sample corpus to a folder"),
    "ui": ("jobs.ui", "serve the MLflow UI on 127.0.0.1"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="sailyard", description="Sailor2-style data engine and trainer.",
        epilog="Run `sailyard <command> --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        parser.error(f"unknown command {command!r}")
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
