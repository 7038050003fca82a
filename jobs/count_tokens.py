"""Count a table's training tokens per language, source and quality band, exactly as the exporter writes them.

    spark-submit jobs/count_tokens.py --lake <dir> [--table docs_curated] [--input-version N]
        [--config YAML] [--tokenizer qwen2.5|DIR|HF_NAME]

Tokenises every document of a pinned table version on the executors (one EOD per document,
documents under `min_tokens` counted as dropped) and writes the rows of that (table, version) into
the `token_counts` table, keeping the rows of the table's other versions. The mixture sampler and
the plan read them back with `data_engine.tokens.read_token_counts`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="count_tokens", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", required=True, help="lake root directory")
    p.add_argument("--table", help="table to count (default: tokens.table of the config, docs_curated)")
    p.add_argument("--input-version", type=int, help="version of that table (default: latest)")
    p.add_argument("--config", help="YAML with a 'tokens:' section (or the section itself)")
    p.add_argument("--tokenizer", help="'qwen2.5' (bundled), a tokenizer directory or a HF name")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> dict:
        from data_engine.config import section
        from data_engine.spark import get_spark
        from data_engine.tokens.config import TokenCountConfig
        from data_engine.tokens.job import count_tokens_job

        cfg = section(args.config, "tokens", TokenCountConfig)
        overrides = {"table": args.table, "tokenizer": args.tokenizer}
        cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
        return count_tokens_job(get_spark("sailyard-count-tokens"), args.lake, cfg,
                                input_version=args.input_version)

    from data_engine.jobrun import run_job

    return run_job("count_tokens", work)


if __name__ == "__main__":
    sys.exit(main())
