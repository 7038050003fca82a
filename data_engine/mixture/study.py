"""The mixture study as jobs run it: lake → proxy inputs, sweep → fit → search → mixture.yaml → plan.

Each function is one `sailyard` command's work, with its MLflow run and JSON summary; the maths
lives in `sample`, `fit`, `search` and `plan`. The proxies' training is the trainer's
(`trainer.sweep`): the job hands its results in, so the data engine never imports torch.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_engine import tracking
from data_engine.config import to_dict
from data_engine.errors import ConfigError
from data_engine.mixture.config import MixtureConfig
from data_engine.mixture.sample import epoch_caps, prior, sample_mixtures

FIT_DIR = "fit"
"""Inside a sweep directory: the fitted regressors (`mixture fit` writes, `mixture search` reads)."""


@dataclass(frozen=True)
class ProxyInputs:
    """What a sweep needs from the lake: the mixtures to train and where their numbers came from."""

    langs: list[str]
    mixtures: np.ndarray
    meta: dict[str, Any]
    tokenizer: str
    tables_read: dict[str, int]


def proxy_inputs(lake: str, stage: str, cfg: MixtureConfig, budget_stage1: int | None, runs: int) -> ProxyInputs:
    """Sample `runs` mixtures of `cfg.langs` from the token counts of the table the proxy shards
    were exported from, capped in epochs of the planned stage-1 budget.

    The token counts must describe exactly the shards the proxies train on (same table version,
    same tokenizer, the same documents and tokens per language), so the prior and the caps are
    about the data actually mixed.

    Raises:
        ConfigError: no budget, no proxy shards, shards of several table versions, a stage-1
            language without shards, or token counts that disagree with the shards.
    """
    from data_engine.export.manifest import read_manifest
    from data_engine.tokens import read_token_counts

    if budget_stage1 is None:
        raise ConfigError("the planned stage-1 budget sets the epoch caps: give --budget-stage1 TOKENS "
                          "(or mixture.budget_stage1)")
    manifest_version, rows = read_manifest(lake)
    rows = [r for r in rows if r["stage"] == stage]
    if not rows:
        raise ConfigError(f"no shards of stage {stage!r} in {lake}'s shard_manifest; export the proxies' data "
                          f"first: spark-submit jobs/export_shards.py --lake {lake} --out <dir> --stage {stage}")
    sources = sorted({(r["source_table"], r["source_version"]) for r in rows})
    if len(sources) != 1:
        raise ConfigError(f"the {stage!r} shards come from several table versions {sources}; re-export the stage")
    [(table, version)] = sources
    shard = {}
    for r in rows:
        docs, tokens = shard.get(r["lang"], (0, 0))
        shard[r["lang"]] = (docs + r["docs"], tokens + r["tokens"])
    missing = [lang for lang in cfg.langs if lang not in shard]
    if missing:
        raise ConfigError(f"stage-1 language(s) {', '.join(missing)} have no {stage!r} shards (languages with "
                          f"shards: {', '.join(sorted(shard))}); export them or set mixture.langs")
    counts = read_token_counts(lake, table, version)
    if counts.tokenizer_digest != rows[0]["tokenizer_digest"]:
        raise ConfigError(f"token_counts of {table} v{version} used another tokenizer than the {stage!r} shards; "
                          "count with the training tokenizer")
    disagree = [f"{lang} (counted {counts.totals[lang].docs} docs / {counts.totals[lang].tokens} tokens, "
                f"shards {shard[lang][0]} / {shard[lang][1]})" if lang in counts.totals else f"{lang} (not counted)"
                for lang in cfg.langs
                if lang not in counts.totals or (counts.totals[lang].docs, counts.totals[lang].tokens) != shard[lang]]
    if disagree:
        raise ConfigError(f"token_counts of {table} v{version} and the {stage!r} shards disagree: "
                          f"{'; '.join(disagree)}; re-run count_tokens and export_shards with the same settings")
    tokens = {lang: counts.totals[lang].tokens for lang in sorted(cfg.langs)}
    langs, mixtures = sample_mixtures(tokens, budget_stage1, runs, cfg.sampler)
    meta = {"lake": str(lake), "stage": stage, "table": table, "version": int(version),
            "token_counts_version": counts.counts_version, "manifest_version": manifest_version,
            "tokens": tokens, "prior": prior(tokens),
            "caps": epoch_caps(tokens, budget_stage1, cfg.sampler.max_epochs),
            "budget_stage1": int(budget_stage1), "sampler": to_dict(cfg.sampler)}
    return ProxyInputs(langs, mixtures, meta, rows[0]["tokenizer"], {table: int(version)})


def _work_dir(meta: Mapping[str, Any]) -> Path:
    return tracking.work_dir_for(meta["lake"])


def fit_sweep(sweep_dir: str | Path, results: Any, cfg: MixtureConfig) -> dict[str, Any]:
    """Fit the regressors on a sweep's finished proxies into `<sweep>/fit/`; log the ρ figures."""
    from data_engine.mixture.fit import fit
    from data_engine.mixture.report import plot_predictions

    n = len(results.weights)
    if n < 4:
        raise ConfigError(f"{sweep_dir}: only {n} finished proxy runs; fitting needs at least 4 (RegMix used 512)"
                          " — run or resume `mixture sweep` first")
    fitted = fit(list(results.langs), np.asarray(results.weights), results.losses, cfg.fit)
    out = fitted.save(Path(sweep_dir) / FIT_DIR)
    print(fitted.table(), file=sys.stderr, flush=True)
    with tracking.start_run("mixture_fit", work_dir=_work_dir(results.meta), kind="mixture",
                            parent_run_id=results.mlflow_run_id,
                            params={"fit": to_dict(cfg.fit), "sweep": str(sweep_dir)}) as run:
        run.log_metrics(fitted.metrics())
        run.log_artifact(out / "fit.json", "fit")  # the figures; the boosters (tens of MB) stay in the sweep dir
        with tempfile.TemporaryDirectory() as tmp:
            run.log_artifact(plot_predictions(fitted, Path(tmp) / "predicted_vs_actual.png"), "plots")
    rho = {t: {"cv": _num(f.cv_rho), "test": _num(f.test_rho), "linear_cv": _num(f.linear_cv_rho),
               "linear_test": _num(f.linear_test_rho)} for t, f in fitted.targets.items()}
    return {"in": n, "kept": n, "dropped": 0, "quarantined": 0, "tables": {}, "tables_read": {},
            "mlflow_run_id": run.run_id, "runs": n, "runs_train": fitted.n_train, "runs_test": fitted.n_test,
            "min_child_samples": fitted.min_child_samples, "rho": rho, "fit_dir": str(out),
            "warnings": list(fitted.warnings)}


