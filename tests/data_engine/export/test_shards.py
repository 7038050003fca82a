"""Shard export round trip: what we write is what megatron-core's IndexedDataset reads."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from data_engine import lake
from data_engine.errors import ConfigError, TableNotFoundError
from data_engine.export.config import ExportConfig
from data_engine.export.indexed_dataset import read_index, write_index
from data_engine.export.shards import export_shards
from data_engine.tokenizer import QWEN_EOD_ID, identity, load_fast

TEXTS = {
    "tha": ["ภาษาไทยเขียนติดกันโดยไม่มีช่องว่าง", "สวัสดีครับ", "ข่าววันนี้: ฝนตกหนักในกรุงเทพ"],
    "zho": ["中文没有空格。", "人人生而自由，在尊严和权利上一律平等。"],
    "vie": ["Tất cả mọi người sinh ra đều được tự do.", "Xin chào"],
    "lao": ["ມະນຸດທຸກຄົນເກີດມາມີກຽດ"],
    "und": ["??? unknown language"],
}


@pytest.fixture()
def dedup_lake(spark, lake_dir):
    rows = [(f"{lang}-{i:03d}", lang, t) for lang, texts in TEXTS.items() for i, t in enumerate(texts)]
    rows += [(f"vie-{i:03d}", "vie", f"Văn bản số {i} " * (1 + i % 5)) for i in range(10, 70)]
    lake.write_table(spark.createDataFrame(rows, "doc_id string, lang string, text string"),
                     lake_dir, "docs_dedup", mode="error")
    return lake_dir, rows


def test_round_trip_through_megatron_indexed_dataset(spark, dedup_lake, tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    lake_dir, rows = dedup_lake
    result = export_shards(spark, lake_dir, str(tmp_path / "shards"), "stage1")
    tok = load_fast("qwen2.5")
    assert set(result.shards) == {"tha", "zho", "vie", "lao"}
    assert result.dropped == 1  # the `und` document is not training data
    for lang, shard in result.shards.items():
        docs = sorted((d, t) for d, lg, t in rows if lg == lang)
        expected = [tok.encode(t, add_special_tokens=False).ids + [QWEN_EOD_ID] for _, t in docs]
        ds = IndexedDataset(shard["prefix"])
        assert len(ds) == len(expected) == shard["docs"]
        got = [ds[i].tolist() for i in range(len(ds))]
        assert got == expected  # order: doc_id; every document ends with EOD
        assert int(ds.sequence_lengths.sum()) == shard["tokens"] == sum(map(len, expected))
        assert ds[0].dtype == np.int32
    manifest = {r["lang"]: r for r in lake.read_arrow(lake_dir, "shard_manifest").to_pylist()}
    assert set(manifest) == set(result.shards)
    assert manifest["tha"]["source_table"] == "docs_dedup" and manifest["tha"]["source_version"] == 0
    assert manifest["tha"]["tokenizer_digest"] == identity("qwen2.5").digest
    assert manifest["tha"]["eod_id"] == QWEN_EOD_ID and manifest["tha"]["stage"] == "stage1"
    on_disk = json.loads((tmp_path / "shards" / "stage1" / "manifest.json").read_text())
    assert on_disk["digest"] == result.manifest_digest
    assert not list((tmp_path / "shards" / "stage1").glob("_tmp-*"))


def test_reexport_is_byte_identical_and_replaces_only_its_stage(spark, dedup_lake, tmp_path):
    lake_dir, _ = dedup_lake
    out = tmp_path / "shards"

    def digests() -> dict[str, str]:
        files = sorted((out / "stage1").glob("*_text_document.*"))
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    first = export_shards(spark, lake_dir, str(out), "stage1")
    before = digests()
    export_shards(spark, lake_dir, str(out), "stage2", ExportConfig(langs=("tha",)))
    second = export_shards(spark, lake_dir, str(out), "stage1")
    assert digests() == before and second.manifest_digest == first.manifest_digest
    rows = lake.read_arrow(lake_dir, "shard_manifest").to_pylist()
    assert sorted((r["stage"], r["lang"]) for r in rows) == sorted(
        [("stage1", lang) for lang in first.shards] + [("stage2", "tha")])


def test_index_writer_matches_megatron_builder(tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 151000, size=int(n)).astype(np.int32) for n in rng.integers(1, 50, size=20)]
    builder = IndexedDatasetBuilder(str(tmp_path / "ref.bin"), dtype=np.int32)
    for d in docs:
        builder.add_document(d, [len(d)])
    builder.finalize(str(tmp_path / "ref.idx"))
    write_index(tmp_path / "ours.idx", np.array([len(d) for d in docs]), np.dtype(np.int32))
    assert (tmp_path / "ours.idx").read_bytes() == (tmp_path / "ref.idx").read_bytes()
    dtype, lengths = read_index(tmp_path / "ours.idx")
    assert dtype == np.int32 and lengths.tolist() == [len(d) for d in docs]


def test_clear_errors(spark, lake_dir, tmp_path):
    with pytest.raises(TableNotFoundError, match="none of docs_curated, docs_dedup exists"):
        export_shards(spark, lake_dir, str(tmp_path), "stage1")
    with pytest.raises(ConfigError, match="plain name"):
        export_shards(spark, lake_dir, str(tmp_path), "../escape")
    with pytest.raises(ConfigError, match="tokenizer"):
        export_shards(spark, lake_dir, str(tmp_path / "x"), "s", ExportConfig(input_table="docs_raw",
                                                                             tokenizer=str(tmp_path)))
