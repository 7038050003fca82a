"""Cleaning's configuration (the `clean:` section): rule thresholds, language identification."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from data_engine.errors import ConfigError


@dataclass(frozen=True)
class RuleThresholds:
    """One language's cleaning thresholds (defaults: resources/clean_rules.yaml `default`)."""

    min_units: float = 50
    max_units: float = 100000
    min_mean_line_chars: float = 10
    min_line_punct_frac: float = 0.12
    max_symbol_ratio: float = 0.1
    max_digit_ratio: float = 0.3
    max_url_ratio: float = 0.2
    max_dup_line_frac: float = 0.3
    max_dup_line_char_frac: float = 0.2
    max_top_2gram_frac: float = 0.2
    max_dup_5gram_frac: float = 0.15
    drop_lorem_ipsum: bool = True
    max_curly_ratio: float = 0.01
    max_code_line_frac: float = 0.3
    max_bullet_line_frac: float = 0.9
    min_letter_frac: float = 0.0
    """Share of non-space characters that are letters or marks (any script). 0: off; set for the
    scripts written without spaces, where character soup has no other signal."""
    max_dup_phrase_frac: float = 1.0
    """Share of letters in runs (between spaces, digits, punctuation) repeating an earlier run. 1: off;
    for spaceless scripts a run is a phrase, for spaced ones a word (always repeated in prose)."""


@dataclass(frozen=True)
class LidConfig:
    enabled: bool = True
    """Run language identification (fastText lid.176, CLD2 as second opinion)."""
    cld2_below: float = 0.7
    """When lid.176's top probability is below this, CLD2 decides if it is confident (resources.md:
    0.86 → 0.93 accuracy on UDHR paragraphs)."""
    min_score: float = 0.5
    """Predictions below this are not trusted: unknown-language docs stay `und`, given labels stay."""
    on_unknown: Literal["relabel", "keep"] = "relabel"
    """A document without a language (`und`) takes the predicted one when it is trusted."""
    on_mismatch: Literal["relabel", "drop", "keep"] = "drop"
    """A given label contradicted by a confident prediction (≥ `mismatch_score`): drop the document
    (reason `lid_mismatch`), relabel it, or keep the given label."""
    mismatch_score: float = 0.9
    confusable: tuple[tuple[str, ...], ...] = (("ind", "zsm"), ("jav", "sun", "ind"), ("ceb", "war", "tgl", "ilo"))
    """Languages lid.176 cannot tell apart reliably: a prediction inside the given label's group is
    never a mismatch (lid.176 labels most Malay as Indonesian)."""
    max_chars: int = 2000
    """Characters of each document the models look at."""

    def __post_init__(self) -> None:
        from data_engine.langs import LANGS

        for name in ("cld2_below", "min_score", "mismatch_score"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"clean.lid.{name} is a probability in [0, 1], got {value}")
        if self.max_chars <= 0:
            raise ConfigError(f"clean.lid.max_chars must be positive, got {self.max_chars}")
        unknown = sorted({code for group in self.confusable for code in group} - set(LANGS))
        if unknown:
            raise ConfigError(f"clean.lid.confusable: {unknown} are not among the {len(LANGS)} languages "
                              f"({', '.join(LANGS)})")


@dataclass(frozen=True)
class CleanConfig:
    input_table: str = "docs_raw"
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Overrides of resources/clean_rules.yaml, same shape: a `default` section and/or per-language
    sections. Precedence: built-in default < your default < built-in language < your language."""
    lid: LidConfig = field(default_factory=LidConfig)

    def __post_init__(self) -> None:
        from data_engine.langs import normalize_lang

        known = {f.name for f in dataclasses.fields(RuleThresholds)}
        problems = []
        for section, values in self.rules.items():
            if section != "default" and normalize_lang(section) != section:
                problems.append(f"clean.rules.{section}: not a language code as tables store it "
                                f"(ISO 639-3, e.g. tha, vie, zsm; or 'default')")
            if not isinstance(values, Mapping):
                problems.append(f"clean.rules.{section}: expected a mapping of thresholds")
                continue
            for key, value in values.items():
                if key not in known:
                    problems.append(f"clean.rules.{section}.{key}: unknown threshold "
                                    f"(known: {', '.join(sorted(known))})")
                elif key == "drop_lorem_ipsum" and not isinstance(value, bool):
                    problems.append(f"clean.rules.{section}.{key}: expected true or false, got {value!r}")
                elif key != "drop_lorem_ipsum" and (isinstance(value, bool) or not isinstance(value, int | float)):
                    problems.append(f"clean.rules.{section}.{key}: expected a number, got {value!r}")
        if problems:
            raise ConfigError("; ".join(problems))

    def thresholds(self, lang: str) -> RuleThresholds:
        from importlib import resources

        import yaml

        builtin = yaml.safe_load(resources.files("data_engine").joinpath("resources", "clean_rules.yaml")
                                 .read_text(encoding="utf-8"))
        merged: dict[str, Any] = {}
        for layer in (builtin.get("default"), self.rules.get("default"), builtin.get(lang), self.rules.get(lang)):
            merged.update(layer or {})
        return RuleThresholds(**merged)
