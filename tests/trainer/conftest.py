"""Real shards and a real shard manifest for the trainer tests; no Spark.

Shards are Megatron indexed datasets written by megatron-core's own `IndexedDatasetBuilder`
(random Qwen token ids, each document ended by EOD, as the exporter writes them); the manifest is
a Delta table committed by delta-rs with the columns and the partitioning (by stage) of
`data_engine.export.shards`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import yaml

from data_engine import lake as lake_io
from data_engine.tables import SHARD_MANIFEST
from data_engine.tokenizer import QWEN_EOD_ID, identity

MANIFEST_SCHEMA = pa.schema([
    ("stage", pa.string()), ("lang", pa.string()), ("prefix", pa.string()), ("docs", pa.int64()),
    ("tokens", pa.int64()), ("checksum", pa.string()), ("source_table", pa.string()), ("source_version", pa.int64()),
    ("tokenizer", pa.string()), ("tokenizer_digest", pa.string()), ("vocab_size", pa.int64()),
    ("eod_id", pa.int64()), ("dtype", pa.string()),
])


def write_shard(prefix: Path, *, docs: int, seed: int, min_len: int = 40, max_len: int = 300) -> int:
    """Write `<prefix>.bin/.idx` with `docs` random documents; return the token count."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    prefix.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.int32)
    tokens = 0
    for _ in range(docs):
        doc = np.append(rng.integers(0, QWEN_EOD_ID, size=int(rng.integers(min_len, max_len))), QWEN_EOD_ID)
        builder.add_document(doc.astype(np.int32), [len(doc)])
        tokens += len(doc)
    builder.finalize(f"{prefix}.idx")
    return tokens


def manifest_row(stage: str, lang: str, prefix: Path, *, docs: int, tokens: int,
                 **overrides: Any) -> dict[str, Any]:
    tok = identity("qwen2.5")
    import xxhash

    bin_path = Path(f"{prefix}.bin")
    checksum = xxhash.xxh3_128_hexdigest(bin_path.read_bytes()) if bin_path.exists() else None
    row = {"stage": stage, "lang": lang, "prefix": str(prefix), "docs": docs, "tokens": tokens,
           "checksum": checksum, "source_table": "docs_curated", "source_version": 3, "tokenizer": tok.name,
           "tokenizer_digest": tok.digest, "vocab_size": tok.vocab_size, "eod_id": tok.eod_id,
           "dtype": "int32"}
    row.update(overrides)
    return row


def _write_manifest(lake: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    from deltalake import write_deltalake

    table = pa.Table.from_pylist([dict(r) for r in rows], schema=MANIFEST_SCHEMA)
    write_deltalake(str(lake / SHARD_MANIFEST), table, mode="overwrite", partition_by=["stage"])


@pytest.fixture
def write_manifest() -> Callable[[Path, Iterable[Mapping[str, Any]]], None]:
    """`write_manifest(lake, rows)` commits `rows` as a new version of `<lake>/shard_manifest`."""
    return _write_manifest


@pytest.fixture
def make_shard(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """`make_shard(stage, lang, docs=…, seed=…, name=…, **row_overrides)` → the manifest row of a
    freshly written shard (file name `<name or lang>_text_document`)."""

    def make(stage: str, lang: str, *, docs: int = 20, seed: int = 0, name: str | None = None,
             **overrides: Any) -> dict[str, Any]:
        prefix = tmp_path / "shards" / stage / f"{name or lang}_text_document"
        tokens = write_shard(prefix, docs=docs, seed=seed)
        return manifest_row(stage, lang, prefix, docs=docs, tokens=tokens, **overrides)

    return make


@pytest.fixture(scope="session")
def shard_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake with stage-1 shards for ind and vie and stage-2 shards for ind and tha."""
    root = tmp_path_factory.mktemp("lake")
    lake = root / "lake"
    rows = []
    for seed, (stage, lang, docs) in enumerate([("stage1", "ind", 300), ("stage1", "vie", 200),
                                                 ("stage2", "ind", 100), ("stage2", "tha", 100)]):
        prefix = root / "shards" / stage / f"{lang}_text_document"
        rows.append(manifest_row(stage, lang, prefix, docs=docs,
                                 tokens=write_shard(prefix, docs=docs, seed=seed)))
    _write_manifest(lake, rows)
    return lake


# --- a plan exported with Spark: its shards, manifest rows and per-stage NeMo data configs -----------

SCHEMA = "doc_id string, lang string, text string, quality_score double"
WORDS = {"tha": ["ภาษาไทย", "สวัสดี", "ข่าววันนี้", "ฝนตกหนัก", "กรุงเทพ"],
         "vie": ["Văn bản", "Xin chào", "tự do", "Hà Nội", "mưa lớn"]}
STAGE2 = [("tha", "replay", "stage1/tha", 0.1), ("vie", "replay", "stage1/vie", 0.1),
          ("tha", "hq", "stage2-hq/tha", 0.5), ("vie", "hq", "stage2-hq/vie", 0.3)]

def _digest(doc: dict[str, Any]) -> str:
    rest = {k: v for k, v in doc.items() if k != "plan_digest"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode("utf-8")).hexdigest()


@pytest.fixture(scope="session")
def plan_export(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A two-language plan (tha, vie) exported by `export_plan`: stage 1 from docs_curated, stage 2
    replaying it and adding the top half of docs_scored; returns root, lake, rows, plan, data configs."""
    from data_engine.export.plan_export import export_plan

    root = tmp_path_factory.mktemp("plan")
    lake = str(root / "lake")
    rows = [(hashlib.md5(f"{lang}{i}".encode()).hexdigest()[:10], lang,
             " ".join(words[(i + k) % len(words)] for k in range(3 + i % 5)) + f" {i}", (i % 7) / 7)
            for lang, words in WORDS.items() for i in range(30)]
    lake_io.write_table(spark.createDataFrame(rows, SCHEMA), lake, "docs_scored", mode="error")
    lake_io.write_table(spark.createDataFrame(rows, SCHEMA), lake, "docs_curated", mode="error")
    doc: dict[str, Any] = {
        "lake": lake, "tokenizer": "qwen2.5", "tokenizer_digest": identity("qwen2.5").digest,
        "shards": {"stage1": {"table": "docs_curated", "version": 0, "langs": ["tha", "vie"], "top_percent": None},
                   "stage2-hq": {"table": "docs_scored", "version": 0, "langs": ["tha", "vie"],
                                 "top_percent": {"tha": 50, "vie": 50}}},
        "stages": {"stage1": {"budget_tokens": 1000, "blend": [
                       {"lang": "tha", "kind": "base", "prefix": "stage1/tha", "weight": 0.5},
                       {"lang": "vie", "kind": "base", "prefix": "stage1/vie", "weight": 0.5}]},
                   "stage2": {"budget_tokens": 200, "blend": [
                       {"lang": lang, "kind": kind, "prefix": prefix, "weight": w}
                       for lang, kind, prefix, w in STAGE2]}},
    }
    doc["plan_digest"] = _digest(doc)
    plan = root / "plan.yaml"
    plan.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    result = export_plan(spark, lake, str(root / "shards"), plan)
    return {"root": root, "lake": lake, "rows": rows, "plan": plan, "shards": root / "shards", "stage2_blend": STAGE2,
            "data_config": Path(result.data_configs["stage2"]),
            "data_configs": {k: Path(v) for k, v in result.data_configs.items()}}


