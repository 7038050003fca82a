"""The cleaning statistics of a whole batch at once: `stats.document_stats`'s numbers, in numpy.

`stats.document_stats` is the definition, one document at a time in plain Python (a loop per
character, a tuple per n-gram: ~1.5 ms for a 1,300-character page). Here the batch's code points
go into one array and every statistic is a few passes over it: per-character classes from one
table (Python's own `isspace`, `isdigit`, `\\w`, categories L/M, built once per process), line,
word and letter-run boundaries from shifted comparisons, counts per document from `add.reduceat`,
and "equal to an earlier line / run / n-gram of the same document" from one compiled pass with a
hash table over 64-bit polynomial hashes of them (two different strings share one with
probability ~2⁻⁶⁴; a sort of them was 30% of measure's time). Python remains only where
it defines the answer: the regular expressions (code and bullet lines, URLs, "lorem ipsum"), run
only on the lines and documents that can match them, and Gopher's duplicate n-gram walk, which
skips past each repeat and so is sequential, run only from a document's first repeated n-gram on.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from functools import lru_cache

import numba
import numpy as np

from data_engine.clean.stats import _BULLET, _CHARS_PER_WORD, _LOREM, _TERMINAL, _URL, STAT_NAMES, is_code_line
from data_engine.dedup.shingles import SCRIPTS

SPACE, DIGIT, WORD, LETTER, TERMINAL, CODE_SIGN, CODE_FIRST, BULLET_FIRST = (1 << i for i in range(8))
# A line can only be code (stats._CODE_START / _CODE_ANYWHERE / _CODE_TOKEN) if it holds one of these
# characters, or its first non-space character opens one of _CODE_START's forms: a bracket, comment
# or markup sign, a quote (JSON), or the first letter of a keyword (function, var, let, const,
# import, from, return, def, class, if, elif, else, for, while, with, try, except, finally).
_CODE_SIGNS = "{}<>=;"
_CODE_FIRSTS = "}])/*#<\"fvlcidrewt"
_BULLET_FIRSTS = "-*•·●▪►–—◦‣○■□✓✔"  # or a decimal digit: stats._BULLET
_B = np.uint64(0x9E3779B97F4A7C15)  # odd, so invertible modulo 2**64
_B_INV = np.uint64(pow(int(_B), -1, 1 << 64))
_CHUNK = 1_000_000  # code points measured at once: bounds the temporaries (a few hundred bytes each)


# Code points with any of the flags below: planes 0-3 and the variation selectors and tags of plane 14;
# planes 4-13 are unassigned and 15-16 private use (the test checks every code point).
FLAGGED = ((0, 0x40000), (0xE0000, 0xE1000))


@lru_cache(maxsize=1)
def char_flags() -> np.ndarray:
    """Bit flags per code point (all of Unicode), from Python's own character predicates."""
    import unicodedata

    codes = [c for lo, hi in FLAGGED for c in range(lo, hi)]
    chars = [chr(c) for c in codes]
    flags = np.zeros(0x110000, dtype=np.uint8)
    for bit, test in ((SPACE, str.isspace), (DIGIT, str.isdigit),
                      (WORD, lambda c: c.isalnum() or c == "_"),  # re's \w for str patterns
                      (LETTER, lambda c: unicodedata.category(c)[0] in "LM"),
                      (BULLET_FIRST, str.isdecimal)):  # re's \d
        flags[np.array(codes)[np.fromiter(map(test, chars), dtype=bool, count=len(chars))]] |= bit
    for bit, members in ((TERMINAL, _TERMINAL), (CODE_SIGN, _CODE_SIGNS), (CODE_FIRST, _CODE_FIRSTS),
                         (BULLET_FIRST, _BULLET_FIRSTS)):
        flags[[ord(c) for c in members]] |= bit
    return flags


def _dominant_script(cp: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """shingles.dominant_spaceless_script's rule (its tables and compiled kernel) on code points
    already normalised for it, each text followed by one separator."""
    from data_engine.dedup.shingle_kernel import spaceless_scripts
    from data_engine.dedup.shingles import _tables

    word_tab, script_tab = _tables()
    return spaceless_scripts(cp, starts, word_tab, script_tab, len(SCRIPTS))


def _codepoints(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Code points of the texts, each followed by "\\n", and each text's first position (+ the end)."""
    starts = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.fromiter((len(t) + 1 for t in texts), dtype=np.int64, count=len(texts)), out=starts[1:])
    joined = "\n".join(texts) + "\n"
    return np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32), starts


