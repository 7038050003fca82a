"""Regress per-language validation loss on mixture weights, and say honestly how well it ranks.

RegMix (sail-sg/regmix `regression.ipynb`) fits one LightGBM per target on the raw weights, 1,000
iterations at learning rate 1e-2, and reports the Spearman ρ of its test predictions, but it
early-stops on that same test set, so the figure is optimistic. Here the test split is drawn
(seeded) before anything is fitted and is never seen by a model, not even to stop training; the
figure that gates the search is the k-fold cross-validated ρ on the other runs: each run predicted
by the fold model that did not train on it. A linear model is fitted on the same folds as the
baseline (RegMix: ≈ 0.99 LightGBM vs ≈ 0.90 linear at 512 runs); a regressor that does not beat it
is not worth its complexity.

min_child_samples: LightGBM's default (20 runs per leaf) never splits on a CPU demo's 8–16 proxies,
so the model would predict a constant. Unless set, it is scaled to the runs a model trains on:
`min(20, max(2, n_train // 10))` — a leaf holds about a tenth of the runs, never fewer than 2,
and at RegMix's 512 runs (410 after the test split) it is LightGBM's 20 again.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data_engine.errors import ConfigError, InputError

FORMAT = 1
"""Version of the fit.json layout written by `FitResult.save`."""
MIN_RUNS = 4
"""Fewest proxy runs a fit accepts: fewer cannot be cross-validated at all."""
MIN_TEST_RUNS = 3
"""A test split smaller than this gives a meaningless ρ (any 2 points rank ±1), so none is held out."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class FitConfig:
    iterations: int = 1000
    """Boosting rounds (RegMix: 1,000); there is no early stopping, so all are used."""
    learning_rate: float = 0.01
    num_leaves: int = 31
    min_child_samples: int | None = None
    """Fewest runs per leaf; None: min(20, max(2, n_train // 10)) (see the module docstring)."""
    folds: int = 5
    """Cross-validation folds over the non-test runs (fewer when there are fewer runs)."""
    test_fraction: float = 0.2
    """Share of the runs held out, untouched, for the test ρ; 0 for none."""
    seed: int = 42

    def __post_init__(self) -> None:
        problems = []
        if self.iterations < 1:
            problems.append(f"iterations must be at least 1, got {self.iterations}")
        if self.num_leaves < 2:
            problems.append(f"num_leaves must be at least 2, got {self.num_leaves}")
        if not 0 < self.learning_rate <= 1:
            problems.append(f"learning_rate must be in (0, 1], got {self.learning_rate}")
        if self.min_child_samples is not None and self.min_child_samples < 1:
            problems.append(f"min_child_samples must be at least 1 (or null to scale it), got {self.min_child_samples}")
        if self.folds < 2:
            problems.append(f"folds must be at least 2, got {self.folds}")
        if not 0 <= self.test_fraction < 0.5:
            problems.append(f"test_fraction must be in [0, 0.5), got {self.test_fraction}")
        if problems:
            raise ConfigError("mixture.fit: " + "; ".join(problems))


