"""Corpus-level perplexity metrics, as lm-evaluation-harness aggregates them.

lm-eval's `weighted_mean` sums log-likelihoods and unit counts over the whole corpus before
dividing (`bits_per_byte = -ΣLL / (Σbytes · ln 2)`), so a long document weighs more than a short
one; a mean of per-document ratios would be a different number. Units are counted on the exact
string that was scored: UTF-8 bytes, tokens of the model's tokenizer, and words as
`len(re.split(r"\\s+", doc))` (lm-eval's `count_words`, quirks included: "" is one word). Words
mean nothing for Thai, Lao, Khmer, Burmese and Chinese, so word perplexity is not reported there.

Bits per byte compares models and tokenizers *within* a language. Across languages the same
content takes very different numbers of bytes (Burmese ~3.5× English), so on parallel text
compare `bits_per_doc` — bits per sentence when each document is one sentence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from data_engine.langs import SPACELESS, normalize_lang


@dataclass(frozen=True)
class CorpusTotals:
    """Sums over a corpus; add two to pool them (word counts survive only if both have them)."""

    loglikelihood: float
    bytes: int
    tokens: int
    words: int | None
    docs: int

    def __add__(self, other: CorpusTotals) -> CorpusTotals:
        words = None if self.words is None or other.words is None else self.words + other.words
        return CorpusTotals(self.loglikelihood + other.loglikelihood, self.bytes + other.bytes,
                            self.tokens + other.tokens, words, self.docs + other.docs)


def count_words(text: str) -> int:
    """lm-eval's word count."""
    return len(re.split(r"\s+", text))


def corpus_totals(lls: Sequence[float], texts: Sequence[str], token_counts: Sequence[int], *,
                  lang: str) -> CorpusTotals:
    """Totals for documents `texts` scored as `lls` (loglikelihood_rolling) over `token_counts` tokens."""
    if not len(lls) == len(texts) == len(token_counts):
        raise ValueError(f"corpus_totals needs one log-likelihood and one token count per document, got "
                         f"{len(lls)} log-likelihoods, {len(texts)} texts, {len(token_counts)} token counts")
    spaceless = normalize_lang(lang) in SPACELESS
    return CorpusTotals(loglikelihood=float(sum(lls)),
                        bytes=sum(len(t.encode("utf-8")) for t in texts),
                        tokens=int(sum(token_counts)),
                        words=None if spaceless else sum(count_words(t) for t in texts),
                        docs=len(texts))


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def corpus_metrics(t: CorpusTotals) -> dict[str, float]:
    """bits_per_byte, byte_perplexity, token_perplexity, bits_per_doc (+ word_perplexity)."""
    if t.bytes <= 0 or t.tokens <= 0 or t.docs <= 0:
        raise ValueError(f"corpus metrics need at least one non-empty document, got {t.docs} documents, "
                         f"{t.bytes} bytes, {t.tokens} tokens")
    nll = -t.loglikelihood
    metrics = {
        "bits_per_byte": nll / (t.bytes * math.log(2)),
        "byte_perplexity": _exp(nll / t.bytes),
        "token_perplexity": _exp(nll / t.tokens),
        "bits_per_doc": nll / math.log(2) / t.docs,
    }
    if t.words is not None:
        if t.words <= 0:
            raise ValueError(f"word perplexity needs a positive word count, got {t.words}")
        metrics["word_perplexity"] = _exp(nll / t.words)
    return metrics
