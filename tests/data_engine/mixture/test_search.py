"""The mixture search on constructed losses: it moves weight toward the languages whose loss falls
with their weight, stays inside the epoch caps, refuses a regression that cannot rank (unless forced),
and writes a mixture.yaml that reads back as written."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from data_engine.config import from_dict
from data_engine.errors import ConfigError, InputError
from data_engine.mixture.fit import FitResult, fit
from data_engine.mixture.report import plot_weights, read_mixture_yaml, write_mixture_yaml
from data_engine.mixture.sample import SamplerConfig, sample_mixtures
from data_engine.mixture.search import Objective, SearchConfig, search

TOKENS = {"eng": 4_000_000, "ind": 3_000_000, "tha": 2_000_000, "vie": 1_000_000}
BUDGET = 16_000_000
CAPS = {"eng": 1.0, "ind": 0.75, "tha": 0.5, "vie": 0.25}  # 4 epochs × tokens / budget, by hand
PRIOR = {"eng": 0.4, "ind": 0.3, "tha": 0.2, "vie": 0.1}
B = {"eng": 0.05, "ind": 0.05, "tha": 0.5, "vie": 0.5}
EPS = 0.01
SAMPLER = SamplerConfig()
FAST = SearchConfig(samples=10_000, top=64)


def true_loss(lang: str, w: np.ndarray) -> np.ndarray:
    """The constructed truth: the loss falls as the language's own weight rises, by b_l."""
    return 3 - B[lang] * np.log(np.asarray(w) + EPS)


def mixture(weights: dict[str, float]) -> np.ndarray:
    return np.array([weights[lang] for lang in sorted(TOKENS)])


@pytest.fixture(scope="module")
def fitted() -> FitResult:
    langs, X = sample_mixtures(TOKENS, BUDGET, 96, SAMPLER)
    rng = np.random.default_rng(1)
    targets = {lang: true_loss(lang, X[:, i]) + rng.normal(0, 0.02, len(X)) for i, lang in enumerate(langs)}
    targets["noise"] = rng.normal(3, 0.1, len(X))
    return fit(langs, X, targets)


def test_one_target_search_raises_that_language_to_its_cap(fitted):
    assert fitted.targets["tha"].cv_rho > 0.9
    result = search(fitted, Objective(kind="target", targets=("tha",)), TOKENS, BUDGET, SAMPLER, FAST)
    w = result.weights
    assert list(w) == sorted(TOKENS) and sum(w.values()) == pytest.approx(1, abs=1e-9)
    assert w["tha"] > PRIOR["tha"] + 0.2  # tha's loss falls as its weight rises: the search raises it…
    assert w["tha"] <= CAPS["tha"] + 1e-12  # …up to its 4-epoch cap and no further
    assert true_loss("tha", w["tha"]) < true_loss("tha", PRIOR["tha"])
    assert result.caps == pytest.approx(CAPS) and result.prior == pytest.approx(PRIOR)
    assert result.coefficients == {"tha": 1.0} and not result.forced
    assert result.predicted_objective < result.prior_objective
    # A tighter budget lowers tha's cap (4 × 2M / 20M = 0.4): the search goes up to it and says so.
    tight = search(fitted, Objective(kind="target", targets=("tha",)), TOKENS, 20_000_000, SAMPLER,
                   SearchConfig(samples=5_000, top=32))
    assert tight.caps["tha"] == pytest.approx(0.4)
    assert 0.95 * 0.4 <= tight.weights["tha"] <= 0.4 + 1e-12
    assert any("binds for tha" in note for note in tight.warnings)


def test_sum_search_beats_the_prior_on_the_true_losses_within_caps(fitted):
    objective = Objective(targets=("eng", "ind", "tha", "vie"))
    result = search(fitted, objective, TOKENS, BUDGET, SAMPLER, FAST)
    w = mixture(result.weights)
    caps = mixture(CAPS)
    assert (w <= caps + 1e-12).all() and ((w == 0) | (w >= SAMPLER.minimum - 1e-12)).all()
    assert np.allclose(w / SAMPLER.minimum, np.rint(w / SAMPLER.minimum))  # on the sampler's grid
    truth = sum(true_loss(lang, result.weights[lang]) for lang in objective.targets)
    prior_truth = sum(true_loss(lang, PRIOR[lang]) for lang in objective.targets)
    assert truth < prior_truth - 0.3, (truth, prior_truth)
    assert result.weights["vie"] > PRIOR["vie"] and result.weights["tha"] > PRIOR["tha"]
    assert result.weights["eng"] < PRIOR["eng"]  # its loss barely cares (b = 0.05)
    # The reported figures are the fit's predictions of the mixture written, spread over the folds.
    X = w[None, :]
    point, folds = fitted.predict(X), fitted.predict_folds(X)
    assert result.predicted_objective == pytest.approx(sum(point[t][0] for t in objective.targets))
    for t in fitted.targets:
        assert result.losses[t]["loss"] == pytest.approx(point[t][0])
        assert result.losses[t]["fold_std"] == pytest.approx(np.std(folds[t][:, 0]))
        assert result.losses[t]["fold_mean"] == pytest.approx(np.mean(folds[t][:, 0]))
    assert result.rho["tha"]["cv"] == fitted.targets["tha"].cv_rho and result.rho["tha"]["objective"]
    assert result.rho["noise"]["objective"] is False
    assert result.n_runs == 96 and result.n_train + result.n_test == 96
    again = search(fitted, objective, TOKENS, BUDGET, SAMPLER, FAST)
    assert again.weights == result.weights and again.predicted_objective == result.predicted_objective


