"""Quality's configuration: classifier training (`quality:`) and scoring/selection (`score:`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from data_engine.errors import ConfigError


@dataclass(frozen=True)
class QualityTrainConfig:
    negatives_table: str | None = None
    """Negatives are sampled from this table's documents of the language (Sailor2: the raw web);
    default: docs_clean, else docs_raw."""
    max_positives: int = 10000
    """Sailor2 used about 10K positives per language."""
    max_negatives: int = 10000
    """… and about as many negatives."""
    holdout: float = 0.2
    """Share of each class held out to measure precision, recall and AUC."""
    seed: int = 13
    """Seeds the negative sample, the split and fastText: same inputs, same model."""
    epoch: int = 10
    lr: float = 0.5
    dim: int = 32
    word_ngrams: int = 2
    bucket: int = 100000
    """Hash buckets for n-gram features: the model file is about 4 × dim × (vocabulary + bucket) bytes."""
    max_chars: int = 4000
    """Characters of each document the classifier sees."""
    registry_prefix: str = "sailyard-quality"
    """Models are registered in MLflow as `<prefix>-<lang>`."""
    min_examples: int = 10
    """Fewest positives and negatives a classifier is trained on; the pipeline skips a language with
    fewer clean documents (its documents are then kept or dropped as `score.without_model` says)."""

    def __post_init__(self) -> None:
        if not 0 < self.holdout <= 0.5:
            raise ConfigError(f"quality.holdout must be in (0, 0.5], got {self.holdout}")
        for name in ("max_positives", "max_negatives", "epoch", "dim", "word_ngrams", "bucket", "max_chars",
                     "min_examples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"quality.{name} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class QualityScoreConfig:
    input_table: str | None = None
    """The table scored (a pinned version); default: docs_dedup, else docs_clean."""
    keep_percent: float = 20.0
    """Top share of each language's documents kept (Sailor2: 10–20%)."""
    keep_percent_by_lang: dict[str, float] = field(default_factory=dict)
    """Per-language overrides of `keep_percent`."""
    without_model: Literal["keep", "drop"] = "keep"
    """Documents of a language with no registered classifier: kept unscored, or dropped."""
    registry_prefix: str = "sailyard-quality"
    models: dict[str, int] = field(default_factory=dict)
    """Registered model version per language, e.g. `{tha: 3}`; unnamed languages use their latest
    version. A pinned version that is not in the registry is an error, never a fallback."""

    def __post_init__(self) -> None:
        from data_engine.langs import LANGS, normalize_lang

        for lang, version in self.models.items():
            if lang not in LANGS:
                raise ConfigError(f"score.models: {lang!r} is not one of the {len(LANGS)} languages "
                                  f"({', '.join(LANGS)})")
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                raise ConfigError(f"score.models.{lang}: a registered model version is an integer ≥ 1, "
                                  f"got {version!r}")
        for lang, p in {"*": self.keep_percent, **self.keep_percent_by_lang}.items():
            if lang != "*" and normalize_lang(lang) != lang:
                raise ConfigError(f"score.keep_percent_by_lang: {lang!r} is not a language code as tables store it "
                                  f"(ISO 639-3, e.g. tha, vie, zsm)")
            if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p <= 100:
                raise ConfigError(f"quality keep percent for {lang} must be in (0, 100], got {p!r}")

    def percent(self, lang: str) -> float:
        return self.keep_percent_by_lang.get(lang, self.keep_percent)
