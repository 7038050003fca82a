"""Typed configuration of the data engine, loaded from YAML with defaults that run.

Each stage owns a frozen dataclass (`IngestConfig`, `DedupConfig`, `ExportConfig`, …); a
pipeline YAML holds one section per stage, named like the dataclass fields of `PipelineConfig`.
The loader is strict: an unknown key is an error that names it, so a typo never silently falls
back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from data_engine.errors import ConfigError

T = TypeVar("T")


def from_dict(cls: type[T], data: Any, where: str = "", *, source: str = "config") -> T:
    """Build dataclass `cls` from parsed YAML, recursing into nested dataclasses.

    Strict: unknown keys and wrong types are errors. Every problem is gathered and reported in
    one ConfigError (one per line, each naming its full key), so a user fixes a file in one go.
    """
    problems: list[str] = []
    built = build(cls, data, where.rstrip("."), problems)
    if problems:
        raise ConfigError(report(source, problems))
    return built  # type: ignore[no-any-return]


def report(source: str, problems: list[str]) -> str:
    return f"{source}: {len(problems)} problem(s):\n  " + "\n  ".join(problems)


_INVALID = object()


def build(cls: type, doc: Any, where: str, problems: list[str]) -> Any:
    """Instantiate dataclass `cls` from a mapping, recording unknown keys and type errors."""
    label = where or "top level"
    if not isinstance(doc, Mapping):
        problems.append(f"{label}: expected a mapping of keys, got {type(doc).__name__}")
        return None
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    for key in doc:
        if key not in known:
            problems.append(f"{_join(where, key)}: unknown key (known: {', '.join(sorted(known))})")
    kwargs = {}
    for key in known & set(doc):
        value = _coerce(doc[key], hints[key], _join(where, key), problems)
        if value is not _INVALID:
            kwargs[key] = value
    if len(kwargs) < len(known & set(doc)):
        return None
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # a __post_init__ check
        problems.append(str(exc))
    except (TypeError, ValueError) as exc:
        problems.append(f"{label}: {exc}")
    return None


def _coerce(value: Any, hint: Any, where: str, problems: list[str]) -> Any:
    """`value` as type `hint`, or `_INVALID` after recording why not."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, where, problems)
    if dataclasses.is_dataclass(hint):
        built = build(hint, value, where, problems)  # type: ignore[arg-type]
        return _INVALID if built is None else built
    if origin is Literal:
        if value in args:
            return value
        problems.append(f"{where}: expected one of {', '.join(map(repr, args))}, got {value!r}")
        return _INVALID
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            problems.append(f"{where}: expected a mapping, got {type(value).__name__}")
            return _INVALID
        key_type, value_type = args or (Any, Any)
        out = {}
        for k, v in value.items():
            k2 = _coerce(k, key_type, f"{where}.{k}", problems)
            v2 = _coerce(v, value_type, f"{where}.{k}", problems)
            if k2 is _INVALID or v2 is _INVALID:
                return _INVALID
            out[k2] = v2
        return out
    if origin in (tuple, list):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            problems.append(f"{where}: expected a list, got {value!r}")
            return _INVALID
        items = [_coerce(v, args[0] if args else Any, f"{where}[{i}]", problems) for i, v in enumerate(value)]
        if any(item is _INVALID for item in items):
            return _INVALID
        return tuple(items) if origin is tuple else items
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads `1e-4`, without a dot, as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is Path:
        if isinstance(value, str) and value:
            return Path(value)
    else:  # pragma: no cover - a field type this loader was not taught
        raise TypeError(f"config field {where} has unsupported type {hint!r}")
    name = "path" if hint is Path else hint.__name__
    problems.append(f"{where}: expected {name}, got {value!r}")
    return _INVALID


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def section(path: str | Path | None, name: str, cls: type[T]) -> T:
    """Section `name` of a pipeline YAML (or the whole file when it has no such key) as `cls`."""
    if path is None:
        return cls()
    data = load_yaml(path)
    if name in data and isinstance(data[name], Mapping):
        data = data[name]
    return from_dict(cls, data, name, source=str(path))


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


# --------------------------------------------------------------------------- stage configs


