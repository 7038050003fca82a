"""The contamination audit's configuration (a `contamination:` section, or a file holding only it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from data_engine.errors import ConfigError
from data_engine.langs import SPACELESS
from data_engine.tables import DOCS_CURATED

#: Characters per n-gram for the scripts written without spaces: 13 English words' worth of text.
#: Measured on the 1,004 parallel FLORES-200 sentences of SIB-200 (train+dev+test, joined by
#: index_id; `/work/shared/data/sib200/<lang>/*.tsv`), after this audit's normalisation: the
#: language's characters (spaces removed) per English word —
#: tha 120,868 / 21,962 = 5.50, lao 121,168 / 21,962 = 5.52, khm 137,651 / 21,962 = 6.27,
#: mya 148,492 / 21,962 = 6.76, zho 38,640 / 21,962 = 1.76 — times 13, rounded.
#: Combining marks count as characters (they are kept), which is why Thai is above the ~4.6
#: letters of an English word. So an n-gram spans as much of a sentence in every script: an
#: English SIB-200 sentence (21.9 words) is 1.68 13-grams long, a Thai one (120.4 characters)
#: 1.67 of its 72-character n-grams.
CHAR_NGRAM: dict[str, int] = {"tha": 72, "lao": 72, "khm": 81, "mya": 88, "zho": 23}


@dataclass(frozen=True)
class ContaminationConfig:
    table: str = DOCS_CURATED
    """Training table audited (any documents table with doc_id, lang, text)."""
    word_ngram: int = 13
    """Words per n-gram for space-separated scripts (GPT-3's 13-gram collisions, as in lm-eval)."""
    char_ngram: dict[str, int] = field(default_factory=dict)
    """Characters per n-gram for tha/lao/khm/mya/zho, overriding the measured `CHAR_NGRAM`."""
    share_threshold: float = 0.7
    """The second verdict: an item is contaminated when this share of its n-grams occurs in the
    table (PaLM's 70%); the first verdict is any n-gram at all (GPT-3)."""
    drop_rule: Literal["any", "share"] = "any"
    """Which verdict `--decontaminate` acts on: "any" drops every document with a hit; "share"
    drops the documents with a hit of an item contaminated by the share verdict."""
    batch_chars: int = 1_000_000
    """Characters hashed per numpy batch on the executors (bounds a Python worker's memory)."""

    def __post_init__(self) -> None:
        if not isinstance(self.table, str) or not self.table.strip() or "/" in self.table \
                or self.table.startswith((".", "_")):
            raise ConfigError(f"contamination.table must be a table name such as 'docs_curated', got {self.table!r}")
        for name in ("word_ngram", "batch_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"contamination.{name} must be a positive integer, got {value!r}")
        for lang, n in self.char_ngram.items():
            if lang not in SPACELESS:
                raise ConfigError(f"contamination.char_ngram.{lang}: character n-grams are for "
                                  f"{', '.join(sorted(SPACELESS))} only")
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ConfigError(f"contamination.char_ngram.{lang} must be a positive integer, got {n!r}")
        t = self.share_threshold
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t <= 1:
            raise ConfigError(f"contamination.share_threshold must be in (0, 1], got {t!r}")
        if self.drop_rule not in ("any", "share"):
            raise ConfigError(f"contamination.drop_rule must be 'any' or 'share', got {self.drop_rule!r}")

    def char_n(self, lang: str) -> int:
        return self.char_ngram.get(lang, CHAR_NGRAM[lang])

    def unit(self, lang: str) -> str:
        return "char" if lang in SPACELESS else "word"

    def n(self, lang: str) -> int:
        """Units per n-gram for text of `lang`."""
        return self.char_n(lang) if lang in SPACELESS else self.word_ngram
