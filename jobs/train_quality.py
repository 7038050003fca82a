"""Train a language's fastText quality classifier and register it in MLflow.

    spark-submit jobs/train_quality.py --lake <dir> --lang <l> --positives <path> [--config YAML]
        [--negatives-table T] [--max-positives N] [--max-negatives N] [--epoch N] [--seed N]

Positives: a .jsonl (field `text`), .txt (one document per line) or Parquet file, or a directory of
them. Negatives: a reproducible sample of the language's `docs_clean`. Registers
`sailyard-quality-<lang>` with the held-out precision, recall and AUC.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_quality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", required=True, help="lake root directory")
    p.add_argument("--lang", required=True, help="language code, e.g. tha")
    p.add_argument("--positives", required=True, help="file or directory of high-quality text")
    p.add_argument("--config", help="YAML with a 'quality:' section (or the section itself)")
    p.add_argument("--negatives-table", help="table the negatives are sampled from (default docs_clean)")
    p.add_argument("--max-positives", type=int, help="cap on positives (default 10000)")
    p.add_argument("--max-negatives", type=int, help="cap on negatives (default 10000)")
    p.add_argument("--epoch", type=int, help="fastText epochs")
    p.add_argument("--seed", type=int, help="seed of the negative sample, the split and fastText")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> dict:
        from data_engine.config import section
        from data_engine.errors import ConfigError
        from data_engine.langs import normalize_lang
        from data_engine.quality.config import QualityTrainConfig
        from data_engine.quality.job import train_quality_job
        from data_engine.spark import get_spark

        cfg = section(args.config, "quality", QualityTrainConfig)
        overrides = {k: getattr(args, k) for k in ("negatives_table", "max_positives", "max_negatives", "epoch", "seed")
                     if getattr(args, k) is not None}
        cfg = dataclasses.replace(cfg, **overrides)
        lang = normalize_lang(args.lang)
        if lang == "und" or not lang.isalpha():
            raise ConfigError(f"--lang {args.lang!r}: not a language code (e.g. tha, th, vie, zsm, ms)")
        return train_quality_job(get_spark("sailyard-train-quality"), args.lake, lang, args.positives, cfg)

    from data_engine.jobrun import run_job

    return run_job("train_quality", work)


if __name__ == "__main__":
    sys.exit(main())
