"""Record parsing without Spark: every input line becomes exactly one row with a reason."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_engine.ingest.records import Limits, Split, count_newlines, read_jsonl, read_parquet

LIMITS = Limits(max_record_bytes=200, max_payload_bytes=32)


def rows(path: Path, fmt: str = "jsonl", limits: Limits = LIMITS) -> list[dict]:
    if fmt == "parquet":
        return list(read_parquet(Split(str(path), fmt), limits))
    return list(read_jsonl(Split(str(path), fmt), limits))


def codes(result: list[dict]) -> list[str | None]:
    return [r["reason"].split(":")[0] if r["reason"] else None for r in result]


@pytest.mark.parametrize(("line", "code"), [
    (b'{"text": "unterminated', "invalid_json"),
    (b'{"text": "caf\xe9"}', "invalid_utf8"),
    (b'{"url": "https://a.example"}', "missing_text"),
    (b'{"text": null}', "null_text"),
    (b'{"text": 42}', "text_not_string"),
    (b'{"text": ["a"]}', "text_not_string"),
    (b'{"text": ""}', "empty_text"),
    (b'{"text": " \\n\\t "}', "empty_text"),
    (b'[1, 2]', "not_an_object"),
    (b'"just a string"', "not_an_object"),
    (b'{"text": "ok", "url": 7}', "field_not_string"),
    (b'{"text": "ok", "lang": {"x": 1}}', "field_not_string"),
    (b'{"text": "bad \\ud800 surrogate"}', "invalid_unicode"),
    (b'{"text": "ok", "meta": "\\udfff"}', "invalid_unicode"),
    (b'{"text": "' + b"x" * 300 + b'"}', "record_too_large"),
    (b'{"a": ' * 5000 + b"1" + b"}" * 5000, "invalid_json"),
])
def test_bad_line_is_one_quarantine_row_with_its_reason(tmp_path: Path, line: bytes, code: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(line + b"\n")
    limits = Limits(max_record_bytes=200_000 if code == "invalid_json" else 200, max_payload_bytes=32)
    (row,) = rows(path, limits=limits)
    assert row["kind"] == "bad"
    assert codes([row]) == [code]
    assert row["record_no"] == 1
    assert row["payload"] is not None and len(row["payload"].encode()) <= 32 * 4
    assert row["payload_size"] == len(line) + (1 if code == "record_too_large" else 0)


def test_good_record_keeps_text_exactly_and_other_fields_in_meta(tmp_path: Path) -> None:
    text = "  สวัสดีครับ\u200b\n\nline two\t "  # no normalisation at ingest
    record = {"text": text, "url": "https://th.example/a", "lang": "th_TH", "id": 17,
              "crawl": {"date": "2024-01-02"}, "score": 0.5}
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    (row,) = rows(path)
    assert row["kind"] == "doc" and row["reason"] is None
    assert row["text"] == text
    assert row["lang"] == "tha"
    assert row["id"] == "17"
    assert json.loads(row["meta"]) == {"crawl": {"date": "2024-01-02"}, "score": 0.5}


def test_unknown_language_tag_becomes_und_and_is_kept_in_meta(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a", "lang": "Klingon!!"}\n{"text": "b"}\n{"text": "c", "lang": "ko"}\n')
    got = rows(path)
    assert [r["lang"] for r in got] == ["und", "und", "ko"]
    assert json.loads(got[0]["meta"]) == {"lang": "Klingon!!"}


def test_blank_lines_bom_crlf_and_missing_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "one"}\r\n\r\n   \n{"text": "two"}\r\n{"text": "three"}')
    got = rows(path)
    assert [r["text"] for r in got] == ["one", "two", "three"]
    assert [r["record_no"] for r in got] == [1, 4, 5]


def test_empty_and_whitespace_only_files_are_one_quarantine_row(tmp_path: Path) -> None:
    for name, content in (("empty.jsonl", b""), ("blank.jsonl", b"\n  \n")):
        (tmp_path / name).write_bytes(content)
        assert codes(rows(tmp_path / name)) == ["empty_file"]
    gz = tmp_path / "empty.jsonl.gz"
    gz.write_bytes(gzip.compress(b""))
    assert codes(rows(gz, "jsonl.gz")) == ["empty_file"]


def test_gzip_and_truncated_gzip(tmp_path: Path) -> None:
    lines = [json.dumps({"text": os.urandom(40).hex()}) for _ in range(400)]
    data = gzip.compress("\n".join(lines).encode())
    good = tmp_path / "ok.jsonl.gz"
    good.write_bytes(data)
    assert [r["text"] for r in rows(good, "jsonl.gz")] == [json.loads(x)["text"] for x in lines]
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) // 2])
    got = rows(cut, "jsonl.gz")
    assert codes(got)[-1] == "unreadable_gzip"
    assert all(c is None for c in codes(got)[:-1]) and len(got) > 10


def test_huge_record_is_never_loaded_whole(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    big = b'{"text": "' + b"a" * 5_000_000 + b'"}'
    path.write_bytes(b'{"text": "before"}\n' + big + b'\n{"text": "after"}\n')
    got = rows(path, limits=Limits(max_record_bytes=1000, max_payload_bytes=100))
    assert codes(got) == [None, "record_too_large", None]
    assert got[1]["payload_size"] == len(big) + 1 and got[1]["payload_truncated"] is True
    assert len(got[1]["payload"]) == 100
    assert [r["text"] for r in (got[0], got[2])] == ["before", "after"]


def test_splits_give_the_same_rows_and_line_numbers_at_every_cut(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    lines = [b'{"text": "one"}', b"", b"broken", b'{"text": "\xe0\xb8\x81\xe0\xb8\xa3"}', b'{"x": 1}',
             b'{"text": "last"}']
    path.write_bytes(b"\n".join(lines))
    whole = [(r["record_no"], r["kind"], r["reason"], r["text"]) for r in rows(path)]
    size = path.stat().st_size
    for cut in range(1, size):
        first = read_jsonl(Split(str(path), "jsonl", 0, cut, 0), LIMITS)
        second = read_jsonl(Split(str(path), "jsonl", cut, -1, count_newlines(str(path), 0, cut)), LIMITS)
        assert [(r["record_no"], r["kind"], r["reason"], r["text"]) for r in [*first, *second]] == whole


def test_parquet_rows_wrong_schema_and_unreadable_file(tmp_path: Path) -> None:
    pq.write_table(pa.table({"text": ["ก", None, "", "ok"], "lang": ["th", "th", None, "vi"],
                             "n": [1, 2, 3, 4]}), tmp_path / "a.parquet")
    got = rows(tmp_path / "a.parquet", "parquet")
    assert codes(got) == [None, "null_text", "empty_text", None]
    assert [r["record_no"] for r in got] == [1, 2, 3, 4]
    assert json.loads(got[0]["meta"]) == {"n": 1} and got[3]["lang"] == "vie"
    assert got[1]["payload"] == '{"text": null, "lang": "th", "n": 2}'[:32]

    pq.write_table(pa.table({"body": ["a", "b", "c"]}), tmp_path / "b.parquet")
    assert codes(rows(tmp_path / "b.parquet", "parquet")) == ["missing_text"] * 3
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "c.parquet")
    assert codes(rows(tmp_path / "c.parquet", "parquet")) == ["text_not_string"] * 2
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "d.parquet")
    assert codes(rows(tmp_path / "d.parquet", "parquet")) == ["empty_file"]
    (tmp_path / "e.parquet").write_bytes(b"PAR1 this is not parquet")
    assert codes(rows(tmp_path / "e.parquet", "parquet")) == ["unreadable_parquet"]
    pq.write_table(pa.table({"text": pa.array([b"caf\xc3\xa9", b"\xff"], pa.binary())}), tmp_path / "f.parquet")
    got = rows(tmp_path / "f.parquet", "parquet")
    assert codes(got) == [None, "invalid_utf8"] and got[0]["text"] == "café"