_POWERS: dict[int, np.ndarray] = {}


def _powers(base: np.uint64, n: int) -> np.ndarray:
    """base**0 … base**(n-1) modulo 2**64 (kept per process, grown as needed)."""
    have = _POWERS.get(int(base))
    if have is None or len(have) < n:
        size = max(n, 1 << 20, 2 * len(have) if have is not None else 0)
        have = np.full(size, base, dtype=np.uint64)
        have[0] = 1
        _POWERS[int(base)] = have = np.cumprod(have, dtype=np.uint64)  # wraps modulo 2**64
    return have[:n]


@lru_cache(maxsize=1)
def _code_values() -> np.ndarray:
    """A fixed random 64-bit value per code point: what the polynomial hashes add up."""
    return np.random.default_rng(0x5A11).integers(0, 1 << 63, 0x110000, dtype=np.int64).astype(np.uint64) | 1


@numba.njit(cache=True)
def _prefix_sums(values: np.ndarray, table: np.ndarray, b_inv: np.uint64) -> np.ndarray:
    """prefix[k] = Σ_{i<k} v_i · b_inv**i modulo 2**64, v_i = table[values[i]] (or values[i] itself
    when `table` is empty): numpy's gather, power table, product and cumsum fused into one pass."""
    n = len(values)
    prefix = np.zeros(n + 1, dtype=np.uint64)
    acc = np.uint64(0)
    power = np.uint64(1)
    lookup = len(table) > 0
    for i in range(n):
        v = table[values[i]] if lookup else np.uint64(values[i])
        acc += v * power
        prefix[i + 1] = acc
        power *= b_inv
    return prefix


_NO_TABLE = np.zeros(0, dtype=np.uint64)


class _Hasher:
    """Polynomial hashes of any segment [a, b) of a sequence of uint64 values, in O(1) each
    (`codes` given: the values are `_code_values()` of those code points)."""

    def __init__(self, values: np.ndarray, *, codes: bool = False):
        n = len(values)
        self.up = _powers(_B, n + 1)
        self.prefix = _prefix_sums(values, _code_values() if codes else _NO_TABLE, _B_INV)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        h = (self.prefix[b] - self.prefix[a]) * self.up[a]  # Σ values[a + k] · B⁻ᵏ: where it sits does not matter
        return h ^ (b - a).astype(np.uint64)  # compared for equality only: no need to mix


_MIX = np.uint64(0xBF58476D1CE4E5B9)


@numba.njit(cache=True)
def _slots(n: int) -> int:
    size = 2
    while size < 2 * n:
        size *= 2
    return size


@numba.njit(cache=True)
def _find(slot_doc: np.ndarray, slot_key: np.ndarray, d: np.int64, k: np.uint64) -> int:
    """The slot of (d, k) in an open-addressed table, or the empty slot where it goes."""
    mask = np.uint64(len(slot_doc) - 1)
    h = ((k ^ (np.uint64(d) * _B)) * _MIX) >> np.uint64(17)
    while True:
        at = int(h & mask)
        if slot_doc[at] < 0 or (slot_doc[at] == d and slot_key[at] == k):
            return at
        h += np.uint64(1)


