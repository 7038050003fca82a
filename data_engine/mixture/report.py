"""mixture.yaml, the search's answer as the plan reads it, and the two plots that let a person judge it.

The file says not only the weights but how far to trust them: the ρ figures (cross-validated, on
the untouched test split, and the linear baseline's), the spread of the predicted losses across the
fold models, how many proxies it rests on, whether the ρ floor was forced, and where it came from
(the caller's provenance: sweep id, token-count versions). Keys come in a fixed order and floats
are rounded, so the same search writes the same bytes and the plan's digest of it is stable.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_engine.errors import ConfigError, InputError
from data_engine.mixture.fit import FitResult
from data_engine.mixture.search import SearchResult

FORMAT = 1
WEIGHT_DIGITS = 6
"""Decimals of weights, prior and caps (the sampler's grid is 2e-4, so weights are exact)."""
LOSS_DIGITS = 6
RHO_DIGITS = 4
SUM_TOLERANCE = 1e-4
"""How far the written weights may sum from 1 (rounding only)."""


@dataclass(frozen=True)
class MixtureFile:
    """A read mixture.yaml: the fields the plan needs, typed, and the whole document."""

    weights: dict[str, float]
    predicted_objective: float | None
    objective: dict[str, Any]
    losses: dict[str, dict[str, float | None]]
    rho: dict[str, dict[str, Any]]
    runs: dict[str, int]
    prior: dict[str, float]
    caps: dict[str, float]
    budget_tokens: int
    forced: bool
    warnings: list[str]
    provenance: dict[str, Any]
    doc: dict[str, Any]


def mixture_document(result: SearchResult, *, provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The mixture.yaml content as an ordered dict of plain values."""
    return {
        "format": FORMAT,
        "weights": _rounded(result.weights, WEIGHT_DIGITS),
        "predicted_objective": _round(result.predicted_objective, LOSS_DIGITS),
        "objective_fold_std": _round(result.objective_std, LOSS_DIGITS),
        "prior_objective": _round(result.prior_objective, LOSS_DIGITS),
        "objective": {"kind": result.objective.kind, "targets": list(result.objective.targets),
                      "weights": _rounded(result.objective.weights, LOSS_DIGITS),
                      "coefficients": _rounded(result.coefficients, LOSS_DIGITS)},
        "losses": {t: {k: _round(v, LOSS_DIGITS) for k, v in result.losses[t].items()}
                   for t in sorted(result.losses)},
        "rho": {t: {k: v if isinstance(v, bool) else _round(v, RHO_DIGITS) for k, v in result.rho[t].items()}
                for t in sorted(result.rho)},
        "min_rho": result.config.min_rho,
        "forced": bool(result.forced),
        "runs": {"proxies": int(result.n_runs), "train": int(result.n_train), "test": int(result.n_test)},
        "prior": _rounded(result.prior, WEIGHT_DIGITS),
        "caps": _rounded(result.caps, WEIGHT_DIGITS),
        "budget_tokens": int(result.budget_tokens),
        "search": {"samples": result.config.samples, "top": result.config.top, "seed": result.config.seed,
                   "sampler": _plain(dataclasses.asdict(result.sampler), "sampler")},
        "warnings": list(result.warnings),
        "provenance": _plain(provenance, "provenance"),
    }


def write_mixture_yaml(path: str | Path, result: SearchResult, *, provenance: Mapping[str, Any]) -> Path:
    """Write mixture.yaml (deterministic bytes for the same result and provenance)."""
    import yaml

    doc = mixture_document(result, provenance=provenance)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("# written by sailyard mixture search\n" + text, encoding="utf-8")
    tmp.replace(path)
    return path


def read_mixture_yaml(path: str | Path) -> MixtureFile:
    """Read and check a mixture.yaml: weights over languages, non-negative, summing to 1.

    Raises:
        ConfigError: the file does not exist.
        InputError: it is not a mixture.yaml this sailyard wrote, or its weights are unusable.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"mixture file {path} does not exist; write one with `sailyard mixture search`")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(f"{path} is not a mixture.yaml of format {FORMAT} (got format "
                         f"{doc.get('format') if isinstance(doc, dict) else None!r})")
    missing = [k for k in ("weights", "objective", "losses", "rho", "runs", "prior", "caps", "budget_tokens",
                           "provenance") if k not in doc]
    if missing:
        raise InputError(f"{path} lacks {', '.join(missing)}")
    weights = doc["weights"]
    if not isinstance(weights, dict) or not weights:
        raise InputError(f"{path}: weights must be a mapping language → weight, got {weights!r}")
    bad = {k: v for k, v in weights.items()
           if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0}
    if bad:
        raise InputError(f"{path}: weights must be finite and ≥ 0, got {bad}")
    total = sum(weights.values())
    if abs(total - 1) > SUM_TOLERANCE:
        raise InputError(f"{path}: weights sum to {total:.6g}, not 1")
    return MixtureFile(weights={str(k): float(v) for k, v in weights.items()},
                       predicted_objective=doc.get("predicted_objective"), objective=doc["objective"],
                       losses=doc["losses"], rho=doc["rho"], runs=doc["runs"],
                       prior={str(k): float(v) for k, v in doc["prior"].items()},
                       caps={str(k): float(v) for k, v in doc["caps"].items()},
                       budget_tokens=int(doc["budget_tokens"]), forced=bool(doc.get("forced", False)),
                       warnings=list(doc.get("warnings") or []), provenance=doc["provenance"] or {}, doc=doc)


def plot_weights(prior: Mapping[str, float], weights: Mapping[str, float], path: str | Path, *,
                 caps: Mapping[str, float] | None = None) -> Path:
    """Bars per language: the prior (token shares) beside the chosen weights; caps as ticks."""
    plt = _pyplot()
    langs = sorted(set(prior) | set(weights))
    x = np.arange(len(langs))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(langs) + 1.5), 3.2))
    ax.bar(x - 0.2, [prior.get(lang, 0.0) for lang in langs], width=0.4, label="prior (token share)",
           color="#bbbbbb")
    ax.bar(x + 0.2, [weights.get(lang, 0.0) for lang in langs], width=0.4, label="searched mixture",
           color="#4477aa")
    if caps:
        shown = [(i, caps[lang]) for i, lang in enumerate(langs) if lang in caps and caps[lang] < 1]
        if shown:
            ax.scatter([i + 0.2 for i, _ in shown], [c for _, c in shown], marker="_", s=300, color="#cc3311",
                       label="epoch cap", zorder=3)
    ax.set_xticks(x, langs, fontsize=8)
    ax.set_ylabel("weight")
    ax.legend(fontsize=7)
    ax.set_title("mixture weights vs prior", fontsize=10)
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_predictions(fit_result: FitResult, path: str | Path) -> Path:
    """One panel per target: actual loss vs the prediction of a model that did not see the run
    (out-of-fold for CV runs, the final model for test runs), with the ρ figures in the title."""
    plt = _pyplot()
    targets = list(fit_result.targets)
    cols = min(4, len(targets))
    rows = math.ceil(len(targets) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.8 * rows), squeeze=False)
    for ax, t in zip(axes.flat, targets, strict=False):
        f = fit_result.targets[t]
        cv_actual = f.y[fit_result.train_index]
        ax.scatter(cv_actual, f.oof, s=10, color="#4477aa", label="CV (out of fold)")
        if fit_result.n_test:
            ax.scatter(f.y[fit_result.test_index], f.test_pred, s=14, color="#cc3311", marker="^", label="test")
        both = np.concatenate([f.y, f.oof, f.test_pred])
        both = both[np.isfinite(both)]
        lo, hi = float(both.min()), float(both.max())
        ax.plot([lo, hi], [lo, hi], color="#999999", linewidth=0.8)
        ax.set_title(f"{t}: cv ρ {_text(f.cv_rho)}, test ρ {_text(f.test_rho)}, linear cv ρ {_text(f.linear_cv_rho)}",
                     fontsize=8)
        ax.set_xlabel("actual loss", fontsize=7)
        ax.set_ylabel("predicted", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(targets):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.suptitle(f"predicted vs actual validation loss ({fit_result.n_runs} proxy runs)", fontsize=10)
    fig.tight_layout()
    return _save(fig, plt, path)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, plt: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return path


def _text(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.2f}"


def _round(x: float | None, digits: int) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    value = round(float(x), digits)
    return 0.0 if value == 0 else value  # no "-0.0"


def _rounded(values: Mapping[str, float], digits: int) -> dict[str, float | None]:
    return {k: _round(values[k], digits) for k in sorted(values)}


def _plain(value: Any, where: str) -> Any:
    """`value` as YAML-safe plain data with sorted mapping keys; ConfigError on anything else."""
    if isinstance(value, Mapping):
        return {str(k): _plain(value[k], f"{where}.{k}") for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return _round(value, 10)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Path):
        return str(value)
    raise ConfigError(f"mixture.yaml {where}: {type(value).__name__} {value!r} is not plain data (str, number, "
                      "bool, list, mapping)")
