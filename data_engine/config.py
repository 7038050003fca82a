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
from typing import Any, TypeVar

from data_engine.errors import ConfigError

T = TypeVar("T")


def from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str = "") -> T:
    """Build dataclass `cls` from a mapping, recursing into nested dataclasses; strict on keys."""
    data = dict(data or {})
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(where + k for k in unknown)} "
                          f"(allowed under {where.rstrip('.') or 'top level'}: {', '.join(sorted(names))})")
    kwargs = {name: _coerce(hints[name], value, f"{where}{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where.rstrip('.') or cls.__name__}: {exc}") from exc


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where) if len(inner) == 1 else value
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(hint, value, f"{where}.")
    if origin in (dict, Mapping, typing.Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return {k: _coerce(args[1], v, f"{where}.{k}") if args else v for k, v in value.items()}
    if origin in (tuple, list):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected int, got {value!r}")
    return value


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
    return from_dict(cls, data, f"{name}.")


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
class ExactDedupConfig:
    lowercase: bool = False
    """Also fold case before hashing (off: case often carries meaning, e.g. acronyms)."""


@dataclass(frozen=True)
class DedupConfig:
    input_table: str = "docs_raw"
    """The table dedup reads (a pinned version of it)."""
    stages: tuple[str, ...] = ("exact",)
    """Stages in the order they run; each removes duplicates among what the previous kept."""
    exact: ExactDedupConfig = field(default_factory=ExactDedupConfig)

    def __post_init__(self) -> None:
        from data_engine.dedup.registry import STAGES

        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ConfigError(f"dedup.stages: unknown stage(s) {unknown}; available: {sorted(STAGES)}")
        if len(set(self.stages)) != len(self.stages):
            raise ConfigError(f"dedup.stages lists a stage twice: {list(self.stages)}")


@dataclass(frozen=True)
class ExportConfig:
    input_table: str | None = None
    """Table to export; default: the most curated one present (docs_curated, else docs_dedup)."""
    tokenizer: str = "qwen2.5"
    """'qwen2.5' (bundled, offline), a directory with tokenizer.json, or a Hugging Face name."""
    eod_id: int | None = None
    """End-of-document token appended to every document; default: the tokenizer's <|endoftext|>."""
    langs: tuple[str, ...] = ()
    """Languages to export (default: all in the table)."""
    batch_docs: int = 256
    """Documents per tokenizer batch on the executors."""
    min_tokens: int = 1
    """Documents with fewer tokens (before EOD) are left out and counted as dropped."""


@dataclass(frozen=True)
class PipelineConfig:
    """The whole demo pipeline; each field is the section of the same name in the YAML."""

    work_dir: str = "work"
    sample_docs_per_lang: int = 40
    ingest: IngestConfig = field(default_factory=IngestConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    stage: str = "stage1"
    train_config: str | None = "configs/train_tiny.yaml"
    """Trainer YAML for the tiny NeMo run (None: skip training)."""

    @staticmethod
    def from_yaml(path: str | Path | None) -> PipelineConfig:
        return PipelineConfig() if path is None else from_dict(PipelineConfig, load_yaml(path))