def search_sweep(sweep_dir: str | Path, results: Any, out: Path, cfg: MixtureConfig, *,
                 force: bool = False) -> dict[str, Any]:
    """Search the fitted sweep for the best mixture under its caps; write `out` (mixture.yaml)."""
    from data_engine.mixture.fit import FitResult
    from data_engine.mixture.report import plot_predictions, plot_weights, write_mixture_yaml
    from data_engine.mixture.search import search

    fit_dir = Path(sweep_dir) / FIT_DIR
    if not (fit_dir / "fit.json").is_file():
        raise ConfigError(f"{sweep_dir} has not been fitted; run `sailyard mixture fit --sweep {sweep_dir}` first")
    fitted = FitResult.load(fit_dir)
    meta = results.meta
    objective = cfg.objective
    if objective.kind == "sum" and not objective.targets:  # Sailor2's: the stage-1 languages' losses
        objective = dataclasses.replace(objective, targets=tuple(sorted(x for x in cfg.langs if x in fitted.targets)))
    result = search(fitted, objective, meta["tokens"], meta["budget_stage1"],
                    _sampler(cfg, meta), cfg.search, force=force)
    provenance = {"sweep": str(Path(sweep_dir).resolve()), "sweep_id": getattr(results, "sweep_id", None),
                  "sweep_run_id": results.mlflow_run_id, "lake": meta["lake"], "stage": meta["stage"],
                  "table": meta["table"], "version": meta["version"],
                  "token_counts_version": meta["token_counts_version"], "langs": list(results.langs)}
    path = write_mixture_yaml(out, result, provenance=provenance)
    for note in result.warnings:
        print(f"mixture search: {note}", file=sys.stderr, flush=True)
    with tracking.start_run("mixture_search", work_dir=_work_dir(meta), kind="mixture",
                            parent_run_id=results.mlflow_run_id,
                            params={"objective": to_dict(objective), "search": to_dict(cfg.search),
                                    "force": force}) as run:
        run.log_params({f"w.{lang}": w for lang, w in result.weights.items()})
        run.log_metrics({"predicted_objective": result.predicted_objective, "prior_objective": result.prior_objective,
                         "objective_fold_std": result.objective_std}
                        | {f"weight.{lang}": w for lang, w in result.weights.items()}
                        | {f"predicted_loss.{t}": v["loss"] for t, v in result.losses.items()})
        run.set_tags({"forced": str(result.forced).lower(), "mixture_file": str(path)})
        run.log_artifact(path)
        with tempfile.TemporaryDirectory() as tmp:
            run.log_artifact(plot_weights(result.prior, result.weights, Path(tmp) / "weights_vs_prior.png",
                                          caps=result.caps), "plots")
            run.log_artifact(plot_predictions(fitted, Path(tmp) / "predicted_vs_actual.png"), "plots")
    return {"in": fitted.n_runs, "kept": fitted.n_runs, "dropped": 0, "quarantined": 0, "tables": {},
            "tables_read": {}, "mlflow_run_id": run.run_id, "mixture": str(path),
            "weights": result.weights, "prior": result.prior, "predicted_objective": result.predicted_objective,
            "prior_objective": result.prior_objective, "forced": result.forced,
            "rho": {t: result.rho[t]["cv"] for t in result.coefficients}, "warnings": list(result.warnings)}