@dataclass(frozen=True)
class IngestConfig:
    split_bytes: int = 128 * 1024 * 1024
    """Uncompressed JSONL files larger than this are read by several tasks."""
    max_record_bytes: int = 16 * 1024 * 1024
    """A record above this size is quarantined as `record_too_large` (and never fully loaded)."""
    max_payload_bytes: int = 64 * 1024
    """How much of a bad record the quarantine row keeps."""

    def __post_init__(self) -> None:
        for name in ("split_bytes", "max_record_bytes", "max_payload_bytes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"ingest.{name} must be positive, got {getattr(self, name)}")


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
    word_ngram: int = 5
    """Words per shingle for space-separated scripts (FineWeb, Sailor2: 5)."""
    char_ngram: int = 5
    """Characters per shingle for Thai, Lao, Khmer, Burmese and Chinese text."""
    char_ngram_by_script: dict[str, int] = field(default_factory=dict)
    """Per-script overrides of `char_ngram`: keys thai, lao, khmer, myanmar, han."""
    verify: Literal["exact", "signature"] = "exact"
    """Candidate check: exact Jaccard of the shingle sets, or the signatures' estimate (faster)."""
    max_bucket_size: int = 100
    """Larger LSH buckets link members to their smallest doc_id instead of forming all pairs."""

    def __post_init__(self) -> None:
        from data_engine.dedup.shingles import SCRIPTS

        problems = []
        if not 0 < self.threshold <= 1:
            problems.append(f"near.threshold must be in (0, 1], got {self.threshold}")
        for name in ("bands", "rows", "word_ngram", "char_ngram", "max_bucket_size"):
            if getattr(self, name) < 1:
                problems.append(f"near.{name} must be at least 1, got {getattr(self, name)}")
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


@dataclass(frozen=True)
class ExportConfig:
    input_table: str | None = None
    """Table to export; default: the most curated one present (docs_curated, else docs_dedup)."""
    tokenizer: str = "qwen2.5"
    """'qwen2.5' (bundled, offline), a directory with tokenizer.json, or a Hugging Face name."""
    eod_id: int | None = None
    """End-of-document token appended to every document; default: the tokenizer's <|endoftext|>."""
    langs: tuple[str, ...] = ()
    """Languages to export, as ingest reads tags (`th`, `th_TH` and `tha` are all Thai); each must
    have documents in the table. Default: every language in it except `und`. With a selection, only
    those languages' shards of the stage are replaced; without, the whole stage."""
    batch_docs: int = 256
    """Documents per tokenizer batch on the executors."""
    min_tokens: int = 1
    """Documents with fewer tokens (before EOD) are left out and counted as dropped."""

    def __post_init__(self) -> None:
        if isinstance(self.langs, str):  # `langs: tha` in YAML would otherwise select t, h, a
            raise ConfigError(f"export.langs must be a list of language codes, got {self.langs!r}")
        empty = [x for x in self.langs if not isinstance(x, str) or not x.strip()]
        if empty:
            raise ConfigError(f"export.langs: empty or non-text language code in {list(self.langs)!r}")
        if self.batch_docs < 1:
            raise ConfigError(f"export.batch_docs must be at least 1, got {self.batch_docs}")
        if self.min_tokens < 0:
            raise ConfigError(f"export.min_tokens must be 0 or more, got {self.min_tokens}")


@dataclass(frozen=True)
class PipelineConfig:
    """The whole demo pipeline; each field is the section of the same name in the YAML."""

    work_dir: str = "work"
    sample_docs_per_lang: int = 40
    ingest: IngestConfig = field(default_factory=IngestConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    quality: QualityTrainConfig = field(default_factory=QualityTrainConfig)
    score: QualityScoreConfig = field(default_factory=QualityScoreConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    stage: str = "stage1"
    train_config: str | None = None
    """Trainer YAML for the NeMo run (None: the trainer's built-in tiny defaults)."""

    @staticmethod
    def from_yaml(path: str | Path | None) -> PipelineConfig:
        return PipelineConfig() if path is None else from_dict(PipelineConfig, load_yaml(path),
                                                               source=str(path))
