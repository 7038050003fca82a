"""Exact Jaccard of many pairs of sorted hash sets, compiled: one merge per pair.

Why not Spark's `array_intersect`: it builds a hash set per pair in generic code. The sets are
sorted and duplicate-free when they are made (`np.unique`), so a merge of the two arrays counts
the intersection in one pass. Measured warm on the 21,032 candidate pairs of the 100k bench corpus
(2 cores), joins and Arrow transfer included: 1.8 s against 2.7 s; the merge itself is a few
milliseconds, the rest is moving the sets.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def pair_jaccard(values_a: np.ndarray, offsets_a: np.ndarray, values_b: np.ndarray,
                 offsets_b: np.ndarray) -> np.ndarray:
    """Row i: |A ∩ B| / |A ∪ B| of A = values_a[offsets_a[i]:offsets_a[i+1]] and B likewise; each
    set sorted ascending without repeats. Two empty sets score 0: no shingle, no evidence."""
    n = len(offsets_a) - 1
    out = np.zeros(n, dtype=np.float64)
    for i in range(n):
        p, p_end = offsets_a[i], offsets_a[i + 1]
        q, q_end = offsets_b[i], offsets_b[i + 1]
        union = (p_end - p) + (q_end - q)
        common = 0
        while p < p_end and q < q_end:
            x, y = values_a[p], values_b[q]
            if x == y:
                common += 1
                p += 1
                q += 1
            elif x < y:
                p += 1
            else:
                q += 1
        union -= common
        if union > 0:
            out[i] = common / union
    return out
