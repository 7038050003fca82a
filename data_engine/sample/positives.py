"""The demo's positive (high-quality) sets: real, clean text per language.

Sailor2's positives were high-quality English documents machine-translated into each language;
offline, the demo uses what real text it has in all 15 languages — the UDHR paragraphs shipped in
`resources/udhr` — as 2–3-paragraph documents, one JSONL file per language.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from data_engine.langs import LANGS
from data_engine.sample.corpus import load_udhr


def write_positive_sets(out_dir: str | Path, *, seed: int = 5) -> dict[str, Path]:
    rng = random.Random(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for lang in LANGS:
        paragraphs = [p for section in load_udhr(lang) for p in section]
        docs = []
        for i in range(0, len(paragraphs), 2):
            docs.append("\n".join(paragraphs[i:i + rng.randint(2, 3)]))
        path = out / f"{lang}.jsonl"
        path.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
        paths[lang] = path
    return paths
