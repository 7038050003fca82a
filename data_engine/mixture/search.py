"""Find the mixture the regression predicts best, among mixtures the budget can actually train.

RegMix (`regression.ipynb`, "Simulate") draws 100k mixtures from Dirichlet(prior) with no cap, no
minimum and no temperature, predicts one target and averages the 128 best. Its answer can ask for
more epochs of a language than anyone would train. Here the draws come from the sweep's own sampler
(`sample_mixtures(..., distinct=False)`: the same temperature, strengths, minimum and epoch caps),
the objective may be a sum, a weighted sum or one target, the average of the best is projected
back onto the caps and the grid (the average is inside the caps but not on the minimum grid), and
the mixture is then predicted once more so the reported figures are those of what is written.

A regression that cannot rank mixtures picks noise: the search refuses when the cross-validated ρ
of any objective target is below `min_rho`, unless forced — and then the result says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from data_engine.errors import ConfigError
from data_engine.mixture.fit import FitResult
from data_engine.mixture.sample import SamplerConfig, epoch_caps, prior, project_to_caps, sample_mixtures

NEAR_CAP = 0.95
"""A weight this close to its cap is reported as bound by it: an average of draws inside the caps
reaches a cap only where nearly every top draw sits on it."""


@dataclass(frozen=True)
class Objective:
    kind: Literal["sum", "weighted", "target"] = "sum"
    """sum: Σ loss over `targets` (Sailor2: the stage-1 languages); weighted: Σ weights[t] × loss;
    target: the loss of the one target in `targets`."""
    targets: tuple[str, ...] = ()
    """sum: the targets summed (empty: every target of the fit; the CLI passes the stage-1
    languages); target: exactly one; weighted: not used."""
    weights: dict[str, float] = field(default_factory=dict)
    """weighted: target → coefficient (≥ 0, at least one > 0)."""

    def __post_init__(self) -> None:
        if len(set(self.targets)) != len(self.targets):
            raise ConfigError(f"mixture.objective.targets names a target twice: {list(self.targets)}")
        if self.kind == "target" and len(self.targets) != 1:
            raise ConfigError(f"mixture.objective kind 'target' needs exactly one target, got {list(self.targets)}")
        if self.kind == "weighted":
            if not self.weights:
                raise ConfigError("mixture.objective kind 'weighted' needs weights: {target: coefficient}")
            bad = {t: w for t, w in self.weights.items()
                   if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0}
            if bad or not any(w > 0 for w in self.weights.values()):
                raise ConfigError(f"mixture.objective.weights must be finite, ≥ 0 and not all 0, got {self.weights}")
        elif self.weights:
            raise ConfigError(f"mixture.objective.weights is only for kind 'weighted', not {self.kind!r}")

    def coefficients(self, available: list[str]) -> dict[str, float]:
        """target → coefficient of its loss in the objective, checked against the fitted targets."""
        if self.kind == "weighted":
            coef = {t: float(w) for t, w in self.weights.items() if w > 0}
        else:
            coef = {t: 1.0 for t in (self.targets or available)}
        unknown = [t for t in coef if t not in available]
        if unknown:
            raise ConfigError(f"objective target(s) {', '.join(unknown)} have no regression; "
                              f"the fit has {', '.join(available)}")
        return dict(sorted(coef.items()))


@dataclass(frozen=True)
class SearchConfig:
    samples: int = 100_000
    """Mixtures drawn and predicted (RegMix: 100k)."""
    top: int = 128
    """The best this many are averaged (RegMix: 128): an average is steadier than the single best."""
    min_rho: float = 0.8
    """Fewest cross-validated Spearman ρ an objective target needs before its regression is trusted."""
    seed: int = 42
    """Seeds the draws (replacing the sampler's own seed, so the sweep's mixtures are not redrawn)."""
    threads: int = 1
    """Threads LightGBM predicts the draws with (0: every core); the result does not depend on it.
    Predicting is the search's cost: about 3 s per target per 100k draws on one core for a 16-run
    fit's small trees, about 14 s for a 512-run fit's."""

    def __post_init__(self) -> None:
        problems = []
        if self.samples < 1:
            problems.append(f"samples must be at least 1, got {self.samples}")
        if not 1 <= self.top <= self.samples:
            problems.append(f"top must be in [1, samples = {self.samples}], got {self.top}")
        if not -1 <= self.min_rho <= 1:
            problems.append(f"min_rho must be in [-1, 1], got {self.min_rho}")
        if self.threads < 0:
            problems.append(f"threads must be ≥ 0 (0: every core), got {self.threads}")
        if problems:
            raise ConfigError("mixture.search: " + "; ".join(problems))


@dataclass(frozen=True)
class SearchResult:
    langs: list[str]
    weights: dict[str, float]
    """The chosen mixture (sorted languages), on the sampler's grid and within the caps."""
    objective: Objective
    coefficients: dict[str, float]
    """The objective as resolved: target → coefficient."""
    predicted_objective: float
    """The final models' objective at `weights`."""
    objective_std: float
    """Spread (std) of the objective across the fold models at `weights`."""
    prior_objective: float
    """The final models' objective at the prior, for comparison."""
    losses: dict[str, dict[str, float]]
    """Every fitted target → {loss (final model), fold_mean, fold_std} at `weights`."""
    rho: dict[str, dict[str, float | bool | None]]
    """Every fitted target → {cv, cv_mean, test, linear_cv, linear_test, objective (0/1)}."""
    n_runs: int
    n_train: int
    n_test: int
    prior: dict[str, float]
    caps: dict[str, float]
    budget_tokens: int
    sampler: SamplerConfig
    config: SearchConfig
    forced: bool = False
    warnings: tuple[str, ...] = ()


