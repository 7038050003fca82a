"""SEA-HELM's chance-normalised scores and size-weighted averages.

A 4-way multiple-choice task scores 25% by guessing and a 2-way one 50%, so raw accuracies do not
average across tasks. SEA-HELM rescales each score so chance is 0 and the maximum 100, clipping
below-chance results at 0 (`docs/score_calculations.md`), before averaging tasks into
competencies and languages. lm-eval weights group means by sub-task size by default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def normalised(score: float, chance: float, max_score: float = 1.0) -> float:
    """max(0, (score − chance) / (max_score − chance)) × 100."""
    if not max_score > chance:
        raise ValueError(f"the maximum score ({max_score}) must be above the chance score ({chance})")
    return max(0.0, (score - chance) / (max_score - chance)) * 100


def aggregate(values: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """Mean of `values`, weighted by `weights` (e.g. items per sub-task) when given."""
    if not values:
        raise ValueError("cannot aggregate an empty list of scores")
    if weights is None:
        return math.fsum(values) / len(values)
    if len(weights) != len(values):
        raise ValueError(f"need one weight per value, got {len(weights)} weights for {len(values)} values")
    if any(w < 0 for w in weights) or not math.fsum(weights) > 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {list(weights)}")
    return math.fsum(v * w for v, w in zip(values, weights, strict=True)) / math.fsum(weights)
