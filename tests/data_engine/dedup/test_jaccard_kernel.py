"""The compiled pair Jaccard against Python sets, and the Arrow adapter near dedup feeds it with."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from data_engine.dedup.jaccard_kernel import pair_jaccard
from data_engine.dedup.near import _score_pairs


def _flat(sets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(sets) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(s) for s in sets])
    values = np.concatenate(sets) if sets else np.zeros(0, dtype=np.uint32)
    return values.astype(np.uint32), offsets


def _python_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = set(a.tolist()), set(b.tolist())
    return len(sa & sb) / len(sa | sb) if sa | sb else 0.0


def _pairs(seed: int, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Sets over the whole uint32 range (half of them ≥ 2³¹, negative as int32), overlapping by
    chance and by construction, empty ones included."""
    rng = np.random.default_rng(seed)
    left, right = [], []
    for _ in range(n):
        a = np.unique(rng.integers(0, 2**32, rng.integers(0, 400), dtype=np.uint64).astype(np.uint32))
        keep = a[rng.random(len(a)) < rng.random()]
        b = np.unique(np.concatenate([keep, rng.integers(0, 2**32, rng.integers(0, 200), dtype=np.uint64)
                                      .astype(np.uint32)]))
        left.append(a)
        right.append(b)
    left += [np.zeros(0, np.uint32), np.array([5], np.uint32), np.array([0, 2**32 - 1], np.uint32)]
    right += [np.zeros(0, np.uint32), np.zeros(0, np.uint32), np.array([2**32 - 1], np.uint32)]
    return left, right


def test_pair_jaccard_is_the_set_definition() -> None:
    left, right = _pairs(7, 500)
    got = pair_jaccard(*_flat(left), *_flat(right))
    want = np.array([_python_jaccard(a, b) for a, b in zip(left, right, strict=True)])
    assert np.array_equal(got, want)
    assert got[-3] == 0.0 and got[-2] == 0.0 and got[-1] == 0.5
    assert 0.0 < got[:500].mean() < 1.0


def test_score_pairs_reads_sliced_int32_batches() -> None:
    """Spark hands int32 lists (the sets' uint32 bits) in batches that may be slices of bigger
    arrays: offsets then point into the parent's values."""
    left, right = _pairs(11, 60)
    as_int32 = [pa.array([s.view(np.int32) for s in side], pa.list_(pa.int32())) for side in (left, right)]
    ids_a = pa.array([f"a{i}" for i in range(len(left))])
    ids_b = pa.array([f"b{i}" for i in range(len(left))])
    whole = pa.RecordBatch.from_arrays([ids_a, ids_b, *as_int32], names=["a", "b", "sa", "sb"])
    pieces = [whole.slice(0, 17), whole.slice(17, 30), whole.slice(47)]
    out = pa.Table.from_batches(list(_score_pairs(iter(pieces))))
    assert out.column("a").to_pylist() == ids_a.to_pylist()
    want = [_python_jaccard(a, b) for a, b in zip(left, right, strict=True)]
    assert out.column("jaccard").to_pylist() == pytest.approx(want, abs=0)