def search(fit: FitResult, objective: Objective, tokens: Mapping[str, int], budget_tokens: int,
           sampler: SamplerConfig, cfg: SearchConfig = SearchConfig(), *, force: bool = False) -> SearchResult:
    """The projected average of the `top` predicted-best of `samples` capped draws.

    Raises:
        ConfigError: an objective target without a regression, or whose CV ρ is below
            `cfg.min_rho` (unless `force`); token counts for other languages than the fit's
            mixture columns; caps that admit no mixture.
    """
    coef = objective.coefficients(list(fit.targets))
    notes: list[str] = list(fit.warnings)
    low = {t: fit.targets[t].cv_rho for t in coef if not fit.targets[t].cv_rho >= cfg.min_rho}
    if low:
        what = ", ".join(f"{t} {_fmt(r)}" for t, r in low.items())
        message = (f"cross-validated Spearman ρ below mixture.search.min_rho = {cfg.min_rho:g} for {what} "
                   f"({fit.n_train} proxy runs cross-validated)")
        if not force:
            raise ConfigError(f"{message}: the regression cannot rank mixtures well enough to pick one; run more "
                              "proxies (RegMix used 512), or pass --force to search anyway")
        notes.append(f"forced: {message}")
    langs = sorted(tokens)
    if sorted(fit.langs) != langs:
        raise ConfigError(f"the fit's mixtures are over {', '.join(sorted(fit.langs))} but the token counts are for "
                          f"{', '.join(langs)}: search the languages the proxies were trained on")
    columns = [fit.langs.index(lang) for lang in langs]  # fit column order → sorted

    def in_fit_order(W: np.ndarray) -> np.ndarray:
        out = np.empty_like(W)
        out[:, columns] = W
        return out

    def objective_of(pred: Mapping[str, np.ndarray]) -> np.ndarray:
        return sum(c * pred[t] for t, c in coef.items())  # type: ignore[return-value]

    drawn_langs, draws = sample_mixtures(tokens, budget_tokens, cfg.samples, replace(sampler, seed=cfg.seed),
                                         distinct=False)
    assert drawn_langs == langs
    values = objective_of(fit.predict(in_fit_order(draws), list(coef), threads=cfg.threads))
    best = np.argsort(values, kind="stable")[:cfg.top]
    caps = epoch_caps(tokens, budget_tokens, sampler.max_epochs)
    cap_array = np.array([caps[lang] for lang in langs])
    final = project_to_caps(draws[best].mean(axis=0), cap_array, sampler.minimum)
    X = in_fit_order(final[None, :])
    point = fit.predict(X)
    folds = fit.predict_folds(X)
    fold_objective = objective_of({t: folds[t][:, 0] for t in coef})
    shares = prior(tokens)
    prior_value = float(objective_of(fit.predict(in_fit_order(np.array([[shares[lang] for lang in langs]])),
                                                 list(coef)))[0])
    binding = [f"{lang} {final[i]:.4g} (cap {cap_array[i]:.4g})" for i, lang in enumerate(langs)
               if final[i] >= NEAR_CAP * cap_array[i] and cap_array[i] < 1]
    if binding:
        notes.append(f"the epoch cap ({sampler.max_epochs:g} epochs at {budget_tokens:,} tokens) binds for "
                     + ", ".join(binding))
    weak_test = [f"{t} {_fmt(fit.targets[t].test_rho)}" for t in coef
                 if fit.targets[t].test_rho is not None and not fit.targets[t].test_rho >= cfg.min_rho]
    if weak_test:
        notes.append(f"test-split ρ below {cfg.min_rho:g} for {', '.join(weak_test)} ({fit.n_test} test runs)")
    return SearchResult(
        langs=langs, weights={lang: float(final[i]) for i, lang in enumerate(langs)}, objective=objective,
        coefficients=coef, predicted_objective=float(objective_of(point)[0]),
        objective_std=float(np.std(fold_objective)), prior_objective=prior_value,
        losses={t: {"loss": float(point[t][0]), "fold_mean": float(folds[t][:, 0].mean()),
                    "fold_std": float(folds[t][:, 0].std())} for t in fit.targets},
        rho={t: {"cv": f.cv_rho, "cv_mean": f.cv_rho_mean, "test": f.test_rho, "linear_cv": f.linear_cv_rho,
                 "linear_test": f.linear_test_rho, "objective": t in coef} for t, f in fit.targets.items()},
        n_runs=fit.n_runs, n_train=fit.n_train, n_test=fit.n_test, prior=shares, caps=caps,
        budget_tokens=int(budget_tokens), sampler=sampler, config=cfg, forced=bool(low), warnings=tuple(notes))


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3f}"
