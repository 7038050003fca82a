"""Eval items the audit looks for: `{"task", "lang", "id", "text"}`, from JSONL or from a suite.

Every problem names where it is (file and line, or the suite and the item's position), so a bad
items file is fixed from the message alone. An item is identified by (task, lang, id): parallel
test sets reuse one id across languages.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_engine.contamination.ngrams import normalise
from data_engine.errors import InputError
from data_engine.langs import normalize_lang

FIELDS = ("task", "lang", "id", "text")


class ItemsError(InputError):
    """The eval items cannot be audited: unreadable, malformed, missing a field, empty."""


@dataclass(frozen=True)
class Item:
    task: str
    lang: str
    id: str
    text: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.task, self.lang, self.id)


def read_items(path: str | Path) -> list[Item]:
    """The items of a JSONL file (blank lines skipped)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ItemsError(f"cannot read items file {path}: {exc.strerror or exc}") from exc
    records: list[tuple[str, Any]] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        where = f"{path}:{number}"
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ItemsError(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
        try:
            records.append((where, json.loads(text)))
        except ValueError as exc:
            raise ItemsError(f"{where}: not a JSON object ({exc})") from None
    if not records:
        raise ItemsError(f"items file {path} holds no items; give one JSON object per line with "
                         f"{', '.join(FIELDS)}")
    return parse_items(records)


def items_from_records(records: Iterable[Mapping[str, Any]], source: str) -> list[Item]:
    """Items given as dicts (a suite's `contamination_items`); `source` names them in errors."""
    numbered = [(f"{source} item {i}", r) for i, r in enumerate(records, start=1)]
    if not numbered:
        raise ItemsError(f"{source} yields no items (is its data present?); nothing to audit")
    return parse_items(numbered)


def parse_items(records: Iterable[tuple[str, Any]]) -> list[Item]:
    """Validate (where, record) pairs; ids may be JSON numbers, everything else must be a string."""
    items: list[Item] = []
    seen: dict[tuple[str, str, str], str] = {}
    for where, record in records:
        if not isinstance(record, Mapping):
            raise ItemsError(f"{where}: expected a JSON object with {', '.join(FIELDS)}, got "
                             f"{type(record).__name__}")
        missing = [f for f in FIELDS if record.get(f) is None]
        if missing:
            raise ItemsError(f"{where}: item is missing {', '.join(missing)} (an item needs {', '.join(FIELDS)})")
        values = {}
        for name in FIELDS:
            value = record[name]
            if name == "id" and isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or (name != "text" and not value.strip()):
                raise ItemsError(f"{where}: {name} must be a non-empty string, got {value!r}")
            values[name] = value
        if not normalise(values["text"]):
            raise ItemsError(f"{where}: text has no letters or digits ({values['text'][:40]!r}); nothing to look for")
        item = Item(task=values["task"].strip(), lang=normalize_lang(values["lang"]), id=values["id"],
                    text=values["text"])
        if item.key in seen:
            raise ItemsError(f"{where}: item {item.task}/{item.lang}/{item.id} repeats {seen[item.key]}; ids must "
                             "be unique within a task and language")
        seen[item.key] = where
        items.append(item)
    return items
