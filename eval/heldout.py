"""The curated documents a checkpoint's training never saw: the held-out part of its own shards.

Megatron splits every shard by document index — train is [0, round(train·n)), validation and test
follow — so the documents after the train range of each shard the run read are curated text of the
same distribution the model was trained on that it never trained on. Their tokens are decoded back
to text (the Qwen tokenizer's byte-level BPE round-trips) and scored like any corpus: bits per byte
per language, comparable with FLORES's.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data_engine.export.indexed_dataset import read_index
from eval.items import TextItem

_LANG = re.compile(r"^([a-z]{3})[-_]")


def train_range_end(documents: int, split: str) -> int:
    """Megatron's end of the train range: round(share·n) with the split vector normalised."""
    shares = [float(x) for x in split.split(",")]
    return int(round(shares[0] / sum(shares) * documents))


def shard_documents(prefix: str, start: int, stop: int) -> list[np.ndarray]:
    dtype, lengths = read_index(prefix + ".idx")
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    tokens = np.memmap(prefix + ".bin", dtype=dtype, mode="r")
    return [np.asarray(tokens[offsets[i]:offsets[i + 1]]) for i in range(start, stop)]


def heldout_items(paths: Sequence[Any], split: str, decode: Callable[[list[int]], str], *, eod_id: int | None,
                  limit: int | None, seed: int = 0) -> dict[str, list[TextItem]]:
    """Language → held-out documents of a data config's `paths` ([w1, prefix1, …]), seeded sample."""
    out: dict[str, list[TextItem]] = {}
    for prefix in [p for p in paths[1::2]]:
        name = Path(str(prefix)).name
        match = _LANG.match(name)
        if not match or not Path(f"{prefix}.idx").is_file():
            continue
        _, lengths = read_index(f"{prefix}.idx")
        start = train_range_end(len(lengths), split)
        for k, ids in enumerate(shard_documents(str(prefix), start, len(lengths))):
            ids = [int(t) for t in ids if eod_id is None or int(t) != eod_id]
            text = decode(ids).strip()
            if text:
                out.setdefault(match.group(1), []).append(TextItem(f"{name}:{start + k}", match.group(1), text))
    for lang, items in out.items():
        if limit is not None and len(items) > limit:
            keep = sorted(random.Random(f"heldout:{lang}:{seed}").sample(range(len(items)), limit))
            out[lang] = [items[i] for i in keep]
    return out
