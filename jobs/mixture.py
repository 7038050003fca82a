"""Choose the stage-1 data mixture the RegMix way: proxies, a regression, a search.

    sailyard mixture sweep  --lake L --out SWEEP [--stage proxy] [--runs K] [--budget-stage1 T1]
                            [--preset tiny|regmix] [--workers N] [--config YAML]
    sailyard mixture fit    --sweep SWEEP [--config YAML]
    sailyard mixture search --sweep SWEEP --out mixture.yaml [--force] [--objective sum|weighted|target]
                            [--targets tha,vie] [--min-rho R] [--samples N] [--config YAML]

`sweep` samples K mixtures of the stage-1 languages (Dirichlet around the token shares in
`token_counts`, capped in epochs of the planned stage-1 budget) and trains a tiny proxy on the
exported shards of `--stage` for each, recording every language's validation loss (one nested MLflow
run per proxy; a killed sweep resumes from the finished ones). `fit` fits one LightGBM regressor
per language (weights → validation loss) with honest cross-validation; `search` draws 100k
mixtures under the same caps, averages the predicted best and writes `mixture.yaml`, refusing
when the fit is not trustworthy (cross-validated Spearman ρ below `mixture.search.min_rho`) unless
`--force`. Settings: the `mixture:` section of the YAML.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from data_engine.mixture.budget import parse_tokens

SWEEP_JSON = "sweep.json"
FIT_DIR = "fit"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mixture", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="sweep|fit|search")
    sweep = sub.add_parser("sweep", help="sample mixtures and train a proxy on each")
    sweep.add_argument("--lake", required=True, help="lake root (token_counts and shard_manifest)")
    sweep.add_argument("--out", required=True, help="sweep directory (sweep.json, fit/); rerun to resume")
    sweep.add_argument("--stage", help="shard stage the proxies train on (default: mixture.sweep.stage, 'proxy')")
    sweep.add_argument("--runs", type=int, help="number of proxy runs (default: mixture.runs)")
    sweep.add_argument("--budget-stage1", type=parse_tokens, help="planned stage-1 tokens (the epoch caps)")
    sweep.add_argument("--preset", choices=("tiny", "regmix"), help="proxy size (default: mixture.sweep.preset)")
    sweep.add_argument("--workers", type=int, help="proxies trained at once (default: mixture.sweep.workers)")
    sweep.add_argument("--seed", type=int, help="sampler seed (default: mixture.sampler.seed)")
    sweep.add_argument("--config", help="YAML with a 'mixture:' section")
    fit = sub.add_parser("fit", help="fit the regressors on a sweep's finished proxies")
    fit.add_argument("--sweep", required=True, help="sweep directory")
    fit.add_argument("--config", help="YAML with a 'mixture:' section")
    search = sub.add_parser("search", help="search the mixture the fit predicts best; write mixture.yaml")
    search.add_argument("--sweep", required=True, help="sweep directory (fitted)")
    search.add_argument("--out", required=True, help="mixture.yaml to write")
    search.add_argument("--force", action="store_true", help="search even when the fit's ρ is below min_rho")
    search.add_argument("--objective", choices=("sum", "weighted", "target"))
    search.add_argument("--targets", help="comma-separated target languages (default: mixture.langs)")
    search.add_argument("--min-rho", type=float, help="refuse below this cross-validated Spearman ρ")
    search.add_argument("--samples", type=int, help="mixtures drawn in the search (default 100000)")
    search.add_argument("--top", type=int, help="best predicted mixtures averaged (default 128)")
    search.add_argument("--config", help="YAML with a 'mixture:' section")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    work = {"sweep": _sweep, "fit": _fit, "search": _search}[args.command]

    from data_engine.jobrun import run_job

    return run_job(f"mixture_{args.command}", lambda: work(args))


def _config(args: argparse.Namespace) -> Any:
    from data_engine.config import section
    from data_engine.mixture.config import MixtureConfig

    return section(args.config, "mixture", MixtureConfig)


def _sweep(args: argparse.Namespace) -> dict[str, Any]:
    from data_engine.config import from_dict
    from data_engine.mixture.study import proxy_inputs
    from trainer.sweep import SweepConfig, run_sweep

    cfg = _config(args)
    if args.seed is not None:
        cfg = dataclasses.replace(cfg, sampler=dataclasses.replace(cfg.sampler, seed=args.seed))
    sweep_doc = dict(cfg.sweep)
    for key, value in (("stage", args.stage), ("preset", args.preset), ("workers", args.workers)):
        if value is not None:
            sweep_doc[key] = value
    runs = args.runs if args.runs is not None else cfg.runs
    sweep_cfg = from_dict(SweepConfig, {**sweep_doc, "runs": runs}, "mixture.sweep", source=args.config or "defaults")
    budget = args.budget_stage1 or cfg.budget_stage1
    inputs = proxy_inputs(args.lake, sweep_cfg.stage, cfg, budget, runs)
    result = run_sweep(args.lake, args.out, inputs.langs, inputs.mixtures, sweep_cfg, meta=inputs.meta,
                       tokenizer=inputs.tokenizer, log=lambda m: print(m, file=sys.stderr, flush=True))
    summary = dataclasses.asdict(result) if dataclasses.is_dataclass(result) else dict(result)
    return {"in": runs, "kept": summary.get("finished", runs), "dropped": 0, "quarantined": 0,
            "tables": {}, "tables_read": inputs.tables_read, **summary}


def _fit(args: argparse.Namespace) -> dict[str, Any]:
    from data_engine.mixture.study import fit_sweep
    from trainer.sweep import sweep_results

    return fit_sweep(args.sweep, sweep_results(args.sweep), _config(args))


def _search(args: argparse.Namespace) -> dict[str, Any]:
    from data_engine.mixture.study import search_sweep
    from trainer.sweep import sweep_results

    cfg = _config(args)
    objective = cfg.objective
    if args.objective:
        objective = dataclasses.replace(objective, kind=args.objective)
    if args.targets:
        targets = tuple(x.strip() for x in args.targets.split(",") if x.strip())
        objective = dataclasses.replace(objective, targets=targets)
    search = cfg.search
    for key, value in (("min_rho", args.min_rho), ("samples", args.samples), ("top", args.top)):
        if value is not None:
            search = dataclasses.replace(search, **{key: value})
    cfg = dataclasses.replace(cfg, objective=objective, search=search)
    return search_sweep(args.sweep, sweep_results(args.sweep), Path(args.out), cfg, force=args.force)


if __name__ == "__main__":
    sys.exit(main())
