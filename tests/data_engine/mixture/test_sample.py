"""The mixture sampler: RegMix's draws, on a grid that sums to 1, inside epoch caps, by seed."""

from __future__ import annotations

import numpy as np
import pytest

from data_engine.errors import ConfigError
from data_engine.mixture.sample import SamplerConfig, epoch_caps, prior, project_to_caps, sample_mixtures

# Token counts shaped like a SEA crawl: two giants, a few mid-size, some tiny languages.
TOKENS = {"eng": 5_000_000, "zho": 3_000_000, "ind": 900_000, "vie": 800_000, "tha": 400_000,
          "zsm": 100_000, "tgl": 70_000, "mya": 50_000, "khm": 30_000}
BUDGET = 2_000_000


def test_prior_and_caps_from_token_counts():
    p = prior(TOKENS)
    assert sum(p.values()) == pytest.approx(1.0)
    assert p["eng"] == pytest.approx(5_000_000 / 10_350_000)
    caps = epoch_caps(TOKENS, BUDGET, 4.0)
    # khm: 4 epochs × 30k tokens = 120k of a 2M budget = 0.06; eng has far more than the budget.
    assert caps["khm"] == pytest.approx(0.06) and caps["eng"] == 1.0 and caps["tha"] == pytest.approx(0.8)


def test_same_seed_same_mixtures_other_seed_others():
    langs, a = sample_mixtures(TOKENS, BUDGET, 64)
    _, b = sample_mixtures(TOKENS, BUDGET, 64)
    _, c = sample_mixtures(TOKENS, BUDGET, 64, SamplerConfig(seed=7))
    assert langs == sorted(TOKENS)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_rows_on_the_grid_sum_to_one_and_respect_minimum_and_caps():
    cfg = SamplerConfig(minimum=1e-3)
    langs, w = sample_mixtures(TOKENS, BUDGET, 200, cfg)
    caps = np.array([epoch_caps(TOKENS, BUDGET, cfg.max_epochs)[lang] for lang in langs])
    assert w.shape == (200, len(TOKENS))
    assert np.allclose(w.sum(axis=1), 1.0, atol=1e-12)
    units = w / cfg.minimum
    assert np.allclose(units, np.rint(units), atol=1e-9)  # multiples of the minimum
    assert ((w == 0) | (w >= cfg.minimum - 1e-12)).all()
    assert (w <= caps[None, :] + 1e-12).all()
    # Binding caps matter: khm's cap is 0.06, and the Dirichlet would often exceed it otherwise.
    khm = langs.index("khm")
    assert w[:, khm].max() <= 0.06 + 1e-12
    # Distinct on the grid.
    assert len({tuple(np.rint(r / cfg.minimum).astype(int)) for r in w}) == 200


def test_draws_explore_around_the_tempered_prior():
    # A budget every language covers 4 times: no cap binds, so the draws centre on the tempered prior.
    langs, w = sample_mixtures(TOKENS, 100_000, 2000)
    p = np.array([prior(TOKENS)[lang] for lang in langs])
    tempered = np.sqrt(p) / np.sqrt(p).sum()
    mean = w.mean(axis=0)
    assert np.abs(mean - tempered).max() < 0.03
    # Temperature 0.5 flattens: the giant's average weight falls below its share, a small one rises.
    assert mean[langs.index("eng")] < p[langs.index("eng")]
    assert mean[langs.index("mya")] > 2 * p[langs.index("mya")]
    # Some draws are spiky (small strengths zero languages), others near the prior.
    assert (w == 0).any(axis=1).mean() > 0.2


def test_caps_that_admit_nothing_are_an_error():
    with pytest.raises(ConfigError, match="no mixture fits the caps"):
        sample_mixtures({"khm": 1000, "lao": 1000}, 1_000_000, 4)


def test_search_draws_without_dedup():
    langs, w = sample_mixtures(TOKENS, BUDGET, 5000, distinct=False)
    assert w.shape == (5000, 9)
    caps = np.array([epoch_caps(TOKENS, BUDGET, 4.0)[lang] for lang in langs])
    assert (w <= caps + 1e-12).all()


def test_projection_back_onto_caps():
    caps = np.array([0.1, 0.5, 1.0, 1.0])
    w = project_to_caps(np.array([0.4, 0.4, 0.19995, 0.00005]), caps, 2e-4)
    assert w.sum() == pytest.approx(1.0)
    assert (w <= caps + 1e-12).all()
    assert w[3] == 0.0  # under the minimum
    assert w[0] == pytest.approx(0.1)
    # The excess went to the languages with room, in proportion: the 2nd stays at or below its cap.
    assert w[1] <= 0.5 + 1e-12 and w[2] > 0.19995


def test_bad_config_is_a_config_error():
    with pytest.raises(ConfigError, match="minimum"):
        SamplerConfig(minimum=3e-4)
    with pytest.raises(ConfigError, match="temperature"):
        SamplerConfig(temperature=0)
    with pytest.raises(ConfigError, match="without tokens"):
        sample_mixtures({"tha": 0, "eng": 10}, 10, 1)
