"""Plan both Sailor2 training stages from a searched mixture and the lake's token counts.

    sailyard plan --mixture mixture.yaml --budget-stage1 T1 --budget-stage2 T2 --out plan.yaml
                  [--lake L] [--config YAML]

Stage 1: the mixture over the stage-1 languages, from the curated table. Stage 2: `replay_fraction`
(0.2) replayed from stage-1 data in stage-1 proportions, the rest from each language's top-q% by
quality score (`mixture.plan.hq_percent`, per language in `hq_percent_by_lang`) over all languages.
Every entry's epochs are checked against `mixture.plan.max_epochs`; binding caps are warnings in the
plan. `plan.yaml` names the table versions and token counts it used and carries its own digest;
`export_shards.py --plan plan.yaml` writes the shards it names and a NeMo data config per stage.
"""

from __future__ import annotations

import argparse
import sys

from data_engine.mixture.budget import parse_tokens


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mixture", required=True, help="mixture.yaml written by `sailyard mixture search`")
    p.add_argument("--budget-stage1", type=parse_tokens, help="stage-1 tokens (default: mixture.budget_stage1)")
    p.add_argument("--budget-stage2", type=parse_tokens, help="stage-2 tokens (default: mixture.budget_stage2)")
    p.add_argument("--out", required=True, help="plan.yaml to write")
    p.add_argument("--lake", help="lake root (default: the lake the mixture was searched on)")
    p.add_argument("--config", help="YAML with a 'mixture:' section (its 'plan:' part)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> dict:
        from data_engine.config import section
        from data_engine.mixture.config import MixtureConfig
        from data_engine.mixture.study import plan_job

        cfg = section(args.config, "mixture", MixtureConfig)
        return plan_job(args.mixture, args.out, cfg, budget_stage1=args.budget_stage1 or cfg.budget_stage1,
                        budget_stage2=args.budget_stage2 or cfg.budget_stage2, lake=args.lake)

    from data_engine.jobrun import run_job

    return run_job("plan", work)


if __name__ == "__main__":
    sys.exit(main())
