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


def read_yaml(path: str | Path, what: str = "config") -> Any:
    """A YAML file's content. An unreadable file or invalid YAML is a ConfigError naming `what`
    (config, data config, plan …) and the path: every YAML the jobs are given is read here."""
    import yaml

    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from exc


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    data = read_yaml(path, "config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


#: The sections of a pipeline YAML (the dataclass fields of `trainer.pipeline.PipelineConfig`).
PIPELINE_SECTIONS = ("ingest", "clean", "dedup", "quality", "score", "export", "tokens", "mixture", "base_model",
                     "eval")


def section(path: str | Path | None, name: str, cls: type[T]) -> T:
    """Section `name` of a pipeline YAML, or the whole file when it is that section alone.

    A file with other pipeline sections but not this one is an error: taking the whole file as
    this job's section would silently run on defaults (or fail on the other sections' keys).
    """
    if path is None:
        return cls()
    data = load_yaml(path)
    if name in data:
        if not isinstance(data[name], Mapping):
            raise ConfigError(f"{path}: section '{name}' must be a mapping of settings, got {data[name]!r}")
        return from_dict(cls, data[name], name, source=str(path))
    others = sorted(k for k in data if k in PIPELINE_SECTIONS)
    if others:
        raise ConfigError(f"{path} has the pipeline section(s) {', '.join(others)} but no '{name}:' section, "
                          f"which this job reads; add a '{name}:' section (or give a file holding only the "
                          f"{name} settings)")
    return from_dict(cls, data, name, source=str(path))


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)