def scaled_min_child_samples(n_train: int) -> int:
    """The leaf size used when FitConfig.min_child_samples is None."""
    return min(20, max(2, n_train // 10))


@dataclass(frozen=True)
class TargetFit:
    """The figures of one target's regression. Arrays are aligned with FitResult.train_index
    (`oof`) and FitResult.test_index (`test_pred`); `y` holds every run's loss."""

    cv_rho: float
    """Spearman ρ of the pooled out-of-fold predictions: the figure the search is gated on. Pooling
    errs low, never high: a model with no skill predicts about the other folds' mean, which is
    lower where a fold's losses are higher (a constant model scores below 0, not 0)."""
    cv_rho_mean: float
    """Mean of the per-fold ρ (folds too small or constant to rank are left out)."""
    cv_rho_folds: tuple[float, ...]
    test_rho: float | None
    """ρ on the untouched test split, predicted by the final model; None without a test split."""
    train_rho: float
    """In-sample ρ of the final model on its own training runs: only to show how far it overfits."""
    linear_cv_rho: float
    linear_test_rho: float | None
    y: np.ndarray
    oof: np.ndarray
    test_pred: np.ndarray


@dataclass(frozen=True)
class FitResult:
    langs: list[str]
    """The mixture columns, in the order X had them."""
    targets: dict[str, TargetFit]
    config: FitConfig
    min_child_samples: int
    n_runs: int
    train_index: np.ndarray
    """Runs the CV and the final models train on (sorted)."""
    test_index: np.ndarray
    """Runs held out untouched (sorted; empty when there are too few runs for a test split)."""
    fold_index: list[np.ndarray]
    """Per fold, the runs it validates on (a partition of train_index)."""
    models: dict[str, Any] = field(repr=False)
    """target → lightgbm.Booster fitted on every train run."""
    fold_models: dict[str, list[Any]] = field(repr=False)
    """target → one Booster per fold (each without its fold): their spread is the prediction's."""
    warnings: tuple[str, ...] = ()

    @property
    def n_train(self) -> int:
        return len(self.train_index)

    @property
    def n_test(self) -> int:
        return len(self.test_index)

    def predict(self, X: np.ndarray, targets: Sequence[str] | None = None, *,
                threads: int = 1) -> dict[str, np.ndarray]:
        """The final models' predicted loss of each row of X (columns as `langs`). The predictions do
        not depend on `threads` (0: LightGBM's default, every core)."""
        X = self._check_x(X)
        return {t: self.models[t].predict(X, num_threads=threads) for t in self._targets(targets)}

    def predict_folds(self, X: np.ndarray, targets: Sequence[str] | None = None, *,
                      threads: int = 1) -> dict[str, np.ndarray]:
        """target → folds × rows predictions of the fold models."""
        X = self._check_x(X)
        return {t: np.stack([m.predict(X, num_threads=threads) for m in self.fold_models[t]])
                for t in self._targets(targets)}

    def metrics(self) -> dict[str, float]:
        """Flat figures for MLflow (`cv_rho.<target>` …); figures that do not exist are left out."""
        out: dict[str, float] = {"runs": float(self.n_runs), "runs_train": float(self.n_train),
                                 "runs_test": float(self.n_test)}
        for t, f in self.targets.items():
            for name in ("cv_rho", "cv_rho_mean", "test_rho", "train_rho", "linear_cv_rho", "linear_test_rho"):
                value = getattr(f, name)
                if value is not None and math.isfinite(value):
                    out[f"{name}.{t}"] = float(value)
        return out

    def table(self) -> str:
        """The ρ figures as lines of text, one per target, for a job to print."""
        def fmt(x: float | None) -> str:
            return "   -  " if x is None or not math.isfinite(x) else f"{x:6.3f}"

        lines = [f"{self.n_runs} proxy runs: {self.n_train} for {len(self.fold_index)}-fold CV and the final "
                 f"models, {self.n_test} held out for test; min_child_samples {self.min_child_samples}",
                 f"{'target':<10} {'cv ρ':>6} {'test ρ':>6} {'lin cv':>6} {'lin te':>6} {'train':>6}"]
        for t, f in self.targets.items():
            lines.append(f"{t:<10} {fmt(f.cv_rho)} {fmt(f.test_rho)} {fmt(f.linear_cv_rho)} "
                         f"{fmt(f.linear_test_rho)} {fmt(f.train_rho)}")
        return "\n".join(lines + [f"warning: {w}" for w in self.warnings])

    def save(self, directory: str | Path) -> Path:
        """LightGBM text models under `models/` and every figure in `fit.json` (written last, so a
        directory with a fit.json is complete); returns the directory. The models are text, about
        1 MB per model at 1,000 iterations: (folds + 1) per target."""
        directory = Path(directory)
        models = directory / "models"
        models.mkdir(parents=True, exist_ok=True)
        (directory / "fit.json").unlink(missing_ok=True)  # a save cut short leaves no fit behind
        for t in self.targets:
            (models / f"{t}.txt").write_text(self.models[t].model_to_string(), encoding="utf-8")
            for i, m in enumerate(self.fold_models[t]):
                (models / f"{t}.fold{i}.txt").write_text(m.model_to_string(), encoding="utf-8")
        doc = {
            "format": FORMAT,
            "langs": list(self.langs),
            "config": asdict(self.config),
            "min_child_samples": self.min_child_samples,
            "n_runs": self.n_runs,
            "train_index": self.train_index.tolist(),
            "test_index": self.test_index.tolist(),
            "fold_index": [f.tolist() for f in self.fold_index],
            "warnings": list(self.warnings),
            "targets": {t: {"cv_rho": _json_float(f.cv_rho), "cv_rho_mean": _json_float(f.cv_rho_mean),
                            "cv_rho_folds": [_json_float(x) for x in f.cv_rho_folds],
                            "test_rho": _json_float(f.test_rho), "train_rho": _json_float(f.train_rho),
                            "linear_cv_rho": _json_float(f.linear_cv_rho),
                            "linear_test_rho": _json_float(f.linear_test_rho),
                            "y": [_json_float(x) for x in f.y], "oof": [_json_float(x) for x in f.oof],
                            "test_pred": [_json_float(x) for x in f.test_pred]}
                        for t, f in self.targets.items()},
        }
        (directory / "fit.json").write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> FitResult:
        import lightgbm as lgb

        directory = Path(directory)
        path = directory / "fit.json"
        if not path.is_file():
            raise ConfigError(f"{directory} holds no fit (no fit.json); run `sailyard mixture fit` first")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path} is not valid JSON: {exc}") from exc
        if doc.get("format") != FORMAT:
            raise InputError(f"{path} has format {doc.get('format')!r}; this sailyard reads format {FORMAT}")

        def booster(name: str) -> Any:
            file = directory / "models" / name
            if not file.is_file():
                raise InputError(f"{path} names model {file}, which is missing")
            try:
                return lgb.Booster(model_str=file.read_text(encoding="utf-8"))
            except lgb.basic.LightGBMError as exc:
                raise InputError(f"{file} is not a LightGBM model: {exc}") from exc

        folds = len(doc["fold_index"])
        has_test = bool(doc["test_index"])
        def target(f: dict[str, Any]) -> TargetFit:
            return TargetFit(cv_rho=_from_json(f["cv_rho"]), cv_rho_mean=_from_json(f["cv_rho_mean"]),
                             cv_rho_folds=tuple(_from_json(x) for x in f["cv_rho_folds"]),
                             test_rho=_from_json(f["test_rho"]) if has_test else None,
                             train_rho=_from_json(f["train_rho"]), linear_cv_rho=_from_json(f["linear_cv_rho"]),
                             linear_test_rho=_from_json(f["linear_test_rho"]) if has_test else None,
                             y=np.array(f["y"], dtype=float), oof=_array(f["oof"]), test_pred=_array(f["test_pred"]))

        try:
            targets = {t: target(f) for t, f in doc["targets"].items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path} is not a complete fit: {exc!r}") from exc
        return cls(langs=list(doc["langs"]), targets=targets, config=FitConfig(**doc["config"]),
                   min_child_samples=int(doc["min_child_samples"]), n_runs=int(doc["n_runs"]),
                   train_index=np.array(doc["train_index"], dtype=np.int64),
                   test_index=np.array(doc["test_index"], dtype=np.int64),
                   fold_index=[np.array(f, dtype=np.int64) for f in doc["fold_index"]],
                   models={t: booster(f"{t}.txt") for t in targets},
                   fold_models={t: [booster(f"{t}.fold{i}.txt") for i in range(folds)] for t in targets},
                   warnings=tuple(doc.get("warnings", ())))

    def _targets(self, targets: Sequence[str] | None) -> list[str]:
        if targets is None:
            return list(self.targets)
        unknown = [t for t in targets if t not in self.targets]
        if unknown:
            raise ConfigError(f"no regression for target(s) {', '.join(unknown)}; fitted: {', '.join(self.targets)}")
        return list(targets)

    def _check_x(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != len(self.langs):
            raise ConfigError(f"mixtures to predict must be rows × {len(self.langs)} weights "
                              f"({', '.join(self.langs)}), got shape {X.shape}")
        return X


def fit(langs: list[str], X: np.ndarray, targets: Mapping[str, np.ndarray], cfg: FitConfig = FitConfig()) -> FitResult:
    """One LightGBM and one linear model per target, validated on runs they never saw.

    Raises:
        ConfigError: shapes that do not match, fewer than MIN_RUNS runs, or target names that cannot
            be file names.
        InputError: a weight or loss that is negative/not finite (a failed proxy must be left out,
            not fitted).
    """
    X = _check_inputs(langs, X, targets)
    n = len(X)
    train_index, test_index, fold_index, notes = split(n, cfg)
    mcs = cfg.min_child_samples if cfg.min_child_samples is not None else scaled_min_child_samples(len(train_index))
    params = _params(cfg, mcs)
    figures: dict[str, TargetFit] = {}
    models: dict[str, Any] = {}
    fold_models: dict[str, list[Any]] = {}
    for t in sorted(targets):
        y = np.asarray(targets[t], dtype=float)
        oof = np.empty(n)
        lin_oof = np.empty(n)
        per_fold: list[float] = []
        fold_models[t] = []
        for val in fold_index:
            fit_rows = np.setdiff1d(train_index, val, assume_unique=True)
            model = _train(params, langs, X[fit_rows], y[fit_rows], cfg.iterations)
            fold_models[t].append(model)
            oof[val] = model.predict(X[val], num_threads=1)
            lin_oof[val] = _linear(X[fit_rows], y[fit_rows]).predict(X[val])
            per_fold.append(spearman(oof[val], y[val]))
        models[t] = final = _train(params, langs, X[train_index], y[train_index], cfg.iterations)
        test_pred = final.predict(X[test_index], num_threads=1) if len(test_index) else np.empty(0)
        has_test = len(test_index) > 0
        linear = _linear(X[train_index], y[train_index])
        finite_folds = [r for r in per_fold if math.isfinite(r)]
        figures[t] = TargetFit(
            cv_rho=spearman(oof[train_index], y[train_index]),
            cv_rho_mean=float(np.mean(finite_folds)) if finite_folds else math.nan,
            cv_rho_folds=tuple(per_fold),
            test_rho=spearman(test_pred, y[test_index]) if has_test else None,
            train_rho=spearman(final.predict(X[train_index], num_threads=1), y[train_index]),
            linear_cv_rho=spearman(lin_oof[train_index], y[train_index]),
            linear_test_rho=spearman(linear.predict(X[test_index]), y[test_index]) if has_test else None,
            y=y.copy(), oof=oof[train_index], test_pred=test_pred)
    return FitResult(langs=list(langs), targets=figures, config=cfg, min_child_samples=mcs, n_runs=n,
                     train_index=train_index, test_index=test_index, fold_index=fold_index, models=models,
                     fold_models=fold_models, warnings=tuple(notes))


def split(n: int, cfg: FitConfig) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[str]]:
    """(train runs, test runs, CV folds over the train runs, notes), from the seed and n alone —
    chosen before any model is fitted, so nothing about the losses can leak into the test split."""
    if n < MIN_RUNS:
        raise ConfigError(f"a mixture fit needs at least {MIN_RUNS} proxy runs, got {n}")
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(n)
    notes = []
    n_test = int(round(cfg.test_fraction * n))
    if 0 < n_test < MIN_TEST_RUNS or (n_test and n - n_test < MIN_RUNS):
        notes.append(f"{n} runs are too few for a test split ({cfg.test_fraction:g} × {n} = "
                     f"{cfg.test_fraction * n:.1f} runs); no test ρ, only the cross-validated one")
        n_test = 0
    test = np.sort(order[:n_test])
    rest = order[n_test:]
    k = min(cfg.folds, len(rest))
    if k < cfg.folds:
        notes.append(f"{len(rest)} runs to cross-validate: {k} folds instead of {cfg.folds}")
    folds = [np.sort(f) for f in np.array_split(rest, k)]
    return np.sort(rest), test, folds, notes


def spearman(pred: np.ndarray, actual: np.ndarray) -> float:
    """scipy's Spearman ρ; NaN when it is undefined (fewer than 3 points, or a constant side)."""
    from scipy.stats import spearmanr

    pred, actual = np.asarray(pred, dtype=float), np.asarray(actual, dtype=float)
    if len(pred) < 3 or np.ptp(pred) == 0 or np.ptp(actual) == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(pred, actual).statistic)


