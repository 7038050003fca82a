"""What the harness scores: four kinds of item, and the two JSONL formats anyone can write.

Every task, whatever its source format, becomes a list of these before any model is called, so the
scorers see one shape per kind and the contamination audit can read the same text the model sees.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_engine.errors import ConfigError


@dataclass(frozen=True)
class ChoiceItem:
    """Multiple choice ranked by log-likelihood: the model continues `context` with each choice."""

    id: str
    lang: str
    context: str
    choices: tuple[str, ...]
    gold: int


@dataclass(frozen=True)
class TextItem:
    """A document scored as a whole (rolling log-likelihood): bits per byte and perplexities."""

    id: str
    lang: str
    text: str


@dataclass(frozen=True)
class GenerationItem:
    """A prompt answered by greedy decoding, scored against one or more references (QA, translation)."""

    id: str
    lang: str
    prompt: str
    references: tuple[str, ...]
    source: str = ""  # the text the item is about (a QA passage, a sentence to translate): what leaks


Item = ChoiceItem | TextItem | GenerationItem


def item_text(item: Item) -> str:
    """The eval text a training document must not contain (what the contamination audit checks)."""
    if isinstance(item, ChoiceItem):
        return f"{item.context} {item.choices[item.gold]}".strip()
    if isinstance(item, TextItem):
        return item.text
    return f"{item.source}\n{item.references[0]}".strip() if item.source else item.references[0]


class ItemsError(ConfigError):
    """An items file that cannot be read as the format it claims (file and line named)."""


def _records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    path = Path(path)
    if not path.is_file():
        raise ItemsError(f"items file {path} does not exist")
    any_line = False
    with path.open(encoding="utf-8") as fh:
        for no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            any_line = True
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ItemsError(f"{path}:{no}: not valid JSON ({exc.msg})") from exc
            if not isinstance(rec, dict):
                raise ItemsError(f"{path}:{no}: expected a JSON object, got {type(rec).__name__}")
            yield no, rec
    if not any_line:
        raise ItemsError(f"items file {path} holds no items")


def _field(rec: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in rec:
        raise ItemsError(f"{where}: missing field {key!r}")
    value = rec[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or isinstance(value, bool):
        names = " or ".join(k.__name__ for k in kinds)
        raise ItemsError(f"{where}: field {key!r} must be {names}, got {value!r}")
    return value


def read_choice_jsonl(path: str | Path, *, lang: str | None = None) -> list[ChoiceItem]:
    """`{"id", "lang", "context", "choices": [...], "gold": k}` per line; the context is used as given."""
    items = []
    for no, rec in _records(path):
        where = f"{path}:{no}"
        choices = _field(rec, "choices", list, where)
        if len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise ItemsError(f"{where}: 'choices' must be at least two non-empty strings")
        gold = _field(rec, "gold", int, where)
        if not 0 <= gold < len(choices):
            raise ItemsError(f"{where}: 'gold' {gold} is not an index into its {len(choices)} choices")
        items.append(ChoiceItem(str(_field(rec, "id", (str, int), where)), rec.get("lang") or lang or "und",
                                _field(rec, "context", str, where), tuple(choices), gold))
    return _unique(items, path)


def read_text_jsonl(path: str | Path, *, lang: str | None = None) -> list[TextItem]:
    """`{"id", "lang", "text"}` per line: documents for bits per byte."""
    items = []
    for no, rec in _records(path):
        where = f"{path}:{no}"
        text = _field(rec, "text", str, where)
        if not text:
            raise ItemsError(f"{where}: 'text' is empty")
        items.append(TextItem(str(_field(rec, "id", (str, int), where)), rec.get("lang") or lang or "und", text))
    return _unique(items, path)


def _unique(items: list[Any], path: str | Path) -> list[Any]:
    seen: set[tuple[str, str]] = set()
    for item in items:
        key = (item.lang, item.id)
        if key in seen:
            raise ItemsError(f"{path}: item id {item.id!r} appears twice for language {item.lang!r}")
        seen.add(key)
    return items
