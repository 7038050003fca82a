"""N-gram hashes of normalised text: one function for eval items and training documents alike.

Normalisation (`normalise`): NFC, lower case, and every run of characters that are not letters,
marks or numbers (punctuation, symbols, whitespace, format controls) becomes one space.
**Combining marks are kept**: Thai, Lao, Khmer and Burmese vowel signs and tone marks are
categories Mn/Mc, and stripping them (datatrove's decontamination does NFD, then drops Mn) merges
different words — ไก่ "chicken" and ไกล "far" would share the n-grams of ไก.

Units: the words of the normalised text for space-separated scripts; its characters, spaces
removed, for tha, lao, khm, mya and zho (decided by the language tag: an item's `lang`, a
document's `lang`). An n-gram is `n` consecutive units (`ContaminationConfig.n`); an item shorter
than one n-gram is one n-gram of all its units, so a document matches it when it contains the
whole normalised item. The training side therefore hashes, besides the n-grams, windows of every
shorter length some item has (`Lengths`); each extra length costs one more vectorised pass.

Every document also gets word n-grams (cheap for spaceless text: it has few spaces), so a Latin
item quoted inside a Thai page is found; character n-grams are computed only for documents
tagged with a spaceless language that some item is in.

Hashing is vectorised with numpy over a batch of texts: unit values are splitmix64-mixed code
points (words: a polynomial hash of their characters), windows are polynomial hashes computed from
prefix sums (mod 2^64, the base odd so its powers invert), salted with (unit, length) and mixed
again. A window's hash depends only on its units, never on where it occurs, so identical text
hashes identically on both sides. Two different n-grams share a 64-bit hash with probability
~2^-64 per pair: with 10^6 item n-grams and 10^12 training n-grams about 5·10^-2 chance
collisions in total; a hit reports the matched n-gram count, and one stray hit on a long item
moves its share by 1/n_grams.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import regex

from data_engine.digests import mix64

WORD = "word"
CHAR = "char"
_SEPARATORS = regex.compile(r"[^\p{L}\p{M}\p{N}]+")
_SPACE = np.uint32(32)
_BASE_TOKEN = np.uint64(0x9E3779B97F4A7C15)  # odd: invertible mod 2^64
_BASE_WORD = np.uint64(0xD6E8FEB86659FD93)
_BASE_CHAR = np.uint64(0xA0761D6478BD642F)
_SALT = np.uint64(0x2545F4914F6CDD1D)


def normalise(text: str) -> str:
    """NFC, lower case, non-(letter, mark, number) runs → one space, no leading/trailing space."""
    return _SEPARATORS.sub(" ", unicodedata.normalize("NFC", text).lower()).strip()


def units(normalised: str, unit: str) -> int:
    """How many words (unit "word") or characters (unit "char") a normalised text has."""
    return len(normalised.split()) if unit == WORD else len(normalised.replace(" ", ""))


@dataclass(frozen=True)
class Lengths:
    """Which windows the training side hashes: word lengths for every document, character lengths
    for documents of each spaceless language."""

    word: tuple[int, ...] = ()
    char: tuple[tuple[str, tuple[int, ...]], ...] = ()


def _mix(h: np.ndarray) -> np.ndarray:
    return mix64(h)


_POWERS: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # base → (base^j, base^-j), the longest needed so far


def _powers(base: np.uint64, size: int) -> tuple[np.ndarray, np.ndarray]:
    """base^j and base^-j (mod 2^64) for j < size; kept per worker, grown to the next power of two."""
    have = _POWERS.get(int(base))
    if have is None or len(have[0]) < size:
        n = 1 << max(16, int(size - 1).bit_length())
        inv = np.uint64(pow(int(base), -1, 1 << 64))
        with np.errstate(over="ignore"):
            pw = np.full(n, base, dtype=np.uint64)
            ipw = np.full(n, inv, dtype=np.uint64)
            pw[0] = ipw[0] = 1
            have = _POWERS[int(base)] = (np.cumprod(pw, dtype=np.uint64), np.cumprod(ipw, dtype=np.uint64))
    return have[0][:size], have[1][:size]


def _prefix(values: np.ndarray, base: np.uint64) -> tuple[np.ndarray, np.ndarray]:
    """Prefix sums P[j] = Σ_{t<j} values[t]·base^-t and base's powers: a span [s, e) hashes to
    (P[e] − P[s])·base^(e−1) = Σ values[t]·base^(e−1−t), whatever s is."""
    pw, ipw = _powers(base, len(values) + 1)
    prefix = np.zeros(len(values) + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        np.cumsum(values * ipw[:len(values)], dtype=np.uint64, out=prefix[1:])
    return prefix, pw


def _windows(values: np.ndarray, doc: np.ndarray, k: int, base: np.uint64,
             salt: np.uint64) -> tuple[np.ndarray, np.ndarray]:
    """Hash of every run of k consecutive values that lies inside one document."""
    m = len(values) - k + 1
    if m <= 0:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    prefix, pw = _prefix(values, base)
    with np.errstate(over="ignore"):
        h = (prefix[k:k + m] - prefix[:m]) * pw[k - 1:k - 1 + m]
    inside = doc[:m] == doc[k - 1:k - 1 + m]
    return _mix(h[inside] ^ salt), doc[:m][inside]


def _salt(unit: str, k: int) -> np.uint64:
    tag = (k << 1) | (unit == CHAR)
    return _mix(np.array([tag], dtype=np.uint64) ^ _SALT)[0]


def hash_normalised(texts: Sequence[str], langs: Sequence[str], lengths: Lengths) -> tuple[np.ndarray, np.ndarray]:
    """(hash int64, text index int64) of every window `lengths` asks for, over normalised texts."""
    n_docs = len(texts)
    out_h: list[np.ndarray] = []
    out_d: list[np.ndarray] = []
    if n_docs == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    sizes = np.fromiter((len(t) + 1 for t in texts), dtype=np.int64, count=n_docs)
    cp = np.frombuffer((" ".join(texts) + " ").encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    doc_of = np.repeat(np.arange(n_docs, dtype=np.int64), sizes)
    is_unit = cp != _SPACE
    values = _mix(cp.astype(np.uint64) + np.uint64(1))

    if lengths.word:
        before = np.concatenate([[False], is_unit[:-1]])
        after = np.concatenate([is_unit[1:], [False]])
        start = np.flatnonzero(is_unit & ~before)
        end = np.flatnonzero(is_unit & ~after) + 1
        prefix, pw = _prefix(values, _BASE_TOKEN)
        with np.errstate(over="ignore"):
            tokens = _mix((prefix[end] - prefix[start]) * pw[end - 1])
        token_doc = doc_of[start]
        for k in lengths.word:
            h, d = _windows(tokens, token_doc, k, _BASE_WORD, _salt(WORD, k))
            out_h.append(h)
            out_d.append(d)

    if lengths.char:
        lang_arr = np.asarray(langs, dtype=object)
        for lang, ks in lengths.char:
            in_lang = lang_arr == lang
            if not in_lang.any():
                continue
            sel = is_unit & in_lang[doc_of]
            chars, char_doc = values[sel], doc_of[sel]
            for k in ks:
                h, d = _windows(chars, char_doc, k, _BASE_CHAR, _salt(CHAR, k))
                out_h.append(h)
                out_d.append(d)

    if not out_h:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(out_h).view(np.int64), np.concatenate(out_d)


def ngram_hashes(texts: Sequence[str | None], langs: Sequence[str], lengths: Lengths,
                 *, batch_chars: int = 1_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Normalise raw texts (None counts as empty) and hash their windows, `batch_chars` at a time."""
    norm = [normalise(t) if isinstance(t, str) else "" for t in texts]
    out_h: list[np.ndarray] = []
    out_d: list[np.ndarray] = []
    start, size = 0, 0
    for i, t in enumerate(norm):
        size += len(t) + 1
        if size >= batch_chars or i == len(norm) - 1:
            h, d = hash_normalised(norm[start:i + 1], langs[start:i + 1], lengths)
            out_h.append(h)
            out_d.append(d + start)
            start, size = i + 1, 0
    if not out_h:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(out_h), np.concatenate(out_d)


def item_ngrams(normalised: str, lang: str, unit: str, n: int) -> tuple[int, np.ndarray]:
    """(units per n-gram, distinct hashes) of one normalised item: its n-grams, or — shorter than
    n units — one n-gram of all of them. An item without units has none."""
    k = min(n, units(normalised, unit))
    if k == 0:
        return 0, np.zeros(0, dtype=np.int64)
    lengths = Lengths(word=(k,)) if unit == WORD else Lengths(char=((lang, (k,)),))
    h, _ = hash_normalised([normalised], [lang], lengths)
    return k, np.unique(h)