def _params(cfg: FitConfig, min_child_samples: int) -> dict[str, Any]:
    return {"objective": "regression", "boosting_type": "gbdt", "learning_rate": cfg.learning_rate,
            "num_leaves": cfg.num_leaves, "min_data_in_leaf": min_child_samples, "seed": cfg.seed,
            "deterministic": True, "force_col_wise": True, "num_threads": 1, "verbosity": -1}


def _train(params: dict[str, Any], langs: list[str], X: np.ndarray, y: np.ndarray, iterations: int) -> Any:
    import lightgbm as lgb

    data = lgb.Dataset(X, y, feature_name=list(langs), params=params, free_raw_data=True)
    return lgb.train(params, data, num_boost_round=iterations)


def _linear(X: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.linear_model import LinearRegression

    return LinearRegression().fit(X, y)


def _check_inputs(langs: list[str], X: np.ndarray, targets: Mapping[str, np.ndarray]) -> np.ndarray:
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[1] != len(langs):
        raise ConfigError(f"mixtures must be runs × {len(langs)} weights (one column per language of {langs}), "
                          f"got shape {X.shape}")
    if len(set(langs)) != len(langs) or not all(isinstance(x, str) and _NAME.match(x) for x in langs):
        raise ConfigError(f"mixture languages must be distinct plain names, got {langs}")
    if not targets:
        raise ConfigError("no targets to fit: give at least one language's validation losses")
    bad_rows = np.flatnonzero(~np.isfinite(X).all(axis=1) | (X < 0).any(axis=1))
    if len(bad_rows):
        raise InputError(f"mixture rows {bad_rows[:10].tolist()} have negative or non-finite weights")
    for t, y in targets.items():
        if not isinstance(t, str) or not _NAME.match(t):
            raise ConfigError(f"target name {t!r} must be a plain name (it names the model file)")
        y = np.asarray(y, dtype=float)
        if y.shape != (len(X),):
            raise ConfigError(f"target {t}: {y.shape} losses for {len(X)} mixtures")
        bad = np.flatnonzero(~np.isfinite(y))
        if len(bad):
            raise InputError(f"target {t}: runs {bad[:10].tolist()} have a non-finite loss; leave failed proxies out")
    return X


def _json_float(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _from_json(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _array(values: list[float | None]) -> np.ndarray:
    return np.array([_from_json(x) for x in values], dtype=float)
