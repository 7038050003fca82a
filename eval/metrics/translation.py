"""Corpus chrF++ and BLEU with sacrebleu, settings that work offline for every script.

chrF++ (`CHRF(word_order=2)`: character 1–6-grams plus word 1–2-grams, β = 2) is the MT metric
SailCompass reports and SEA-HELM offers beside MetricX; it needs no tokenizer, so it means the
same for Thai as for English. BLEU's default 13a tokenizer splits on spaces and punctuation,
which leaves a Thai, Lao, Khmer or Burmese sentence as one or two "words" and the score
meaningless; those get character BLEU, Chinese gets sacrebleu's own `zh` tokenizer. The
flores101/flores200 spBLEU tokenizers would download a SentencePiece model, so they are not used.
"""

from __future__ import annotations

from collections.abc import Sequence

from data_engine.langs import normalize_lang

_CHAR_BLEU = frozenset({"tha", "lao", "khm", "mya"})


def _check(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if isinstance(hyps, str) or isinstance(refs, str):
        raise ValueError("hyps and refs must be sequences of strings, one per segment, not a single string")
    if len(hyps) != len(refs) or not hyps:
        raise ValueError(f"need one reference per hypothesis and at least one segment, got {len(hyps)} "
                         f"hypotheses and {len(refs)} references")


def chrf_pp(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus chrF++ (0–100): n-gram statistics summed over all segments, then one F-score."""
    from sacrebleu.metrics import CHRF

    _check(hyps, refs)
    return float(CHRF(word_order=2).corpus_score(list(hyps), [list(refs)]).score)


def bleu_tokenizer(lang: str) -> str:
    """The sacrebleu tokenizer BLEU uses for `lang`."""
    code = normalize_lang(lang)
    return "char" if code in _CHAR_BLEU else "zh" if code == "zho" else "13a"


def bleu(hyps: Sequence[str], refs: Sequence[str], *, lang: str) -> float:
    """Corpus BLEU (0–100) with the tokenizer `bleu_tokenizer(lang)` names."""
    from sacrebleu.metrics import BLEU

    _check(hyps, refs)
    return float(BLEU(tokenize=bleu_tokenizer(lang)).corpus_score(list(hyps), [list(refs)]).score)
