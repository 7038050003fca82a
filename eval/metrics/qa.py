"""SQuAD-style exact match and token F1, with script-aware tokens.

The normalisation is SQuAD's (lower-case, drop punctuation, drop English articles, collapse
whitespace), widened so it works beyond ASCII: every Unicode punctuation character (category P*)
goes as well as `string.punctuation`, text is NFC-normalised first (a Vietnamese answer typed
with combining marks must still match), and articles are removed only for English ("a" is not
an article elsewhere). Tokens for F1 come from `eval.segment.words`, so a Thai or Chinese answer
is scored by words or characters rather than as one blob. For the scripts written without
spaces, exact match ignores whitespace: a space there separates phrases, not words, and
"ภาษา ไทย" is the same answer as "ภาษาไทย".
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence

from data_engine.langs import SPACELESS, normalize_lang
from eval.segment import words

_ASCII_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str, lang: str = "eng") -> str:
    """SQuAD's normalize_answer, Unicode-aware (see the module docstring)."""
    text = unicodedata.normalize("NFC", text).lower()
    text = "".join(ch for ch in text if ch not in _ASCII_PUNCT and not unicodedata.category(ch).startswith("P"))
    if normalize_lang(lang) == "eng":
        text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _check(prediction: str, golds: Sequence[str]) -> None:
    if not isinstance(prediction, str):
        raise ValueError(f"the prediction must be a string, got {type(prediction).__name__}")
    if isinstance(golds, str) or not golds:
        raise ValueError("golds must be a non-empty sequence of answer strings (wrap a single answer in a list)")


def exact_match(prediction: str, golds: Sequence[str], lang: str) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0."""
    _check(prediction, golds)
    spaceless = normalize_lang(lang) in SPACELESS

    def key(text: str) -> str:
        norm = normalize_answer(text, lang)
        return norm.replace(" ", "") if spaceless else norm

    pred = key(prediction)
    return float(any(pred == key(g) for g in golds))


def _f1(pred: list[str], gold: list[str]) -> float:
    if not pred or not gold:  # SQuAD v2: two empty answers agree, one empty answer scores 0
        return float(pred == gold)
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def f1(prediction: str, golds: Sequence[str], lang: str) -> float:
    """SQuAD bag-of-tokens F1 against the best-matching gold answer."""
    _check(prediction, golds)
    pred = words(normalize_answer(prediction, lang), lang)
    return max(_f1(pred, words(normalize_answer(g, lang), lang)) for g in golds)
