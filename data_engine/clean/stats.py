"""Per-document measurements the cleaning rules compare with their thresholds.

Units are script-aware: words for space-separated text, characters for text written without
spaces (Thai, Lao, Khmer, Burmese, Chinese; script-detected). Repetition statistics follow Gopher
(Rae et al. 2021): n-grams are of words, or for spaceless text of characters, n scaled by the
script's characters per word (about 3 for Thai and Lao, 4 for Khmer, 5 for Burmese with its
stacked marks, 2 for Chinese) so that the
thresholds, set for words, keep their meaning.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

STAT_NAMES = ("units", "mean_line_chars", "line_punct_frac", "symbol_ratio", "digit_ratio", "url_ratio",
              "dup_line_frac", "dup_line_char_frac", "top_2gram_frac", "dup_5gram_frac", "lorem_ipsum",
              "curly_ratio", "code_line_frac", "bullet_line_frac")

_TERMINAL = tuple(".!?。！？…\"'”’»)]」』។៕။၊" + "।")  # ends of sentences in our scripts (and closing quotes)
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•·●▪►–—◦‣○■□✓✔]|\d{1,3}[.)])\s")
_CODE = re.compile(r"(?:[;{}]\s*$|^\s*(?:function\b|var |let |const |import |#include|def |class |return\b"
                   r"|<\w+[^>]*>|</\w+>))")
_LOREM = re.compile(r"lorem ipsum", re.IGNORECASE)
_WORD = re.compile(r"\w+", re.UNICODE)


def _units(text: str, spaceless: bool) -> list[str]:
    if spaceless:
        return [c for c in text if not c.isspace()]
    return text.split()


def _ngram_stats(tokens: list[str], n_top: int, n_dup: int) -> tuple[float, float]:
    """(share of characters in the most frequent n_top-gram, share in duplicated n_dup-grams)."""
    total = sum(len(t) for t in tokens)
    if total == 0:
        return 0.0, 0.0
    top = 0.0
    if len(tokens) >= n_top:
        grams = Counter(tuple(tokens[i:i + n_top]) for i in range(len(tokens) - n_top + 1))
        gram, count = grams.most_common(1)[0]
        if count > 1:
            top = count * sum(len(t) for t in gram) / total
    dup = 0.0
    if len(tokens) >= n_dup:
        grams = [tuple(tokens[i:i + n_dup]) for i in range(len(tokens) - n_dup + 1)]
        counts = Counter(grams)
        covered = [False] * len(tokens)
        for i, g in enumerate(grams):
            if counts[g] > 1:
                for j in range(i, i + n_dup):
                    covered[j] = True
        dup = sum(len(t) for t, c in zip(tokens, covered, strict=True) if c) / total
    return top, dup


#: Characters per word by dominant spaceless script (shingles.SCRIPTS index): scales n-grams.
_CHARS_PER_WORD = {1: 3, 2: 3, 3: 4, 4: 5, 5: 2}  # thai, lao, khmer, myanmar, han


def document_stats(text: str, spaceless: bool, chars_per_word: int = 3) -> dict[str, float]:
    lines = [ln for ln in text.split("\n") if ln.strip()]
    chars = sum(len(ln) for ln in lines) or 1
    units = _units(text, spaceless)
    n_units = len(units) or 1
    line_counts = Counter(lines)
    dup_lines = [ln for ln in lines if line_counts[ln] > 1]
    non_space = sum(1 for c in text if not c.isspace()) or 1
    words = _WORD.findall(text.lower())
    top_n, dup_n = (2 * chars_per_word, 5 * chars_per_word) if spaceless else (2, 5)
    tokens = units if spaceless else words
    top2, dup5 = _ngram_stats(tokens, top_n, dup_n)
    return {
        "units": float(len(units)),
        "mean_line_chars": chars / max(len(lines), 1),
        "line_punct_frac": sum(ln.rstrip().endswith(_TERMINAL) for ln in lines) / max(len(lines), 1),
        "symbol_ratio": (text.count("#") + text.count("…") + text.count("...")) / n_units,
        "digit_ratio": sum(c.isdigit() for c in text) / non_space,
        "url_ratio": sum(len(m) for m in _URL.findall(text)) / chars,
        "dup_line_frac": len(dup_lines) / max(len(lines), 1),
        "dup_line_char_frac": sum(len(ln) for ln in dup_lines) / chars,
        "top_2gram_frac": top2,
        "dup_5gram_frac": dup5,
        "lorem_ipsum": 1.0 if _LOREM.search(text) else 0.0,
        "curly_ratio": (text.count("{") + text.count("}")) / non_space,
        "code_line_frac": sum(bool(_CODE.search(ln)) for ln in lines) / max(len(lines), 1),
        "bullet_line_frac": sum(bool(_BULLET.match(ln)) for ln in lines) / max(len(lines), 1),
    }


def batch_stats(texts: Sequence[str]) -> list[dict[str, Any]]:
    from data_engine.dedup.shingles import dominant_spaceless_script

    scripts = dominant_spaceless_script(texts)
    return [document_stats(t, bool(s), _CHARS_PER_WORD.get(int(s), 3)) for t, s in zip(texts, scripts, strict=True)]
