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


def _read_parts(shard: dict) -> list[list[int]]:
    """A language's documents as megatron-core reads them, part after part."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    docs = []
    for part in shard["parts"]:
        ds = IndexedDataset(part["prefix"])
        assert len(ds) == part["docs"] and int(ds.sequence_lengths.sum()) == part["tokens"]
        assert ds[0].dtype == np.int32
        docs += [ds[i].tolist() for i in range(len(ds))]
    return docs


def _expected(rows, lang: str) -> list[list[int]]:
    tok = load_fast("qwen2.5")
    return [tok.encode(t, add_special_tokens=False).ids + [QWEN_EOD_ID] for _, t in
            sorted((d, t) for d, lg, t in rows if lg == lang)]


def test_round_trip_through_megatron_indexed_dataset(spark, dedup_lake, tmp_path):
    lake_dir, rows = dedup_lake
    result = export_shards(spark, lake_dir, str(tmp_path / "shards"), "stage1")
    assert set(result.shards) == {"tha", "zho", "vie", "lao"}
    assert result.dropped == 1  # the `und` document is not training data
    for lang, shard in result.shards.items():
        expected = _expected(rows, lang)
        assert len(shard["parts"]) == 1  # the default part size holds any test language
        assert _read_parts(shard) == expected  # order: doc_id; every document ends with EOD
        assert shard["docs"] == len(expected) and shard["tokens"] == sum(map(len, expected))
        assert shard["parts"][0]["prefix"] == shard["prefix"] + "_0"
    manifest = {r["lang"]: r for r in lake.read_arrow(lake_dir, "shard_manifest").to_pylist()}
    assert set(manifest) == set(result.shards)
    assert manifest["tha"]["source_table"] == "docs_dedup" and manifest["tha"]["source_version"] == 0
    assert manifest["tha"]["tokenizer_digest"] == identity("qwen2.5").digest
    assert manifest["tha"]["eod_id"] == QWEN_EOD_ID and manifest["tha"]["stage"] == "stage1"
    assert (manifest["tha"]["part"], manifest["tha"]["part_bytes"]) == (0, 1 << 30)
    on_disk = json.loads((tmp_path / "shards" / "stage1" / "manifest.json").read_text())
    assert on_disk["digest"] == result.manifest_digest
    assert not list((tmp_path / "shards" / "stage1").glob("_tmp-*"))


PART_BYTES = 200  # 50 int32 tokens: the 60 Vietnamese documents (≈ 1.3k tokens) make many parts


def test_a_language_is_written_in_parts_read_by_megatron_and_the_blend(spark, dedup_lake, tmp_path):
    import xxhash

    from trainer.data import blend_from_manifest

    lake_dir, rows = dedup_lake
    out = tmp_path / "shards"
    result = export_shards(spark, lake_dir, str(out), "stage1", ExportConfig(part_bytes=PART_BYTES))
    vie = result.shards["vie"]
    assert _read_parts(vie) == _expected(rows, "vie")  # every document once, in doc_id order
    windows = -(-vie["tokens"] * 4 // PART_BYTES)  # as few as the bound allows; the last may start no document
    assert windows - 1 <= len(vie["parts"]) <= windows and len(vie["parts"]) > 10
    for k, part in enumerate(vie["parts"]):
        assert part["prefix"] == f"{vie['prefix']}_{k}" and part["part"] == k
        _, lengths = read_index(part["prefix"] + ".idx")
        assert part["bytes"] == part["tokens"] * 4 and part["bytes"] - 4 * int(lengths[-1]) < PART_BYTES
        assert part["checksum"] == xxhash.xxh3_128_hexdigest(open(part["prefix"] + ".bin", "rb").read())
        assert part["idx_checksum"] == xxhash.xxh3_128_hexdigest(open(part["prefix"] + ".idx", "rb").read())
    tag = hashlib.sha256("\n".join(f"{p['checksum']}:{p['idx_checksum']}" for p in vie["parts"])
                         .encode()).hexdigest()[:16]
    assert vie["prefix"] == str(out.resolve() / "stage1" / f"vie-{tag}_text_document")
    rows_vie = sorted((r for r in lake.read_arrow(lake_dir, "shard_manifest").to_pylist() if r["lang"] == "vie"),
                      key=lambda r: r["part"])
    assert [(r["prefix"], r["docs"], r["tokens"], r["bytes"], r["part_bytes"]) for r in rows_vie] == \
        [(p["prefix"], p["docs"], p["tokens"], p["bytes"], PART_BYTES) for p in vie["parts"]]

    # The trainer's blend: every part, each language's weight shared by its parts by tokens.
    blend = blend_from_manifest(lake_dir, "stage1", {"vie": 3, "tha": 1})
    weights = dict(zip(blend.paths[1::2], blend.paths[0::2], strict=True))
    assert [p for p in blend.paths[1::2] if "/vie-" in p] == [p["prefix"] for p in vie["parts"]]
    assert sum(w for p, w in weights.items() if "/vie-" in p) == pytest.approx(0.75)
    for part in vie["parts"]:
        assert weights[part["prefix"]] == pytest.approx(0.75 * part["tokens"] / vie["tokens"])
    assert blend.lang_weights == {"tha": 0.25, "vie": 0.75}
    assert blend_from_manifest(lake_dir, "stage1").digest == result.manifest_digest  # every language: the stage


def test_parts_do_not_depend_on_how_spark_split_the_work(spark, dedup_lake, tmp_path):
    """Other task boundaries (shuffle partitions) and a re-run: the same parts, byte for byte."""
    lake_dir, _ = dedup_lake
    cfg = ExportConfig(part_bytes=PART_BYTES)

    def files(out) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted((out / "stage1").glob("*_text_document_*"))}

    first = export_shards(spark, lake_dir, str(tmp_path / "a"), "stage1", cfg)
    before = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "7")
    try:
        second = export_shards(spark, lake_dir, str(tmp_path / "b"), "stage1", cfg)
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before)
    assert files(tmp_path / "a") == files(tmp_path / "b") and len(files(tmp_path / "a")) > 20
    assert first.manifest_digest == second.manifest_digest  # the content columns: the same shards

    def parts(result) -> list[dict]:
        return [{k: v for k, v in p.items() if k != "prefix"} for p in result.shards["vie"]["parts"]]

    assert parts(first) == parts(second)


def test_reexport_is_byte_identical_and_replaces_only_its_stage(spark, dedup_lake, tmp_path):
    lake_dir, _ = dedup_lake
    out = tmp_path / "shards"

    def digests() -> dict[str, str]:
        files = sorted((out / "stage1").glob("*_text_document_*"))
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
    with pytest.raises(ConfigError, match=r"export.part_bytes must be at least 16 \(or null for one part per "):
        ExportConfig(part_bytes=8)
    with pytest.raises(ConfigError, match="plain name"):
        export_shards(spark, lake_dir, str(tmp_path), "../escape")
    with pytest.raises(ConfigError, match="tokenizer"):
        export_shards(spark, lake_dir, str(tmp_path / "x"), "s", ExportConfig(input_table="docs_raw",
                                                                             tokenizer=str(tmp_path)))


_HOLDER = """
import sys, time
from pathlib import Path
from data_engine.export.shards import _hold
work = Path(sys.argv[1])
handle = _hold(work)
work.mkdir()
(work / "part").write_bytes(b"half")
print("held", flush=True)
time.sleep(600)
"""


def test_an_export_removes_what_a_killed_export_left_and_spares_a_live_one(spark, dedup_lake, tmp_path):
    """SIGKILL leaves `_tmp-<attempt>/` with half-written parts; the next export in that stage
    removes it, but never the folder of an export still running beside it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    lake_dir, _ = dedup_lake
    stage = tmp_path / "shards" / "stage1"
    stage.mkdir(parents=True)
    live, dead = stage / "_tmp-live", stage / "_tmp-dead"
    procs = [subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
             for path in (live, dead)]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "held"
        os.kill(procs[1].pid, signal.SIGKILL)
        procs[1].wait(timeout=30)
        old = stage / "_tmp-unlocked-old"  # no lock file at all (an older version): judged by age
        old.mkdir()
        (old / "part").write_bytes(b"x")
        stamp = time.time() - 2 * 24 * 3600
        os.utime(old / "part", (stamp, stamp))
        os.utime(old, (stamp, stamp))
        young = stage / "_tmp-unlocked-young"
        young.mkdir()
        export_shards(spark, lake_dir, str(tmp_path / "shards"), "stage1")
        left = sorted(p.name for p in stage.glob("_tmp-*"))
        assert left == ["_tmp-live", "_tmp-live.lock", "_tmp-unlocked-young"]
        assert (live / "part").read_bytes() == b"half"
    finally:
        procs[0].kill()
        procs[0].wait(timeout=30)
