"""Script-aware shingles as 64-bit hashes, computed with numpy over a whole batch of documents.

Space-separated languages get word n-grams; Thai, Lao, Khmer, Burmese and Chinese — written
without spaces — get character n-grams. Which one a document gets is decided by its script (the
share of its letters in those five scripts), so a mislabelled or unlabelled document is still
shingled correctly; the `lang` column only breaks the tie for text without letters. Text is NFC
and lower-cased first; combining marks (Thai vowels and tone marks, Vietnamese diacritics) are
part of words and characters, never separators — `\\W`-style tokenisers shred these scripts.

Hashing is vectorised: code points of the batch go into one array, tokens are hashed with
prefix sums of a polynomial hash (mod 2^64, so numpy's wrapping arithmetic is the modulus), and
n-grams combine n shifted token-hash arrays. No Python loop runs per shingle.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from data_engine.digests import mix64
from data_engine.langs import SPACELESS

# Scripts written without spaces, by code point block. Index 0 is "other" (spaced scripts).
SCRIPTS = ("other", "thai", "lao", "khmer", "myanmar", "han")
_BLOCKS = {
    "thai": [(0x0E00, 0x0E7F)],
    "lao": [(0x0E80, 0x0EFF)],
    "khmer": [(0x1780, 0x17FF), (0x19E0, 0x19FF)],
    "myanmar": [(0x1000, 0x109F), (0xA9E0, 0xA9FF), (0xAA60, 0xAA7F)],
    "han": [(0x2E80, 0x2FDF), (0x3005, 0x3007), (0x3021, 0x3029), (0x3040, 0x30FF), (0x3400, 0x4DBF),
            (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FFFF)],
}
LANG_SCRIPT = {"tha": "thai", "lao": "lao", "khm": "khmer", "mya": "myanmar", "zho": "han"}
_TABLE_SIZE = 0x30000  # code points above share the last entry (a letter of no spaceless script)

_B1 = np.uint64(0x9E3779B97F4A7C15 | 1)  # odd: invertible mod 2^64
_B2 = np.uint64(0xD6E8FEB86659FD93)
_DOC_SEP = "\x00"


@dataclass(frozen=True)
class ShingleSpec:
    word_ngram: int = 5
    """Words per shingle for space-separated scripts (FineWeb, Sailor2/text-dedup: 5)."""
    char_ngram: int = 5
    """Characters per shingle for Thai, Lao, Khmer, Burmese and Chinese."""
    char_ngram_by_script: tuple[tuple[str, int], ...] = ()
    """Overrides per script, e.g. (("han", 3),)."""

    def char_n(self, script: str) -> int:
        return dict(self.char_ngram_by_script).get(script, self.char_ngram)


@lru_cache(maxsize=1)
def _tables() -> tuple[np.ndarray, np.ndarray]:
    """(is_word_char, script_id) per code point: letters, marks and digits make words."""
    cats = [unicodedata.category(chr(c)) for c in range(_TABLE_SIZE)]
    word = np.fromiter((cat[0] in "LMN" for cat in cats), dtype=bool, count=_TABLE_SIZE)
    word[0xD800:0xE000] = False
    word[-1] = True
    script = np.zeros(_TABLE_SIZE, dtype=np.int8)
    for sid, name in enumerate(SCRIPTS):
        for lo, hi in _BLOCKS.get(name, []):
            script[lo:min(hi, _TABLE_SIZE - 2) + 1] = sid
    script[~word] = 0
    return word, script


def _mix(h: np.ndarray) -> np.ndarray:
    return mix64(h)


_POWERS: dict[int, np.ndarray] = {}


def _powers(base: np.uint64, n: int) -> np.ndarray:
    """base⁰ … baseⁿ⁻¹ (mod 2⁶⁴), kept and grown per base: every batch needs about the same."""
    have = _POWERS.get(int(base))
    if have is None or len(have) < n:
        size = max(n, 2 * len(have) if have is not None else n)
        out = np.full(size, base, dtype=np.uint64)
        out[0] = 1
        with np.errstate(over="ignore"):
            have = _POWERS[int(base)] = np.cumprod(out, dtype=np.uint64)
    return have[:n]


def normalize_for_shingles(text: str) -> str:
    return (text if text.isascii() else unicodedata.normalize("NFC", text)).lower()


def _codepoints(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Code points of all texts joined by a separator, and each text's start offset (+ end)."""
    norm = [normalize_for_shingles(t or "") for t in texts]
    lengths = np.fromiter((len(t) + 1 for t in norm), dtype=np.int64, count=len(norm))
    starts = np.zeros(len(norm) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    joined = (_DOC_SEP.join(norm) + _DOC_SEP).encode("utf-32-le", "surrogatepass")
    return np.frombuffer(joined, dtype=np.uint32), starts


def _window_hash(values: np.ndarray, doc: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Polynomial hash of every run of n consecutive values inside one document."""
    m = len(values) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(n):
            h = h * _B2 + values[i:i + m]
    same = doc[:m] == doc[n - 1:n - 1 + m]
    return h[same], doc[:m][same]


def _whole_hash(values: np.ndarray) -> np.uint64:
    h = np.uint64(len(values))
    with np.errstate(over="ignore"):
        for v in values:
            h = h * _B2 + v
    return h


def _script_profile(cp: np.ndarray, starts: np.ndarray,
                    n_docs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per document: letter count, spaceless-script letter count, dominant spaceless script, and
    the document index of every code point."""
    word_tab, script_tab = _tables()
    idx = np.minimum(cp, _TABLE_SIZE - 1)
    script = script_tab[idx]
    doc_of = np.repeat(np.arange(n_docs, dtype=np.int64), np.diff(starts))
    letters = np.bincount(doc_of[word_tab[idx]], minlength=n_docs)
    per_script = np.bincount(doc_of * len(SCRIPTS) + script, minlength=n_docs * len(SCRIPTS)
                             ).reshape(n_docs, len(SCRIPTS))
    spaceless = per_script[:, 1:].sum(axis=1)
    dominant = np.where(spaceless > 0, per_script[:, 1:].argmax(axis=1) + 1, 0)
    return letters, spaceless, dominant, doc_of


def dominant_spaceless_script(texts: Sequence[str]) -> np.ndarray:
    """Per text: the index in SCRIPTS of its dominant spaceless script when most of its letters are
    Thai, Lao, Khmer, Burmese or Chinese, else 0."""
    cp, starts = _codepoints(texts)
    letters, spaceless, dominant, _ = _script_profile(cp, starts, len(texts))
    mostly = (spaceless * 2 >= np.maximum(letters, 1)) & (letters > 0)
    return np.where(mostly, dominant, 0)


def written_without_spaces(texts: Sequence[str]) -> np.ndarray:
    """True for texts whose letters are mostly Thai, Lao, Khmer, Burmese or Chinese."""
    return dominant_spaceless_script(texts) > 0


def text_units(texts: Sequence[str]) -> np.ndarray:
    """Length in script-aware units: characters (spaces excluded) for text written without
    spaces, whitespace-separated words otherwise."""
    spaceless = written_without_spaces(texts)
    return np.array([len("".join(t.split())) if s else len(t.split()) for t, s in zip(texts, spaceless, strict=True)],
                    dtype=np.int64)


def shingle_hashes(texts: Sequence[str], langs: Sequence[str | None] | None = None,
                   spec: ShingleSpec = ShingleSpec()) -> tuple[np.ndarray, np.ndarray]:
    """(hashes uint64, doc index) of every shingle of every text, sorted by doc index.

    Every text gets at least one shingle: a text shorter than one n-gram is one shingle of its
    whole content (so two different short texts never collide on a shared sentinel).
    """
    word_tab, _ = _tables()
    cp, starts = _codepoints(texts)
    n_docs = len(texts)
    is_word = word_tab[np.minimum(cp, _TABLE_SIZE - 1)]
    letters, spaceless, dominant, doc_of = _script_profile(cp, starts, n_docs)
    char_mode = spaceless * 2 >= np.maximum(letters, 1)
    char_mode &= letters > 0
    for i in np.flatnonzero(letters == 0):  # no letters at all: the label decides
        lang = langs[i] if langs is not None else None
        if lang in SPACELESS:
            char_mode[i], dominant[i] = True, SCRIPTS.index(LANG_SCRIPT[lang])

    cp64 = cp.astype(np.uint64) + np.uint64(1)
    out_h: list[np.ndarray] = []
    out_d: list[np.ndarray] = []

    # Character n-grams over the word characters of char-mode documents, n by dominant script.
    chars = is_word & char_mode[doc_of]
    for sid, name in enumerate(SCRIPTS):
        docs_here = char_mode & (dominant == sid)
        if not docs_here.any():
            continue
        sel = chars & docs_here[doc_of]
        h, d = _window_hash(cp64[sel], doc_of[sel], spec.char_n(name))
        out_h.append(h)
        out_d.append(d)

    # Word n-grams: tokens are maximal runs of word characters.
    word_docs = ~char_mode
    if word_docs.any():
        w = is_word & word_docs[doc_of]
        prev = np.concatenate([[False], w[:-1]])
        nxt = np.concatenate([w[1:], [False]])
        tok_start = np.flatnonzero(w & ~prev)
        tok_end = np.flatnonzero(w & ~nxt) + 1
        inv = pow(int(_B1), -1, 1 << 64)
        pw = _powers(_B1, len(cp) + 1)
        ipw = _powers(np.uint64(inv), len(cp) + 1)
        with np.errstate(over="ignore"):
            prefix = np.zeros(len(cp) + 1, dtype=np.uint64)
            np.cumsum(cp64 * ipw[:len(cp)], dtype=np.uint64, out=prefix[1:])
            tok_hash = _mix((prefix[tok_end] - prefix[tok_start]) * pw[tok_end - 1])
        tok_doc = doc_of[tok_start]
        h, d = _window_hash(tok_hash, tok_doc, spec.word_ngram)
        out_h.append(h)
        out_d.append(d)
        tokens_per_doc = np.bincount(tok_doc, minlength=n_docs)
        short = np.flatnonzero(word_docs & (tokens_per_doc > 0) & (tokens_per_doc < spec.word_ngram))
        if len(short):
            first = np.searchsorted(tok_doc, short)
            out_h.append(np.array([_whole_hash(tok_hash[f:f + tokens_per_doc[i]])
                                   for i, f in zip(short, first, strict=True)], dtype=np.uint64))
            out_d.append(short)

    h_all = np.concatenate(out_h) if out_h else np.zeros(0, dtype=np.uint64)
    d_all = np.concatenate(out_d) if out_d else np.zeros(0, dtype=np.int64)
    # Texts still without a shingle (fewer characters than n, or no letters): their whole text.
    missing = np.flatnonzero(np.bincount(d_all, minlength=n_docs) == 0)
    if len(missing):
        extra = [_whole_hash(cp64[starts[i]:starts[i + 1] - 1]) for i in missing]
        h_all = np.concatenate([h_all, np.array(extra, dtype=np.uint64)])
        d_all = np.concatenate([d_all, missing])
    order = np.argsort(d_all, kind="stable")
    return _mix(h_all[order]), d_all[order]


def shingle_sets(texts: Sequence[str], langs: Sequence[str | None] | None = None,
                 spec: ShingleSpec = ShingleSpec()) -> list[np.ndarray]:
    """The distinct shingle hashes of each text (sorted): what exact Jaccard is computed on."""
    h, d = shingle_hashes(texts, langs, spec)
    bounds = np.searchsorted(d, np.arange(len(texts) + 1))
    return [np.unique(h[bounds[i]:bounds[i + 1]]) for i in range(len(texts))]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard of two sorted unique hash arrays."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)
