"""Exact dedup on inline rows and through the runner: keep rule, drops, determinism, counts."""

from __future__ import annotations

import unicodedata

from data_engine import lake
from data_engine.dedup.config import DedupConfig, ExactDedupConfig
from data_engine.dedup.exact import dedup_exact
from data_engine.dedup.normalize import normalize_text, text_hash
from data_engine.dedup.run import dedup

SCHEMA = "doc_id string, lang string, text string"
EXACT_ONLY = DedupConfig(stages=("exact",))


def test_normalisation_whitespace_nfc_and_invisible_breaks():
    composed = "Vi\u1ec7t Nam"
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed and text_hash(decomposed) == text_hash(composed)
    assert normalize_text("  a \n\n b\t c  ") == "a b c"
    assert text_hash("ภาษา\u200bไทย") == text_hash("ภาษาไทย")
    assert text_hash("ภาษาไทย") != text_hash("ภาษาลาว")  # one Thai word differs
    assert text_hash("Hello") != text_hash("hello") and text_hash("Hello", lowercase=True) == text_hash("hello")
    # Combining marks are kept: Thai tone marks change the text.
    assert text_hash("ไม้") != text_hash("ไม")


def test_exact_keeps_longest_raw_then_smallest_id_and_records_dup_of(spark):
    rows = [("d3", "tha", "สวัสดี  ครับ"),  # same after whitespace normalisation, longest raw text
            ("d1", "tha", "สวัสดี ครับ"),
            ("d2", "tha", "สวัสดี ครับ"),
            ("z9", "zho", "你好世界"), ("z1", "zho", "你好世界"),  # a tie: smallest doc_id survives
            ("z2", "zho", "你好，世界"),  # punctuation differs: not a duplicate
            ("e1", "eng", "Hello"), ("e2", "eng", "hello")]
    out = dedup_exact(spark.createDataFrame(rows, SCHEMA))
    try:
        kept = sorted(r.doc_id for r in out.kept.collect())
        dropped = {r.doc_id: r for r in out.dropped.collect()}
        assert kept == ["d3", "e1", "e2", "z1", "z2"]
        assert {k: (v.dup_of, v.stage, v.reason, v.lang) for k, v in dropped.items()} == {
            "d1": ("d3", "exact", "exact_duplicate", "tha"), "d2": ("d3", "exact", "exact_duplicate", "tha"),
            "z9": ("z1", "exact", "exact_duplicate", "zho")}
        assert dropped["d1"].cluster_id == dropped["d2"].cluster_id
        assert out.kept.columns == ["doc_id", "lang", "text"]
    finally:
        out.tagged.unpersist()
    folded = dedup_exact(spark.createDataFrame(rows, SCHEMA), ExactDedupConfig(lowercase=True))
    assert {r.doc_id for r in folded.dropped.collect()} == {"d1", "d2", "z9", "e2"}
    folded.tagged.unpersist()


def _raw_table(spark, lake_dir, rows):
    df = spark.createDataFrame(rows, SCHEMA)
    lake.write_table(df, lake_dir, "docs_raw", mode="error")


def test_runner_writes_docs_dedup_and_drops_and_reruns_identically(spark, lake_dir):
    rows = [(f"id{i:02d}", lang, text) for i, (lang, text) in enumerate(
        [("tha", "ข่าววันนี้"), ("tha", "ข่าววันนี้ "), ("lao", "ສະບາຍດີ"), ("lao", "ສະບາຍດີ"),
         ("khm", "សួស្តី"), ("mya", "မင်္ဂလာပါ"), ("mya", "မင်္ဂလာပါ"), ("eng", "a b"), ("eng", "a  b")])]
    _raw_table(spark, lake_dir, rows)
    first = dedup(spark, lake_dir, EXACT_ONLY)
    assert (first.records, first.kept, first.dropped) == (9, 5, 4)
    assert first.stages["exact"].by_lang["mya"] == {"in": 2, "kept": 1, "dropped": 1}
    kept_1 = sorted(r["doc_id"] for r in lake.read_arrow(lake_dir, "docs_dedup").to_pylist())
    drops_1 = sorted((r["doc_id"], r["dup_of"]) for r in lake.read_arrow(lake_dir, "drops").to_pylist())
    assert len(kept_1) == 5 and len(drops_1) == 4
    assert set(kept_1).isdisjoint(d for d, _ in drops_1) and {d for _, d in drops_1} <= set(kept_1)

    second = dedup(spark, lake_dir, EXACT_ONLY)
    assert second.tables == {"docs_dedup": first.tables["docs_dedup"] + 1, "drops": first.tables["drops"] + 1}
    assert sorted(r["doc_id"] for r in lake.read_arrow(lake_dir, "docs_dedup").to_pylist()) == kept_1
    # drops were replaced, not appended to
    assert sorted((r["doc_id"], r["dup_of"]) for r in lake.read_arrow(lake_dir, "drops").to_pylist()) == drops_1


def test_runner_reads_the_pinned_input_version(spark, lake_dir):
    _raw_table(spark, lake_dir, [("a", "eng", "x"), ("b", "eng", "x")])
    lake.write_table(spark.createDataFrame([("c", "eng", "x")], SCHEMA), lake_dir, "docs_raw", mode="append")
    old = dedup(spark, lake_dir, EXACT_ONLY, input_version=0)
    assert (old.input_version, old.records, old.kept) == (0, 2, 1)
    new = dedup(spark, lake_dir, EXACT_ONLY)
    assert (new.input_version, new.records, new.kept) == (1, 3, 1)
