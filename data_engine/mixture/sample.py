"""Random data mixtures, as RegMix draws them, under caps that mean something.

RegMix (sail-sg/regmix `synthesize_mixture.py`) draws each mixture from a Dirichlet around the
tempered token shares with a strength picked from 15 log-spaced values, zeroes weights under a
minimum and keeps distinct draws. Its cap — 15 × a language's natural share — only made sense for
its own budget (25B tokens of a 250B-token Pile). Ours is in epochs: a language may not be asked
for more than `max_epochs` passes over the tokens it has, `weight × budget ≤ max_epochs × tokens`,
so a mixture the regression likes can actually be trained. Draws are rejected outside the caps
(as RegMix rejects), and the search (which RegMix ran without any cap) draws from the same set.

Weights land on a grid of `minimum` (the smallest weight a language can get) and sum to exactly 1:
the draw is rounded by largest remainders, so no row drifts off the simplex as RegMix's do
(0.996–1.003 in its released CSVs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from data_engine.errors import ConfigError


@dataclass(frozen=True)
class SamplerConfig:
    temperature: float = 0.5
    """Prior shares are raised to this power (then renormalised) before the Dirichlet: < 1 flattens a
    skewed prior so small languages get explored (RegMix's TEMP)."""
    min_strength: float = 0.1
    max_strength: float = 5.0
    strengths: int = 15
    """Each draw's Dirichlet concentration is the tempered prior × s, s uniform over `strengths`
    log-spaced values in [min_strength, max_strength]: small s gives spiky mixtures, large s ones near the prior."""
    minimum: float = 2e-4
    """Weights below it are 0; the grid weights are rounded to (RegMix: 2e-4, ≈100 examples of 1B proxy tokens)."""
    oversample: int = 100
    """Draws per mixture kept, before rejection and dedup (RegMix: 100×)."""
    max_epochs: float = 4.0
    """Cap: weight × budget ≤ max_epochs × tokens available (Muennighoff et al. 2023: ~4 epochs of
    repeated data are nearly as good as new)."""
    seed: int = 42

    def __post_init__(self) -> None:
        problems = []
        if not self.temperature > 0:
            problems.append(f"temperature must be positive, got {self.temperature}")
        if not 0 < self.min_strength <= self.max_strength:
            problems.append(f"strengths need 0 < min_strength <= max_strength, got {self.min_strength}, "
                            f"{self.max_strength}")
        if self.strengths < 1:
            problems.append(f"strengths must be at least 1, got {self.strengths}")
        if not 0 < self.minimum < 1 or abs(round(1 / self.minimum) * self.minimum - 1) > 1e-9:
            problems.append(f"minimum must be 1/N for a whole N (e.g. 2e-4 = 1/5000), got {self.minimum}")
        if self.oversample < 1:
            problems.append(f"oversample must be at least 1, got {self.oversample}")
        if not self.max_epochs > 0:
            problems.append(f"max_epochs must be positive, got {self.max_epochs}")
        if problems:
            raise ConfigError("mixture.sampler: " + "; ".join(problems))


def prior(tokens: Mapping[str, int]) -> dict[str, float]:
    """Each language's share of the tokens: the mixture a model gets when nothing is decided."""
    _check_tokens(tokens)
    total = sum(tokens.values())
    return {lang: tokens[lang] / total for lang in sorted(tokens)}


def epoch_caps(tokens: Mapping[str, int], budget_tokens: int, max_epochs: float) -> dict[str, float]:
    """The largest weight each language can take: min(1, max_epochs × tokens / budget)."""
    _check_tokens(tokens)
    if budget_tokens <= 0:
        raise ConfigError(f"the token budget must be positive, got {budget_tokens}")
    return {lang: min(1.0, max_epochs * tokens[lang] / budget_tokens) for lang in sorted(tokens)}


def sample_mixtures(tokens: Mapping[str, int], budget_tokens: int, k: int, cfg: SamplerConfig = SamplerConfig(),
                    *, distinct: bool = True) -> tuple[list[str], np.ndarray]:
    """k mixtures over the languages of `tokens` (sorted): rows on the `minimum` grid summing to 1,
    every weight 0 or ≥ minimum and ≤ its epoch cap. The same inputs and seed give the same rows.

    distinct=True (the proxy runs): `oversample × k` draws, duplicates on the grid removed, k kept
    at random. distinct=False (the search): the first k draws inside the caps.

    Raises:
        ConfigError: the caps admit no mixture (budget > max_epochs × all tokens), or too few
            distinct mixtures exist inside them (lower `minimum` or `k`, or raise the epochs).
    """
    if k < 1:
        raise ConfigError(f"the number of mixtures must be at least 1, got {k}")
    langs = sorted(tokens)
    caps = np.array([epoch_caps(tokens, budget_tokens, cfg.max_epochs)[lang] for lang in langs])
    if caps.sum() < 1 - 1e-12:
        raise ConfigError(f"a budget of {budget_tokens:,} tokens needs more than {cfg.max_epochs:g} epochs of "
                          f"the {sum(tokens.values()):,} tokens available in {', '.join(langs)}: no mixture "
                          "fits the caps; lower the budget, raise mixture.sampler.max_epochs or add data")
    base = np.array([prior(tokens)[lang] for lang in langs]) ** cfg.temperature
    base /= base.sum()
    rng = np.random.default_rng(cfg.seed)
    strengths = np.logspace(np.log10(cfg.min_strength), np.log10(cfg.max_strength), cfg.strengths)
    want = k * cfg.oversample if distinct else k
    kept: list[np.ndarray] = []
    drawn = 0
    batch = max(1024, min(want, 100_000))
    limit = 50 * want + 10_000  # draws before giving up: caps this tight leave almost nothing to sample
    while sum(len(x) for x in kept) < want and drawn < limit:
        rows = _draw(rng, base, strengths, batch, cfg.minimum)
        drawn += batch
        rows = rows[(rows <= caps[None, :] + 1e-12).all(axis=1)]
        kept.append(rows)
    pool = np.concatenate(kept)[:want] if kept else np.zeros((0, len(langs)))
    if not distinct:
        if len(pool) < k:
            raise ConfigError(_too_few(len(pool), k, drawn, langs, caps, budget_tokens))
        return langs, pool
    units = np.rint(pool / cfg.minimum).astype(np.int64)
    _, first = np.unique(units, axis=0, return_index=True)
    unique = pool[np.sort(first)]
    if len(unique) < k:
        raise ConfigError(_too_few(len(unique), k, drawn, langs, caps, budget_tokens) + " distinct")
    chosen = np.sort(rng.choice(len(unique), size=k, replace=False))
    return langs, unique[chosen]


def project_to_caps(w: np.ndarray, caps: np.ndarray, minimum: float) -> np.ndarray:
    """The nearest mixture (in the water-filling sense) that the sampler could have drawn: weights
    under `minimum` zeroed, weights over their cap clipped and the excess shared by the others in
    proportion to their weight, repeated until nothing exceeds a cap; then put on the grid.

    An average of capped mixtures is itself within the caps (they are convex), but the minimum is
    not, and rounding can push a capped weight over: this puts the search's answer back in the set.
    """
    w = np.asarray(w, dtype=float).copy()
    caps = np.asarray(caps, dtype=float)
    if caps.sum() < 1 - 1e-12:
        raise ConfigError("the caps sum to less than 1: no mixture fits them")
    w[w < minimum] = 0.0
    if w.sum() <= 0:
        w = caps.copy()
    w /= w.sum()
    for _ in range(len(w) + 1):
        over = w > caps + 1e-12
        if not over.any():
            break
        excess = (w[over] - caps[over]).sum()
        w[over] = caps[over]
        free = (~over) & (w < caps - 1e-12)
        room = np.where(free, caps - w, 0.0)
        share = np.where(free, np.maximum(w, 1e-12), 0.0)
        add = np.minimum(excess * share / share.sum(), room)
        w += add
        w /= w.sum()
    grid = _to_grid(w[None, :], minimum)[0]
    # Largest-remainder rounding can lift a weight one grid step over its cap: move that step to the
    # language with the most room.
    for _ in range(len(w) * 4):
        over = np.flatnonzero(grid > caps + 1e-12)
        if not len(over):
            break
        i = over[0]
        j = int(np.argmax(np.where(grid + minimum <= caps + 1e-12, caps - grid, -np.inf)))
        grid[i] -= minimum
        grid[j] += minimum
    return grid


def _draw(rng: np.random.Generator, base: np.ndarray, strengths: np.ndarray, n: int, minimum: float) -> np.ndarray:
    """n Dirichlet draws, each with its own strength, zeroed under `minimum`, on the grid."""
    s = strengths[rng.integers(0, len(strengths), size=n)]
    gammas = rng.standard_gamma(base[None, :] * s[:, None])
    sums = gammas.sum(axis=1, keepdims=True)
    rows = np.divide(gammas, sums, out=np.zeros_like(gammas), where=sums > 0)
    rows = rows[sums[:, 0] > 0]
    rows[rows < minimum] = 0.0
    totals = rows.sum(axis=1)
    rows = rows[totals > 0] / totals[totals > 0, None]
    return _to_grid(rows, minimum)


def _to_grid(rows: np.ndarray, minimum: float) -> np.ndarray:
    """Round each row to multiples of `minimum` summing to exactly 1 (largest remainders)."""
    steps = int(round(1 / minimum))
    scaled = rows * steps
    units = np.floor(scaled).astype(np.int64)
    short = steps - units.sum(axis=1)
    order = np.argsort(-(scaled - units), axis=1, kind="stable")
    ranks = np.argsort(order, axis=1, kind="stable")
    units += ranks < short[:, None]
    return units / steps


def _too_few(found: int, k: int, drawn: int, langs: list[str], caps: np.ndarray, budget: int) -> str:
    tight = ", ".join(f"{lang} ≤ {c:.3g}" for lang, c in zip(langs, caps, strict=True) if c < 1)
    return (f"only {found} of {k} mixtures found inside the epoch caps after {drawn:,} draws "
            f"(budget {budget:,} tokens; caps {tight or 'none'}); lower the budget or raise "
            "mixture.sampler.max_epochs")


def _check_tokens(tokens: Mapping[str, int]) -> None:
    if not tokens:
        raise ConfigError("no languages to mix: the token counts are empty")
    bad = {lang: n for lang, n in tokens.items() if not n > 0}
    if bad:
        raise ConfigError(f"languages without tokens cannot be mixed: {bad}")
