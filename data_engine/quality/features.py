"""How a document is shown to fastText: one line of tokens.

fastText splits on whitespace, so text written without spaces (Thai, Lao, Khmer, Burmese,
Chinese) would become a handful of giant "words"; such text is given one user-perceived character
(grapheme cluster: a Thai consonant with its vowel and tone marks, a Khmer or Burmese stack) per
token instead, and fastText's word n-grams (`word_ngrams`, default 2) add the character bigrams —
the usual units for classifying unsegmented scripts; the unigrams still generalise when a
language's training set is small. Text is NFC, lower-cased and cut to its first `max_chars`
characters.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import regex

_GRAPHEME = regex.compile(r"\X")

LABEL_HIGH = "__label__hq"
LABEL_LOW = "__label__lq"


def fasttext_lines(texts: Sequence[str], max_chars: int = 4000) -> list[str]:
    from data_engine.dedup.shingles import dominant_spaceless_script  # the dedup's script rule

    heads = [unicodedata.normalize("NFC", t[:max_chars]).lower() for t in texts]
    spaceless = dominant_spaceless_script(heads) > 0
    out = []
    for text, unspaced in zip(heads, spaceless, strict=True):
        if unspaced:
            out.append(" ".join(_GRAPHEME.findall("".join(text.split()))))
        else:
            out.append(" ".join(text.split()))
    return out