def test_refuses_a_target_the_fit_cannot_rank_unless_forced(fitted):
    rho = fitted.targets["noise"].cv_rho
    assert abs(rho) < 0.5
    small = SearchConfig(samples=2_000, top=16)
    with pytest.raises(ConfigError, match=rf"noise {rho:.3f}") as err:
        search(fitted, Objective(), TOKENS, BUDGET, SAMPLER, small)  # default: every target, noise included
    assert "tha" not in str(err.value) and "--force" in str(err.value)
    forced = search(fitted, Objective(), TOKENS, BUDGET, SAMPLER, small, force=True)
    assert forced.forced and any("forced" in note and "noise" in note for note in forced.warnings)
    assert set(forced.coefficients) == set(fitted.targets)
    lenient = search(fitted, Objective(), TOKENS, BUDGET, SAMPLER, SearchConfig(samples=2_000, top=16, min_rho=-1))
    assert not lenient.forced


def test_weighted_objective_and_bad_objectives(fitted):
    objective = from_dict(Objective, {"kind": "weighted", "weights": {"tha": 2, "eng": 0.5, "vie": 0}}, "objective")
    result = search(fitted, objective, TOKENS, BUDGET, SAMPLER, SearchConfig(samples=2_000, top=16))
    assert result.coefficients == {"eng": 0.5, "tha": 2.0}
    point = fitted.predict(mixture(result.weights)[None, :])
    assert result.predicted_objective == pytest.approx(2 * point["tha"][0] + 0.5 * point["eng"][0])
    with pytest.raises(ConfigError, match="exactly one target"):
        Objective(kind="target", targets=("tha", "vie"))
    with pytest.raises(ConfigError, match="needs weights"):
        Objective(kind="weighted")
    with pytest.raises(ConfigError, match="not all 0"):
        Objective(kind="weighted", weights={"tha": 0.0})
    with pytest.raises(ConfigError, match="only for kind 'weighted'"):
        Objective(weights={"tha": 1.0})
    with pytest.raises(ConfigError, match="khm have no regression"):
        search(fitted, Objective(targets=("tha", "khm")), TOKENS, BUDGET, SAMPLER, FAST)
    with pytest.raises(ConfigError, match="token counts are for"):
        search(fitted, Objective(kind="target", targets=("tha",)), {**TOKENS, "zsm": 10}, BUDGET, SAMPLER, FAST)
    with pytest.raises(ConfigError, match="top must be in"):
        SearchConfig(samples=100, top=128)


def test_mixture_yaml_round_trip_and_weights_plot(tmp_path, fitted):
    result = search(fitted, Objective(targets=("eng", "ind", "tha", "vie")), TOKENS, BUDGET, SAMPLER,
                    SearchConfig(samples=5_000, top=32))
    provenance = {"sweep_id": "s-123", "token_counts": {"docs_curated": {"version": 7, "counts_version": 3}},
                  "fit_dir": tmp_path / "fit"}
    path = write_mixture_yaml(tmp_path / "out" / "mixture.yaml", result, provenance=provenance)
    first = path.read_bytes()
    write_mixture_yaml(path, result, provenance=dict(reversed(list(provenance.items()))))
    assert path.read_bytes() == first  # same result and provenance → same bytes
    doc = yaml.safe_load(first)
    assert list(doc)[:4] == ["format", "weights", "predicted_objective", "objective_fold_std"]
    assert {"losses", "rho", "runs", "prior", "caps", "objective", "provenance", "forced"} <= set(doc)
    assert doc["runs"] == {"proxies": 96, "train": result.n_train, "test": result.n_test}
    assert doc["rho"]["tha"]["linear_cv"] == round(fitted.targets["tha"].linear_cv_rho, 4)

    read = read_mixture_yaml(path)
    assert read.weights == {k: round(v, 6) for k, v in result.weights.items()}
    assert read.prior == pytest.approx(PRIOR) and read.caps == pytest.approx(CAPS)
    assert read.predicted_objective == pytest.approx(result.predicted_objective, abs=1e-6)
    assert read.losses["tha"]["fold_std"] == pytest.approx(result.losses["tha"]["fold_std"], abs=1e-6)
    assert read.rho["tha"]["cv"] == pytest.approx(fitted.targets["tha"].cv_rho, abs=1e-4)
    assert read.rho["tha"]["test"] == pytest.approx(fitted.targets["tha"].test_rho, abs=1e-4)
    assert read.provenance == {"fit_dir": str(tmp_path / "fit"), "sweep_id": "s-123",
                               "token_counts": {"docs_curated": {"counts_version": 3, "version": 7}}}
    assert read.budget_tokens == BUDGET and read.forced is False
    assert read.objective["targets"] == ["eng", "ind", "tha", "vie"]

    with pytest.raises(ConfigError, match="not plain data"):
        write_mixture_yaml(tmp_path / "bad.yaml", result, provenance={"x": object()})
    with pytest.raises(ConfigError, match="does not exist"):
        read_mixture_yaml(tmp_path / "missing.yaml")
    doc["weights"]["eng"] += 0.1
    (tmp_path / "off.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(InputError, match="sum to"):
        read_mixture_yaml(tmp_path / "off.yaml")

    import matplotlib.image

    png = plot_weights(result.prior, result.weights, tmp_path / "weights.png", caps=result.caps)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(png).shape[1] > 300
    assert not math.isnan(result.objective_std)
