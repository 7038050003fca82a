"""Ingest on a real SparkSession into real Delta tables: exact counts, idempotence, stable ids."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_engine import lake
from data_engine.errors import InputError
from data_engine.ingest.config import IngestConfig
from data_engine.ingest.run import ingest

GOOD = [
    {"text": "Selamat pagi, apa kabar?", "url": "https://id.example/a", "lang": "id", "src": 1},
    {"text": "สวัสดีครับ ยินดีต้อนรับ", "url": "https://th.example/a", "lang": "th"},
    {"text": "ជំរាបសួរ", "lang": "km"},
    {"text": "你好，世界", "url": "https://zh.example/a", "lang": "zh-Hans", "id": 5},
    {"text": "Selamat pagi, apa kabar?", "url": "https://id.example/a", "lang": "id", "src": 1},  # repeat
]
BAD = [b'{"text": ', b'{"text": "\xff"}', b'{"url": "x"}', b'{"text": null}', b'{"text": 3}',
       b'{"text": "  "}', b"[]"]


def write_corpus(root: Path) -> dict[str, int]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "good.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in GOOD),
                                     encoding="utf-8")
    (root / "bad.jsonl").write_bytes(b"\n".join(BAD) + b"\n")
    with gzip.open(root / "more.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"text": "Xin chào", "lang": "vi"}, ensure_ascii=False) + "\n")
    pq.write_table(pa.table({"text": ["Hello there", None], "lang": ["en", "en"]}), root / "p.parquet")
    pq.write_table(pa.table({"body": ["no text column"]}), root / "wrong.parquet")
    (root / "empty.jsonl").write_bytes(b"")
    (root / "README.txt").write_text("not data")
    return {"in": 5 + 7 + 1 + 2 + 1 + 1, "kept": 5 + 1 + 1, "quarantined": 7 + 1 + 1 + 1}


def test_counts_reconcile_and_every_bad_record_is_quarantined(spark, lake_dir, tmp_path):
    expected = write_corpus(tmp_path / "in")
    result = ingest(spark, lake_dir, [str(tmp_path / "in")], source="web")
    assert (result.records, result.docs, result.quarantined) == (
        expected["in"], expected["kept"], expected["quarantined"])
    assert result.files == 6 and result.ignored_files == 1 and result.skipped_files == 0
    assert result.per_lang == {"ind": 2, "tha": 1, "khm": 1, "zho": 1, "vie": 1, "eng": 1}
    assert result.per_reason == {"invalid_json": 1, "invalid_utf8": 1, "missing_text": 2, "null_text": 2,
                                 "text_not_string": 1, "empty_text": 1, "not_an_object": 1, "empty_file": 1}
    raw = lake.read_arrow(lake_dir, "docs_raw").to_pylist()
    quarantine = lake.read_arrow(lake_dir, "quarantine").to_pylist()
    assert len(raw) == expected["kept"] and len(quarantine) == expected["quarantined"]
    assert {r["source"] for r in raw} == {"web"} and len({r["batch_id"] for r in raw}) == 1
    thai = next(r for r in raw if r["lang"] == "tha")
    assert thai["text"] == GOOD[1]["text"] and thai["url"] == GOOD[1]["url"] and thai["meta"] == "{}"
    assert next(r for r in raw if r["lang"] == "zho")["id"] == "5"
    bad = {(Path(q["source_file"]).name, q["record_no"]): q for q in quarantine}
    assert bad[("bad.jsonl", 2)]["reason"].startswith("invalid_utf8")
    assert bad[("bad.jsonl", 1)]["payload"] == '{"text": '
    assert bad[("wrong.parquet", 1)]["reason"].startswith("missing_text")
    assert bad[("empty.jsonl", None)]["reason"].startswith("empty_file")
    log = lake.read_arrow(lake_dir, "ingest_log").to_pylist()
    assert sum(r["records"] for r in log) == expected["in"] and len(log) == 6


def test_doc_ids_are_stable_unique_and_number_repeats(spark, tmp_path):
    write_corpus(tmp_path / "in")
    ids = []
    for name in ("lake1", "lake2"):
        ingest(spark, str(tmp_path / name), [str(tmp_path / "in" / "good.jsonl")], source="web")
        ids.append(sorted(r["doc_id"] for r in lake.read_arrow(tmp_path / name, "docs_raw").to_pylist()))
    assert ids[0] == ids[1]
    assert len(set(ids[0])) == len(ids[0]) == 5
    repeated = [i for i in ids[0] if i.endswith("-1")]
    assert len(repeated) == 1 and repeated[0][:-2] in ids[0]
    # The same record arriving in a later batch (another file) gets the next number.
    (tmp_path / "later.jsonl").write_text(json.dumps(GOOD[0]) + "\n")
    ingest(spark, str(tmp_path / "lake1"), [str(tmp_path / "later.jsonl")], source="web")
    after = {r["doc_id"] for r in lake.read_arrow(tmp_path / "lake1", "docs_raw").to_pylist()}
    assert after - set(ids[0]) == {repeated[0][:-2] + "-2"}


def test_reingest_adds_nothing_even_for_a_renamed_copy(spark, lake_dir, tmp_path):
    write_corpus(tmp_path / "in")
    first = ingest(spark, lake_dir, [str(tmp_path / "in")])
    versions = {t: lake.table_version(lake_dir, t) for t in ("docs_raw", "quarantine", "ingest_log")}
    shutil.copy(tmp_path / "in" / "good.jsonl", tmp_path / "in" / "copy-of-good.jsonl")
    second = ingest(spark, lake_dir, [str(tmp_path / "in")])
    assert (second.records, second.docs, second.quarantined) == (0, 0, 0)
    assert second.skipped_files == first.files + 1 and second.tables == {}
    assert {t: lake.table_version(lake_dir, t) for t in versions} == versions


def test_split_reading_matches_whole_file_reading(spark, tmp_path):
    lines = [json.dumps({"text": f"document {i} " + "ข้อความ" * (i % 7), "lang": "th"}, ensure_ascii=False)
             for i in range(300)]
    lines[17] = "{broken"
    (tmp_path / "big.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    whole = ingest(spark, str(tmp_path / "a"), [str(tmp_path / "big.jsonl")])
    split = ingest(spark, str(tmp_path / "b"), [str(tmp_path / "big.jsonl")], cfg=IngestConfig(split_bytes=997))
    assert (whole.docs, whole.quarantined) == (split.docs, split.quarantined) == (299, 1)

    def content(name: str) -> list[tuple]:
        rows = lake.read_arrow(tmp_path / name, "docs_raw").to_pylist()
        return sorted((r["doc_id"], r["record_no"], r["text"]) for r in rows)

    assert content("a") == content("b")
    (bad,) = lake.read_arrow(tmp_path / "b", "quarantine").to_pylist()
    assert bad["record_no"] == 18


def test_oversized_record_is_quarantined_through_spark(spark, lake_dir, tmp_path):
    (tmp_path / "x.jsonl").write_text('{"text": "small"}\n{"text": "' + "z" * 5000 + '"}\n')
    result = ingest(spark, lake_dir, [str(tmp_path / "x.jsonl")],
                    cfg=IngestConfig(max_record_bytes=1000, max_payload_bytes=64))
    assert (result.docs, result.quarantined) == (1, 1)
    (row,) = lake.read_arrow(lake_dir, "quarantine").to_pylist()
    assert row["reason"].startswith("record_too_large") and row["payload_truncated"] is True
    assert len(row["payload"]) == 64


def test_missing_input_is_a_clear_error(spark, lake_dir, tmp_path):
    with pytest.raises(InputError, match="matches no file"):
        ingest(spark, lake_dir, [str(tmp_path / "nope")])
    (tmp_path / "only.txt").write_text("x")
    with pytest.raises(InputError, match="unknown format"):
        ingest(spark, lake_dir, [str(tmp_path / "only.txt")])