def plan_job(mixture_path: str | Path, out: str | Path, cfg: MixtureConfig, *, budget_stage1: int | None,
             budget_stage2: int | None, lake: str | None = None) -> dict[str, Any]:
    """`sailyard plan`: the two-stage plan from a mixture.yaml, written to `out` and logged."""
    from data_engine.mixture.plan import make_plan, write_plan
    from data_engine.mixture.report import read_mixture_yaml

    if budget_stage1 is None or budget_stage2 is None:
        raise ConfigError("both budgets are needed: --budget-stage1 TOKENS --budget-stage2 TOKENS "
                          "(or mixture.budget_stage1 / budget_stage2)")
    mixture = read_mixture_yaml(mixture_path)
    lake = lake or mixture.provenance.get("lake")
    if not lake:
        raise ConfigError(f"{mixture_path} does not say which lake it was searched on; give --lake")
    base_version = mixture.provenance.get("version") if mixture.provenance.get("table") == cfg.plan.base_table \
        else None
    plan = make_plan(lake, mixture.weights, budget_stage1, budget_stage2, cfg.plan, stage1_langs=cfg.langs,
                     base_version=base_version, mixture_path=mixture_path)
    path = write_plan(plan, out)
    for note in plan["warnings"]:
        print(f"plan: {note}", file=sys.stderr, flush=True)
    with tracking.start_run("plan", work_dir=tracking.work_dir_for(lake), kind="mixture",
                            parent_run_id=mixture.provenance.get("sweep_run_id"),
                            params={"plan": to_dict(cfg.plan), "budget_stage1": budget_stage1,
                                    "budget_stage2": budget_stage2, "mixture": str(mixture_path)}) as run:
        run.set_tags({"plan_digest": plan["plan_digest"]})
        for group in plan["shards"].values():
            run.table_read(group["table"], _table_path(lake, group["table"]), group["version"])
        run.log_metrics({f"{stage}.{e['kind']}.{e['lang']}": e["weight"]
                         for stage, s in plan["stages"].items() for e in s["blend"]})
        run.log_artifact(path)
    return {"in": len(mixture.weights), "kept": len(mixture.weights), "dropped": 0, "quarantined": 0,
            "tables": {}, "tables_read": {g["table"]: g["version"] for g in plan["shards"].values()},
            "mlflow_run_id": run.run_id, "plan": str(path), "plan_digest": plan["plan_digest"],
            "stages": {name: {"budget_tokens": s["budget_tokens"],
                              "blend": {f"{e['kind']}:{e['lang']}": round(e["weight"], 6) for e in s["blend"]}}
                       for name, s in plan["stages"].items()},
            "warnings": plan["warnings"]}


def _table_path(lake: str, table: str) -> Any:
    from data_engine import lake as lake_io

    return lake_io.table_path(lake, table)


def _sampler(cfg: MixtureConfig, meta: Mapping[str, Any]) -> Any:
    """The sweep's own sampler settings (its caps and grid), whatever the YAML says now."""
    from data_engine.config import from_dict
    from data_engine.mixture.sample import SamplerConfig

    return from_dict(SamplerConfig, meta.get("sampler") or to_dict(cfg.sampler), "sweep.json sampler")


def _num(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 4)
