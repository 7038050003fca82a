"""Dedup's configuration (the `dedup:` section): one frozen dataclass per stage, and the run's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from data_engine.errors import ConfigError


@dataclass(frozen=True)
class UrlDedupConfig:
    extra_tracking_params: tuple[str, ...] = ()
    """Query parameters to ignore besides the built-in list (utm_*, fbclid, gclid, …)."""


@dataclass(frozen=True)
class ExactDedupConfig:
    lowercase: bool = False
    """Also fold case before hashing (off: case often carries meaning, e.g. acronyms)."""


@dataclass(frozen=True)
class NearDedupConfig:
    threshold: float = 0.8
    """Jaccard similarity (of shingle sets) at which two documents are near duplicates."""
    bands: int = 20
    """LSH bands. 20 × 6: P(candidate) 0.27 / 0.92 / 0.998 at Jaccard 0.5 / 0.7 / 0.8 — recall
    first, since verification removes the false candidates (FineWeb's 14 × 8 gives 0.92 at 0.8)."""
    rows: int = 6
    """Rows (MinHash values) per band; permutations = bands × rows."""
    seed: int = 1
    """Seed of the MinHash permutations: same seed, same signatures, same result."""
    sketch: Literal["oph", "minhash"] = "oph"
    """Signature scheme (`minhash.py`): one permutation hashing with densification — one hash per
    shingle instead of bands × rows, as accurate — or classic independent permutations."""
    word_ngram: int = 5
    """Words per shingle for space-separated scripts (FineWeb, Sailor2: 5)."""
    char_ngram: int = 5
    """Characters per shingle for Thai, Lao, Khmer, Burmese and Chinese text."""
    char_ngram_by_script: dict[str, int] = field(default_factory=dict)
    """Per-script overrides of `char_ngram`: keys thai, lao, khmer, myanmar, han."""
    verify: Literal["exact", "signature"] = "exact"
    """Candidate check: exact Jaccard of the shingle sets, or the signatures' estimate (faster)."""
    max_bucket_size: int = 100
    """Larger LSH buckets are split by the keys of further bands instead of forming all pairs."""
    driver_graph_edges: int = 2_000_000
    """Verified graphs up to this many edges are clustered on the driver (about 100 bytes an
    edge there); larger ones in Spark, a few jobs per round. Same clusters either way."""

    def __post_init__(self) -> None:
        from data_engine.dedup.shingles import SCRIPTS

        problems = []
        if not 0 < self.threshold <= 1:
            problems.append(f"near.threshold must be in (0, 1], got {self.threshold}")
        for name in ("bands", "rows", "word_ngram", "char_ngram", "max_bucket_size"):
            if getattr(self, name) < 1:
                problems.append(f"near.{name} must be at least 1, got {getattr(self, name)}")
        if self.driver_graph_edges < 0:
            problems.append(f"near.driver_graph_edges must be 0 or more, got {self.driver_graph_edges}")
        if self.sketch not in ("oph", "minhash"):
            problems.append(f"near.sketch must be 'oph' or 'minhash', got {self.sketch!r}")
        unknown = sorted(set(self.char_ngram_by_script) - set(SCRIPTS[1:]))
        if unknown:
            problems.append(f"near.char_ngram_by_script: unknown script(s) {unknown}; known: {list(SCRIPTS[1:])}")
        if problems:
            raise ConfigError("; ".join(problems))


@dataclass(frozen=True)
class LineDedupConfig:
    max_docs: int = 5
    """A line found in more than this many documents of a bucket is removed (Sailor2: 5)."""
    bucket_docs: int = 10_000_000
    """Documents per bucket; lines are counted within a bucket (Sailor2: 10M)."""
    min_units: int = 10
    """Documents left shorter than this are dropped; units are words, or characters for text
    written without spaces (Thai, Lao, Khmer, Burmese, Chinese)."""
    top_lines: int = 20
    """Most frequent removed lines kept per language in `line_drops`, for inspection."""

    def __post_init__(self) -> None:
        for name in ("max_docs", "bucket_docs", "top_lines"):
            if getattr(self, name) < 1:
                raise ConfigError(f"lines.{name} must be at least 1, got {getattr(self, name)}")
        if self.min_units < 0:
            raise ConfigError(f"lines.min_units must be 0 or more, got {self.min_units}")


@dataclass(frozen=True)
class DedupConfig:
    input_table: str | None = None
    """The table dedup reads (a pinned version); default: docs_clean, else docs_raw."""
    stages: tuple[str, ...] = ("url", "exact", "near", "lines")
    """Stages in the order they run; each removes duplicates among what the previous kept."""
    url: UrlDedupConfig = field(default_factory=UrlDedupConfig)
    exact: ExactDedupConfig = field(default_factory=ExactDedupConfig)
    near: NearDedupConfig = field(default_factory=NearDedupConfig)
    lines: LineDedupConfig = field(default_factory=LineDedupConfig)

    def __post_init__(self) -> None:
        from data_engine.dedup.registry import STAGES

        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ConfigError(f"dedup.stages: unknown stage(s) {unknown}; available: {sorted(STAGES)}")
        if len(set(self.stages)) != len(self.stages):
            raise ConfigError(f"dedup.stages lists a stage twice: {list(self.stages)}")
