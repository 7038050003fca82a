"""Record parsing without Spark: every input line becomes exactly one row with a reason."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_engine.ingest import records
from data_engine.ingest.records import (
    Limits,
    ReadFacts,
    Split,
    count_newlines,
    read_jsonl,
    read_parquet,
    read_split,
    row_groups,
)

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


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "parquet"])
def test_a_whole_file_split_hashes_the_bytes_it_parses(tmp_path: Path, fmt: str) -> None:
    texts = [f"doc {i} " + os.urandom(200).hex() for i in range(3000)]
    path = tmp_path / f"in.{fmt}"
    data = "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()
    if fmt == "parquet":
        pq.write_table(pa.table({"text": texts}), path, row_group_size=700)
    else:
        path.write_bytes(gzip.compress(data) if fmt == "jsonl.gz" else data)
    facts = ReadFacts()
    got = list(read_split(Split(str(path), fmt, digest=True), Limits(), facts))
    assert [r["text"] for r in got] == texts
    assert facts.digest == _sha256(path)  # the file's bytes (gzip: compressed), not the records
    assert ReadFacts().digest is None and not any("digest" in r for r in got)


def test_a_gzip_cut_short_is_still_hashed_whole(tmp_path: Path) -> None:
    data = gzip.compress(b"".join(json.dumps({"text": os.urandom(30).hex()}).encode() + b"\n" for _ in range(2000)))
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) // 2] + b"trailing garbage after the cut")
    facts = ReadFacts()
    got = list(read_split(Split(str(cut), "jsonl.gz", digest=True), LIMITS, facts))
    assert codes(got)[-1] == "unreadable_gzip" and facts.digest == _sha256(cut)


def test_a_range_counts_its_newlines_while_reading(tmp_path: Path) -> None:
    rng = random.Random(3)
    lines = [b'{"text": "' + b"w" * rng.randrange(0, 400) + b'"}' if rng.random() < 0.9 else b"" for _ in range(500)]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    size = path.stat().st_size
    whole = [(r["record_no"], r["text"]) for r in rows(path)]
    cuts = sorted(rng.sample(range(1, size), 12))
    got, before = [], 0
    for start, end in zip([0, *cuts], [*cuts, size], strict=True):
        facts = ReadFacts()
        part = list(read_jsonl(Split(str(path), "jsonl", start, end if end < size else -1), LIMITS, facts))
        if end < size:
            assert facts.newlines == count_newlines(str(path), start, end)
        got += [(r["record_no"] + before, r["text"]) for r in part]  # numbered from the range's start
        before += facts.newlines
    assert got == whole


def test_small_blocks_keep_lines_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Lines that span many blocks, a record over the limit, CRLF, a BOM: the same rows whatever the block size.
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "a"}\r\n' + b'{"text": "' + b"x" * 900 + b'"}\n\n'
                     + b'{"text": "' + b"y" * 150 + b'"}\r\n{"text": "end"}')
    expected = [(r["record_no"], r["kind"], r["reason"], r["text"], r["payload_size"]) for r in rows(path)]
    assert [e[1] for e in expected] == ["doc", "bad", "doc", "doc"] and expected[1][4] == 913
    for block, tail in ((7, 3), (64, 1), (1, 1)):
        monkeypatch.setattr(records, "_BLOCK", block)
        monkeypatch.setattr(records, "_TAIL_BLOCK", tail)
        got = [(r["record_no"], r["kind"], r["reason"], r["text"], r["payload_size"]) for r in rows(path)]
        assert got == expected


def test_parquet_ranges_take_each_row_group_once_with_file_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "big.parquet"
    texts = [f"row {i} " + os.urandom(40).hex() for i in range(5000)]
    pq.write_table(pa.table({"text": texts, "n": list(range(5000))}), path, row_group_size=600)
    size = path.stat().st_size
    whole = [(r["record_no"], r["text"]) for r in rows(path, "parquet")]
    assert whole == [(i + 1, t) for i, t in enumerate(texts)]
    for parts in (2, 3, 7, 40):
        bounds = [size * k // parts for k in range(parts + 1)]
        got = []
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            got += [(r["record_no"], r["text"]) for r in
                    read_parquet(Split(str(path), "parquet", start, end if end < size else -1), LIMITS)]
        assert got == whole  # every row group read by exactly one range, numbered from the file's start
    meta = pq.ParquetFile(path).metadata
    assert [g for g, _ in row_groups(meta)] == list(range(meta.num_row_groups))


def test_parquet_file_level_problems_come_from_the_first_range_only(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"PAR1" + os.urandom(5000))
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    for name in ("bad.parquet", "empty.parquet"):
        size = (tmp_path / name).stat().st_size
        first = list(read_parquet(Split(str(tmp_path / name), "parquet", 0, size // 2), LIMITS))
        second = list(read_parquet(Split(str(tmp_path / name), "parquet", size // 2, -1), LIMITS))
        assert len(first) == 1 and first[0]["record_no"] is None and second == []
