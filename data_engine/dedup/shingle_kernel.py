"""The one loop over a batch's code points that turns documents into shingle hashes, compiled.

Why compiled: the numpy formulation of the same hashing (masks, prefix sums, n shifted arrays per
n-gram, a stable sort by document) makes a dozen passes over every code point and was 60% of near
dedup's time at 100k web pages on 2 cores. numba fuses them into one pass per document — script
profile, then tokens and windows — and keeps the arithmetic of `shingles.py`'s definition bit for
bit (uint64 wrapping products, splitmix64's finaliser). Compiled once and cached beside the module
(or in numba's user cache where that is read-only), so a Spark Python worker loads it in
milliseconds.
"""

from __future__ import annotations

import numba
import numpy as np

_ONE = np.uint64(1)
_B1 = np.uint64(0x9E3779B97F4A7C15 | 1)  # token hash base (odd: invertible mod 2^64)
_B2 = np.uint64(0xD6E8FEB86659FD93)  # window and whole-text base


@numba.njit(cache=True, inline="always")
def _mix(h: np.uint64) -> np.uint64:
    """`digests.mix64` for one value: that one is array code numba cannot compile (`np.errstate`);
    tests/data_engine/dedup/test_shingle_kernel.py's reference hashes with it, so they cannot drift."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


@numba.njit(cache=True, inline="always")
def _window(ring: np.ndarray, k: int, n: int) -> np.uint64:
    """Horner hash of the last n values written to the ring (value k-1 is the newest)."""
    h = np.uint64(0)
    for j in range(k - n, k):
        h = h * _B2 + ring[j % n]
    return h


@numba.njit(cache=True, inline="always")
def _profile(cp: np.ndarray, lo: int, hi: int, word_tab: np.ndarray, script_tab: np.ndarray,
             counts: np.ndarray) -> tuple[int, int]:
    """(letters, script id) of one document: the id of the first spaceless script with the most
    letters when at least half its letters are in spaceless scripts, else 0."""
    last = len(word_tab) - 1
    counts[:] = 0
    letters = 0
    for i in range(lo, hi):
        c = min(cp[i], last)
        if word_tab[c]:
            letters += 1
            counts[script_tab[c]] += 1
    dominant, best = 0, 0
    for s in range(1, len(counts)):
        if counts[s] > best:  # the first script with the most letters
            dominant, best = s, counts[s]
    if letters == 0 or (letters - counts[0]) * 2 < letters:
        dominant = 0
    return letters, dominant


@numba.njit(cache=True)
def spaceless_scripts(cp: np.ndarray, starts: np.ndarray, word_tab: np.ndarray, script_tab: np.ndarray,
                      n_scripts: int) -> np.ndarray:
    """Per document (laid out as for `hash_shingles`): `_profile`'s script id."""
    counts = np.zeros(n_scripts, dtype=np.int64)
    out = np.zeros(len(starts) - 1, dtype=np.int64)
    for d in range(len(starts) - 1):
        out[d] = _profile(cp, starts[d], starts[d + 1] - 1, word_tab, script_tab, counts)[1]
    return out


@numba.njit(cache=True)
def hash_shingles(cp: np.ndarray, starts: np.ndarray, word_tab: np.ndarray, script_tab: np.ndarray,
                  fallback: np.ndarray, char_n: np.ndarray, word_n: int,
                  out_h: np.ndarray, out_d: np.ndarray) -> int:
    """Writes each document's shingle hashes (and its index) in document order; returns how many.

    `cp`: code points of the normalised texts, each followed by a separator, `starts` their
    offsets (n_docs + 1); `word_tab`/`script_tab`: per code point (the last entry stands for all
    above); `fallback`: a script id for documents without letters whose label is spaceless, else
    0; `char_n`: n per script id. `out_*` must hold len(cp) entries (every shingle ends at a
    distinct code point, and every document has at least its separator).
    """
    n_docs = len(starts) - 1
    last = len(word_tab) - 1
    counts = np.zeros(len(char_n), dtype=np.int64)
    ring = np.zeros(max(word_n, char_n.max()), dtype=np.uint64)
    m = 0
    for d in range(n_docs):
        lo, hi = starts[d], starts[d + 1] - 1  # the separator excluded
        letters, dominant = _profile(cp, lo, hi, word_tab, script_tab, counts)
        char_mode = dominant > 0
        if letters == 0 and fallback[d] > 0:
            char_mode, dominant = True, fallback[d]
        first = m
        if char_mode:  # n consecutive letters (marks and digits included), spaces skipped
            n = char_n[dominant]
            k = 0
            for i in range(lo, hi):
                if word_tab[min(cp[i], last)]:
                    ring[k % n] = np.uint64(cp[i]) + _ONE
                    k += 1
                    if k >= n:
                        out_h[m], out_d[m] = _mix(_window(ring, k, n)), d
                        m += 1
        else:  # n consecutive words, a word being a maximal run of letters, marks and digits
            n = word_n
            k = 0
            token = np.uint64(0)
            in_token = False
            for i in range(lo, hi + 1):  # the separator ends the last word
                if i < hi and word_tab[min(cp[i], last)]:
                    token = token * _B1 + (np.uint64(cp[i]) + _ONE)
                    in_token = True
                elif in_token:
                    ring[k % n] = _mix(token)
                    k += 1
                    if k >= n:
                        out_h[m], out_d[m] = _mix(_window(ring, k, n)), d
                        m += 1
                    token, in_token = np.uint64(0), False
            if 0 < k < n:  # fewer words than one shingle: all of them are the shingle
                h = np.uint64(k)
                for j in range(k):
                    h = h * _B2 + ring[j]
                out_h[m], out_d[m] = _mix(h), d
                m += 1
        if m == first:  # no shingle (no letters, or fewer than n): the whole normalised text
            h = np.uint64(hi - lo)
            for i in range(lo, hi):
                h = h * _B2 + (np.uint64(cp[i]) + _ONE)
            out_h[m], out_d[m] = _mix(h), d
            m += 1
    return m