@numba.njit(cache=True)
def _earlier_index(doc: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Per index, the nearest earlier index with the same (document, key), else -1: one pass
    with a hash table of the last index seen, instead of sorting (document, key) pairs."""
    n = len(key)
    size = _slots(n)
    slot_doc = np.full(size, -1, dtype=np.int64)
    slot_key = np.zeros(size, dtype=np.uint64)
    slot_last = np.zeros(size, dtype=np.int64)
    prev = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        at = _find(slot_doc, slot_key, doc[i], key[i])
        if slot_doc[at] < 0:
            slot_doc[at] = doc[i]
            slot_key[at] = key[i]
        else:
            prev[i] = slot_last[at]
        slot_last[at] = i
    return prev


@numba.njit(cache=True)
def _most_frequent(doc: np.ndarray, key: np.ndarray, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """Per document, the count and first index of its most frequent key (ties: the one seen
    first); count 0 where no key occurs twice."""
    n = len(key)
    size = _slots(n)
    slot_doc = np.full(size, -1, dtype=np.int64)
    slot_key = np.zeros(size, dtype=np.uint64)
    slot_first = np.zeros(size, dtype=np.int64)
    slot_count = np.zeros(size, dtype=np.int64)
    for i in range(n):
        at = _find(slot_doc, slot_key, doc[i], key[i])
        if slot_doc[at] < 0:
            slot_doc[at] = doc[i]
            slot_key[at] = key[i]
            slot_first[at] = i
        slot_count[at] += 1
    best_count = np.zeros(n_docs, dtype=np.int64)
    best_first = np.full(n_docs, -1, dtype=np.int64)
    for at in range(size):
        c = slot_count[at]
        if c < 2:
            continue
        d = slot_doc[at]
        if c > best_count[d] or (c == best_count[d] and slot_first[at] < best_first[d]):
            best_count[d] = c
            best_first[d] = slot_first[at]
    return best_count, best_first


def _earlier(doc: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per index: whether an earlier index of the same document holds the same key, and the
    nearest such index (-1 where none)."""
    prev = _earlier_index(doc.astype(np.int64, copy=False), key.astype(np.uint64, copy=False))
    return prev >= 0, prev


def _per_doc(doc: np.ndarray, n_docs: int, weights: np.ndarray | None = None) -> np.ndarray:
    return np.bincount(doc, weights=weights, minlength=n_docs)


def _ngram_stats(values: np.ndarray, lengths: np.ndarray, doc: np.ndarray, n_docs: int,
                 n_top: int, n_dup: int) -> tuple[np.ndarray, np.ndarray]:
    """stats._ngram_stats for every document of a token stream (tokens grouped by document, in order)."""
    top = np.zeros(n_docs)
    dup = np.zeros(n_docs)
    total = _per_doc(doc, n_docs, lengths).astype(np.int64)
    if len(values) == 0:
        return top, dup
    hasher = _Hasher(values)
    chars = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(lengths, out=chars[1:])
    for n, which in ((n_top, "top"), (n_dup, "dup")):
        m = len(values) - n + 1
        if m <= 0:
            continue
        start = np.flatnonzero(doc[:m] == doc[n - 1:n - 1 + m])  # windows inside one document
        if len(start) < 2:
            continue
        grams = hasher(start, start + n)
        wdoc = doc[start]
        if which == "top":
            count, at = _most_frequent(wdoc.astype(np.int64, copy=False), grams, n_docs)
            docs = np.flatnonzero(count)  # top is 0 unless some n-gram occurs twice
            if len(docs) == 0:
                continue
            first = start[at[docs]]
            top[docs] = (count[docs] * (chars[first + n] - chars[first])) / total[docs]
        else:
            again, prev = _earlier(wdoc, grams)
            if not again.any():
                continue
            window_chars = chars[start + n] - chars[start]
            hits = np.flatnonzero(again)
            hit_doc = wdoc[hits]
            hit_bounds = np.searchsorted(hit_doc, np.arange(n_docs + 1))
            for d in np.unique(hit_doc):
                cand = hits[hit_bounds[d]:hit_bounds[d + 1]]
                dup[d] = _walk(cand.tolist(), prev, window_chars, n) / total[d]
    return top, dup


def _walk(candidates: list[int], prev: np.ndarray, chars: np.ndarray, n: int) -> int:
    """Gopher's duplicate n-gram walk (stats._ngram_stats), visiting only the n-grams seen before.

    The walk moves one n-gram at a time, adding each to `seen`, except that an n-gram already in
    `seen` counts its characters and the walk jumps n ahead, skipping the n-grams in between. So
    an n-gram is in `seen` when an earlier occurrence was visited, i.e. not skipped."""
    skip_from: list[int] = []
    skip_to: list[int] = []
    repeated, resume = 0, 0
    for j in candidates:
        if j < resume:
            continue  # skipped
        p = int(prev[j])
        while p >= 0:
            k = bisect_right(skip_from, p) - 1
            if k >= 0 and p < skip_to[k]:
                p = int(prev[p])  # that occurrence was skipped, so it is not in `seen`
            else:
                break
        if p >= 0:
            repeated += int(chars[j])
            skip_from.append(j + 1)
            skip_to.append(j + n)
            resume = j + n
    return repeated


def measure(texts: Sequence[str], max_units: float | None = None) -> dict[str, np.ndarray]:
    """Every statistic of STAT_NAMES for every text (float64 arrays), equal to
    `stats.document_stats(text, spaceless, chars_per_word, max_units)` with the dedup's script
    decision. Texts are NFC, as `normalize.clean_text` returns them."""
    out = {name: np.zeros(len(texts)) for name in STAT_NAMES}
    first = 0
    while first < len(texts):
        last, size = first, 0
        while last < len(texts) and (last == first or size + len(texts[last]) <= _CHUNK):
            size += len(texts[last]) + 1
            last += 1
        part = _measure(texts[first:last], max_units)
        for name in STAT_NAMES:
            out[name][first:last] = part[name]
        first = last
    return out


def _measure(texts: Sequence[str], max_units: float | None) -> dict[str, np.ndarray]:
    n_docs = len(texts)
    flags = char_flags()
    cp, starts = _codepoints(texts)
    n_pos = len(cp)
    f = flags[cp]
    doc_of = np.repeat(np.arange(n_docs, dtype=np.int64), np.diff(starts))
    space = (f & SPACE).astype(bool)
    solid = ~space
    seg = starts[:-1]

    def count(mask: np.ndarray) -> np.ndarray:
        return np.add.reduceat(mask.astype(np.int64), seg) if n_docs else np.zeros(0, dtype=np.int64)

    non_space_raw = count(solid)
    non_space = np.where(non_space_raw == 0, 1, non_space_raw)
    digits = count((f & DIGIT).astype(bool))
    letters = count((f & LETTER).astype(bool))
    after_space = np.concatenate([[True], space[:-1]])
    split_units = count(solid & after_space)  # len(text.split())

    # which documents are written without spaces: the dedup's rule, on the lower-cased text
    lows = [t.lower() for t in texts]
    low_cp, low_starts = _codepoints(lows)
    low_doc = np.repeat(np.arange(n_docs, dtype=np.int64), np.diff(low_starts))
    script = _dominant_script(low_cp, low_starts)
    spaceless = script > 0
    units = np.where(spaceless, non_space_raw, split_units)
    too_long = units > max_units if max_units is not None else np.zeros(n_docs, dtype=bool)

    # lines: text.split("\n") without the blank ones
    hasher = _Hasher(cp, codes=True)
    breaks = np.flatnonzero(cp == 10)
    line_start = np.concatenate([[0], breaks[:-1] + 1])
    line_end = breaks
    solid_before = np.zeros(n_pos + 1, dtype=np.int64)
    np.cumsum(solid, out=solid_before[1:])
    keep = solid_before[line_end] > solid_before[line_start]
    line_start, line_end = line_start[keep], line_end[keep]
    line_doc = doc_of[line_end]
    line_len = line_end - line_start
    n_lines = _per_doc(line_doc, n_docs)
    lines = np.maximum(n_lines, 1)
    chars_raw = _per_doc(line_doc, n_docs, line_len).astype(np.int64)
    chars = np.where(chars_raw == 0, 1, chars_raw)
    char_at = np.flatnonzero(solid)
    first_solid = char_at[np.searchsorted(char_at, line_start)]  # lines are not blank: both exist
    last_solid = char_at[np.searchsorted(char_at, line_end) - 1]
    terminal = _per_doc(line_doc[(f[last_solid] & TERMINAL).astype(bool)], n_docs)
    dup_line = _earlier(line_doc, hasher(line_start, line_end))[0]
    dup_lines = _per_doc(line_doc[dup_line], n_docs)
    dup_line_chars = _per_doc(line_doc[dup_line], n_docs, line_len[dup_line])

    # code and bullet lines: the regular expressions, on the lines that can match them
    joined = "\n".join(texts)
    sign_before = np.zeros(n_pos + 1, dtype=np.int64)
    np.cumsum((f & CODE_SIGN).astype(bool), out=sign_before[1:])
    maybe_code = np.flatnonzero((sign_before[line_end] > sign_before[line_start])
                                | (f[first_solid] & CODE_FIRST).astype(bool))
    code = [k for k in maybe_code.tolist() if is_code_line(joined[line_start[k]:line_end[k]])]
    maybe_bullet = np.flatnonzero((f[first_solid] & BULLET_FIRST).astype(bool))
    bullet = [k for k in maybe_bullet.tolist() if _BULLET.match(joined[line_start[k]:line_end[k]])]
    code_lines = _per_doc(line_doc[np.array(code, dtype=np.int64)], n_docs)
    bullet_lines = _per_doc(line_doc[np.array(bullet, dtype=np.int64)], n_docs)

    # the few counts Python's str does at C speed, and the searches only where their letters occur
    symbols = np.array([t.count("#") + t.count("…") + t.count("...") for t in texts], dtype=np.float64)
    curly = np.array([t.count("{") + t.count("}") for t in texts], dtype=np.float64)
    url_chars = np.array([sum(len(m) for m in _URL.findall(t)) if "http" in low or "www." in low else 0
                          for t, low in zip(texts, lows, strict=True)], dtype=np.float64)
    lorem = np.array([1.0 if "orem" in low and _LOREM.search(t) else 0.0
                      for t, low in zip(texts, lows, strict=True)])

    # tokens: words (\w+ of the lower-cased text) when spaced, non-space characters when not
    measured = ~too_long
    low_word = (flags[low_cp] & WORD).astype(bool)
    word_first = np.flatnonzero(low_word & ~np.concatenate([[False], low_word[:-1]]))
    word_last = np.flatnonzero(low_word & ~np.concatenate([low_word[1:], [False]])) + 1
    word_doc = low_doc[word_first]
    use = measured[word_doc] & ~spaceless[word_doc]
    low_hasher = _Hasher(low_cp, codes=True)
    word_values = low_hasher(word_first[use], word_last[use])
    char_doc = doc_of[char_at]
    use_c = measured[char_doc] & spaceless[char_doc]
    char_values = _code_values()[cp[char_at[use_c]]]
    top2 = np.zeros(n_docs)
    dup5 = np.zeros(n_docs)
    cpw = np.array([_CHARS_PER_WORD.get(s, 3) for s in range(6)])[script]
    for is_spaceless, k in {(bool(s), int(c)) for s, c in zip(spaceless, cpw, strict=True)}:
        group = (spaceless == is_spaceless) & (cpw == k) & measured
        if is_spaceless:
            sel = group[char_doc[use_c]]
            values, lengths, tdoc = char_values[sel], np.ones(int(sel.sum()), dtype=np.int64), char_doc[use_c][sel]
            n_top, n_dup = 2 * k, 5 * k
        else:
            sel = group[word_doc[use]]
            values = word_values[sel]
            lengths = (word_last[use] - word_first[use])[sel]
            tdoc = word_doc[use][sel]
            n_top, n_dup = 2, 5
        t, d = _ngram_stats(values, lengths, tdoc, n_docs, n_top, n_dup)
        top2[group], dup5[group] = t[group], d[group]

    # runs of letters and marks between everything else, and which repeat an earlier one
    letter = (f & LETTER).astype(bool)
    run_first = np.flatnonzero(letter & ~np.concatenate([[False], letter[:-1]]))
    run_last = np.flatnonzero(letter & ~np.concatenate([letter[1:], [False]])) + 1
    run_doc = doc_of[run_first]
    again = _earlier(run_doc, hasher(run_first, run_last))[0]
    repeated = _per_doc(run_doc[again], n_docs, (run_last - run_first)[again])
    with np.errstate(invalid="ignore", divide="ignore"):
        dup_phrase = np.where(letters > 0, repeated / np.maximum(letters, 1), 0.0)

    letters_used = np.where(too_long, non_space, letters)
    return {
        "units": units.astype(np.float64),
        "mean_line_chars": chars / lines,
        "line_punct_frac": terminal / lines,
        "symbol_ratio": symbols / np.where(units == 0, 1, units),
        "digit_ratio": digits / non_space,
        "url_ratio": url_chars / chars,
        "dup_line_frac": dup_lines / lines,
        "dup_line_char_frac": dup_line_chars / chars,
        "top_2gram_frac": np.where(too_long, 0.0, top2),
        "dup_5gram_frac": np.where(too_long, 0.0, dup5),
        "lorem_ipsum": lorem,
        "curly_ratio": curly / non_space,
        "code_line_frac": code_lines / lines,
        "bullet_line_frac": bullet_lines / lines,
        "letter_frac": letters_used / non_space,
        "dup_phrase_frac": np.where(too_long, 0.0, dup_phrase),
    }
