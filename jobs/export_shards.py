"""Tokenise the curated table into Megatron shards for one training stage, or for a mixture plan.

    spark-submit jobs/export_shards.py --lake <dir> --out <dir> --stage <name> [--config YAML]
        [--table NAME] [--input-version N] [--tokenizer qwen2.5|DIR|HF_NAME] [--langs tha,vie]
        [--part-bytes N]
    spark-submit jobs/export_shards.py --lake <dir> --out <dir> --plan plan.yaml [--config YAML]
        [--tokenizer ...] [--part-bytes N]

Writes each language as parts `<out>/<stage>/<lang>-<content hash>_text_document_<k>.{bin,idx}`
(EOD appended to every document; parts of at most `--part-bytes`, default 1 GiB, plus their last
document, each written by its own Spark task) and records each part in the `shard_manifest` table.
`--langs` takes tags as ingest does (`th` = `tha`) and replaces only those languages' shards of the
stage; a selection without documents is an error that changes nothing.

With `--plan` every shard group the plan names is exported as its own stage (its table version,
languages and top-percent selection; rows carry the plan's digest) and each plan stage gets a NeMo
data config `<out>/<stage>.data.yaml` for the trainer's `data.paths_file`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="export_shards", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", required=True, help="lake root directory")
    p.add_argument("--out", required=True, help="shard root directory")
    p.add_argument("--stage", help="training stage name, e.g. stage1 (required without --plan)")
    p.add_argument("--plan", help="plan.yaml from `sailyard plan`: export every shard group it names "
                                  "and a NeMo data config per stage (not with --stage)")
    p.add_argument("--config", help="YAML with an 'export:' section (or the section itself)")
    p.add_argument("--table", help="table to export (default: docs_curated, else docs_dedup)")
    p.add_argument("--input-version", type=int, help="version of that table (default: latest)")
    p.add_argument("--tokenizer", help="'qwen2.5' (bundled), a tokenizer directory or a HF name")
    p.add_argument("--langs", help="comma-separated languages to export, e.g. tha,vie or th,vi "
                                   "(default: all; only these languages' shards of the stage are replaced)")
    p.add_argument("--part-bytes", type=int, help="bound on one shard part's .bin in bytes (export.part_bytes; "
                                                  "default 1 GiB); each language is written as near-equal parts")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.plan and args.stage:
        parser.error("--stage and --plan exclude each other: a plan names its own stages (shard groups)")
    if not args.plan and not args.stage:
        parser.error("one of --stage or --plan is required")
    if args.plan:
        given = [f"--{k.replace('_', '-')}" for k in ("table", "input_version", "langs")
                 if getattr(args, k) is not None]
        if given:
            parser.error(f"{', '.join(given)} cannot be used with --plan: the plan names the tables, "
                         "versions and languages")

    def work() -> dict:
        from data_engine.config import section
        from data_engine.export.config import ExportConfig
        from data_engine.export.job import export_job, plan_export_job
        from data_engine.spark import get_spark

        cfg = section(args.config, "export", ExportConfig)
        if args.part_bytes is not None:
            cfg = dataclasses.replace(cfg, part_bytes=args.part_bytes)
        if args.plan:
            if args.tokenizer:
                cfg = dataclasses.replace(cfg, tokenizer=args.tokenizer)
            return plan_export_job(get_spark("sailyard-export"), args.lake, args.out, args.plan, cfg)
        langs = tuple(x.strip() for x in (args.langs or "").split(",") if x.strip())
        overrides = {"input_table": args.table, "tokenizer": args.tokenizer, "langs": langs or None}
        cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
        return export_job(get_spark("sailyard-export"), args.lake, args.out, args.stage, cfg,
                          input_version=args.input_version)

    from data_engine.jobrun import run_job

    return run_job("export_shards", work)


if __name__ == "__main__":
    sys.exit(main())
