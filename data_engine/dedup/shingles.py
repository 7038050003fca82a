"""Script-aware shingles as 64-bit hashes, for a whole batch of documents at once.

Space-separated languages get word n-grams; Thai, Lao, Khmer, Burmese and Chinese — written
without spaces — get character n-grams. Which one a document gets is decided by its script (the
share of its letters in those five scripts), so a mislabelled or unlabelled document is still
shingled correctly; the `lang` column only breaks the tie for text without letters. Text is NFC
and lower-cased first; combining marks (Thai vowels and tone marks, Vietnamese diacritics) are
part of words and characters, never separators — `\\W`-style tokenisers shred these scripts.

Python normalises the texts and lays their code points out in one array; one compiled pass
(`shingle_kernel.py`) decides each document's mode and hashes its shingles. No Python loop runs
per shingle.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

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


def dominant_spaceless_script(texts: Sequence[str]) -> np.ndarray:
    """Per text: the index in SCRIPTS of its dominant spaceless script when most of its letters are
    Thai, Lao, Khmer, Burmese or Chinese, else 0."""
    from data_engine.dedup.shingle_kernel import spaceless_scripts

    word_tab, script_tab = _tables()
    cp, starts = _codepoints(texts)
    return spaceless_scripts(cp, starts, word_tab, script_tab, len(SCRIPTS))


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
    """(hashes uint64, doc index) of every shingle of every text, in document order.

    The definition (computed in one compiled pass, `shingle_kernel.py`): a document is in
    character mode when at least half its letters are Thai, Lao, Khmer, Burmese or Chinese (a
    document without letters: when its label is one of those), and its shingles are then every n
    consecutive letters of its dominant script's n, spaces and punctuation skipped; otherwise they
    are every n consecutive words (maximal runs of letters, marks and digits). A token hashes as
    Horner's rule over its code points + 1 in base B1, then splitmix64; a shingle as Horner's rule
    over its n values in base B2. Every text gets at least one shingle: a text with fewer words
    (letters) than n is one shingle of all of them, seeded by their count, and a text with none is
    one shingle of its whole normalised content, seeded by its length (so two different short
    texts never collide on a shared sentinel). Every hash goes through splitmix64 once more.
    """
    from data_engine.dedup.shingle_kernel import hash_shingles

    word_tab, script_tab = _tables()
    cp, starts = _codepoints(texts)
    fallback = np.zeros(len(texts), dtype=np.int8)
    if langs is not None:
        for i, lang in enumerate(langs):
            if lang in SPACELESS:
                fallback[i] = SCRIPTS.index(LANG_SCRIPT[lang])
    char_n = np.array([spec.char_n(name) for name in SCRIPTS], dtype=np.int64)
    out_h = np.empty(len(cp), dtype=np.uint64)
    out_d = np.empty(len(cp), dtype=np.int64)
    m = hash_shingles(cp, starts, word_tab, script_tab, fallback, char_n, spec.word_ngram, out_h, out_d)
    return out_h[:m], out_d[:m]


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
