"""Ingest on a real SparkSession into real Delta tables: exact counts, idempotence, stable ids."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_engine import lake
from data_engine.errors import InputError
from data_engine.ingest import plan
from data_engine.ingest import run as ingest_run
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


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rows(lake_dir: str | Path, table: str) -> list[dict]:
    return lake.read_arrow(lake_dir, table).to_pylist()


def test_row_group_splits_match_whole_file_reading_and_log_the_files_sha256(spark, tmp_path):
    texts = [f"parquet doc {i} " + "ข้อความ" * (i % 5) for i in range(3000)]
    path = tmp_path / "in" / "big.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"text": texts, "lang": ["th"] * 3000}), path, row_group_size=250)
    files, _ = plan.discover([str(path)])
    assert len(ingest_run._plan_work(files, {}, 4096, 2).units) > 2  # cut into ranges + a hashing unit
    whole = ingest(spark, str(tmp_path / "a"), [str(path)])
    split = ingest(spark, str(tmp_path / "b"), [str(path)], cfg=IngestConfig(split_bytes=4096))
    assert whole.docs == split.docs == 3000

    def content(name: str) -> list[tuple]:
        return sorted((r["doc_id"], r["record_no"], r["text"]) for r in _rows(tmp_path / name, "docs_raw"))

    # doc_id: SHA-256 over (source, url, text) joined by U+001F; the source is the file's stem.
    expected_id = {t: hashlib.sha256(f"big\x1f\x1f{t}".encode()).hexdigest()[:32] for t in texts}
    assert content("a") == content("b") == sorted((expected_id[t], i + 1, t) for i, t in enumerate(texts))
    for name in ("a", "b"):
        (entry,) = lake.read_arrow(tmp_path / name, "ingest_log").to_pylist()
        assert entry["file_digest"] == _sha256(path) and entry["records_read"] == 3000


def test_every_format_is_logged_with_the_sha256_of_its_bytes(spark, lake_dir, tmp_path):
    src = tmp_path / "in"
    write_corpus(src)
    lines = [json.dumps({"text": f"line {i} " + "kata " * (i % 11)}) for i in range(400)]
    (src / "large.jsonl").write_text("\n".join(lines) + "\n")  # cut into ranges, hashed on its own
    ingest(spark, lake_dir, [str(src)], cfg=IngestConfig(split_bytes=2048))
    log = {Path(r["path"]).name: r["file_digest"] for r in lake.read_arrow(lake_dir, "ingest_log").to_pylist()}
    assert log == {p.name: _sha256(p) for p in src.iterdir() if p.name != "README.txt"}
    (big,) = [r for r in _rows(lake_dir, "docs_raw") if r["text"] == json.loads(lines[399])["text"]]
    assert big["record_no"] == 400  # line numbers across ranges without a counting pass


def test_byte_identical_inputs_of_one_batch_are_read_once(spark, lake_dir, tmp_path):
    write_corpus(tmp_path / "in")
    shutil.copy(tmp_path / "in" / "good.jsonl", tmp_path / "in" / "zz-copy.jsonl")
    result = ingest(spark, lake_dir, [str(tmp_path / "in")])
    assert result.files == 6 and result.skipped_files == 1 and result.docs == 7
    assert {Path(r["source_file"]).name for r in lake.read_arrow(lake_dir, "docs_raw").to_pylist()} >= {"good.jsonl"}
    assert "zz-copy.jsonl" not in {Path(r["path"]).name for r in lake.read_arrow(lake_dir, "ingest_log").to_pylist()}


def test_only_files_a_logged_file_could_equal_are_hashed_before_reading(spark, lake_dir, tmp_path):
    write_corpus(tmp_path / "old")
    ingest(spark, lake_dir, [str(tmp_path / "old")])
    new = tmp_path / "new"
    new.mkdir()
    shutil.copy(tmp_path / "old" / "bad.jsonl", new / "renamed.jsonl")  # logged bytes, another name
    (new / "fresh.jsonl").write_text(json.dumps({"text": "a size no logged file has" * 7}) + "\n")
    (new / "same-size.jsonl").write_bytes(b"x" * (tmp_path / "old" / "good.jsonl").stat().st_size)
    files, _ = plan.discover([str(new)])
    prior = ingest_run._prior(spark, lake_dir, files)
    logged = {r["size"] for r in lake.read_arrow(lake_dir, "ingest_log").to_pylist()}
    assert prior.sizes == logged & {f.size for f in files}  # the driver got only rows these files could match
    todo, known = ingest_run._fresh(spark, files, prior)
    assert set(known) == {str((new / n).resolve()) for n in ("renamed.jsonl", "same-size.jsonl")}
    assert sorted(Path(f.path).name for f in todo) == ["fresh.jsonl", "same-size.jsonl"]
    result = ingest(spark, lake_dir, [str(new)])
    assert (result.skipped_files, result.files) == (1, 2)


def test_repeats_get_the_same_ids_whether_joined_back_by_broadcast_or_not(spark, tmp_path, monkeypatch):
    write_corpus(tmp_path / "in")
    good = tmp_path / "in" / "good.jsonl"
    ids = []
    for name, limit in (("lake1", ingest_run._BROADCAST_IDS), ("lake2", 0)):
        monkeypatch.setattr(ingest_run, "_BROADCAST_IDS", limit)
        for batch in ("one", "two"):
            copy = tmp_path / batch / "good.jsonl"
            copy.parent.mkdir(exist_ok=True)
            copy.write_bytes(good.read_bytes() + (b"\n" * (batch == "two")))  # other bytes, same records
            ingest(spark, str(tmp_path / name), [str(copy)], source="web")
        ids.append(sorted((r["doc_id"], r["batch_id"]) for r in _rows(tmp_path / name, "docs_raw")))
    assert ids[0] == ids[1]
    suffixes = sorted(i.partition("-")[2] for i, _ in ids[0])
    assert suffixes == ["", "", "", "", "1", "1", "1", "1", "2", "3"]  # per batch 4 triples, one of them twice
