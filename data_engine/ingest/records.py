"""Turn the bytes of one input split into rows: a document, or a quarantine row with its reason.

Pure Python, no Spark: the executors run these inside `mapInPandas`, tests call them directly.
Every record that is read comes out as exactly one row, so `in = kept + quarantined` holds by
construction; nothing here raises on bad data.

Bad data and bad storage are told apart. Corruption (invalid JSON or UTF-8, a gzip stream that is
cut short or garbled, a Parquet file pyarrow cannot decode) is a property of the bytes: it is
quarantined, and a file-level problem marks the file incomplete. An I/O error (EIO, a timed-out
NFS or object-store read, a file that vanished) says nothing about the bytes: reading raises
`InputReadError`, which fails the Spark task so that Spark retries it (`spark.task.maxFailures`)
and, if every attempt fails, fails the job before anything is committed. Quarantining it instead
would record the file as ingested and lose the records after the failed read for good.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from data_engine.errors import InputError
from data_engine.ingest import reasons as R
from data_engine.langs import UNKNOWN, normalize_lang

COLUMNS = ("kind", "source_file", "record_no", "text", "url", "lang", "id", "meta",
           "payload", "payload_size", "payload_truncated", "reason")
KNOWN_FIELDS = ("text", "url", "lang", "id")
_BOM = b"\xef\xbb\xbf"


class InputReadError(InputError):
    """Reading an input file failed for a reason outside its bytes (an I/O error, not corruption).

    Raised on the executor so that the task fails and Spark retries it; never quarantined.
    """


def read_failed(path: str, exc: OSError, where: str = "") -> InputReadError:
    """The error to raise for an I/O error while reading `path`; its message names the file."""
    at = f" {where}" if where else ""
    return InputReadError(f"I/O error reading {path}{at}: {exc} (storage, not corruption: the task "
                          "fails so that Spark retries it)")


@dataclass(frozen=True)
class Limits:
    max_record_bytes: int = 16 * 1024 * 1024
    """Records (JSON lines, Parquet rows) larger than this are quarantined, not parsed."""
    max_payload_bytes: int = 64 * 1024
    """How much of a bad record's raw bytes the quarantine row keeps."""


@dataclass(frozen=True)
class Split:
    """A unit of reading work: a byte range of a JSONL file, or a whole gz/Parquet file."""

    path: str
    format: str  # "jsonl", "jsonl.gz", "parquet"
    start: int = 0
    end: int = -1  # -1: to the end of the file
    newlines_before: int = 0  # '\n' bytes in [0, start): gives 1-based line numbers


def _doc(path: str, no: int | None, text: str, url: str | None, lang: str, doc_id: str | None,
         meta: str) -> dict[str, Any]:
    return {"kind": "doc", "source_file": path, "record_no": no, "text": text, "url": url,
            "lang": lang, "id": doc_id, "meta": meta, "payload": None, "payload_size": None,
            "payload_truncated": None, "reason": None}


def _bad(path: str, no: int | None, why: str, raw: bytes | str | None, limits: Limits,
         size: int | None = None) -> dict[str, Any]:
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "backslashreplace")
    size = size if size is not None else (len(raw) if raw is not None else None)
    payload = None
    truncated = None
    if raw is not None:
        truncated = len(raw) > limits.max_payload_bytes or (size is not None and size > len(raw))
        payload = raw[: limits.max_payload_bytes].decode("utf-8", "backslashreplace")
    return {"kind": "bad", "source_file": path, "record_no": no, "text": None, "url": None,
            "lang": None, "id": None, "meta": None, "payload": payload, "payload_size": size,
            "payload_truncated": truncated, "reason": why}


def _typename(value: Any) -> str:
    return {dict: "object", list: "array", bool: "boolean", int: "number", float: "number",
            str: "string", type(None): "null"}.get(type(value), type(value).__name__)


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)


def record_to_row(obj: Any, path: str, no: int | None, raw: bytes | str, limits: Limits) -> dict[str, Any]:
    """Validate one decoded record (a JSON object or a Parquet row as a dict)."""
    if not isinstance(obj, dict):
        return _bad(path, no, R.reason(R.NOT_AN_OBJECT, f"record is a JSON {_typename(obj)}"), raw, limits)
    if "text" not in obj:
        return _bad(path, no, R.reason(R.MISSING_TEXT, "no 'text' field"), raw, limits)
    text = obj["text"]
    if text is None:
        return _bad(path, no, R.reason(R.NULL_TEXT, "'text' is null"), raw, limits)
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            return _bad(path, no, R.reason(R.INVALID_UTF8, f"'text' bytes: {exc.reason} at byte "
                                                           f"{exc.start}"), raw, limits)
    if not isinstance(text, str):
        return _bad(path, no, R.reason(R.TEXT_NOT_STRING, f"'text' is a {_typename(text)}"), raw, limits)
    if not text.strip():
        return _bad(path, no, R.reason(R.EMPTY_TEXT, "'text' is empty or whitespace only"), raw, limits)
    fields: dict[str, str | None] = {}
    for key in ("url", "lang"):
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            return _bad(path, no, R.reason(R.FIELD_NOT_STRING, f"'{key}' is a {_typename(value)}"),
                        raw, limits)
        fields[key] = value
    rid = obj.get("id")
    if rid is not None and not isinstance(rid, str):
        rid = json.dumps(rid, ensure_ascii=False, default=_json_default)
    lang = normalize_lang(fields["lang"])
    others = {k: v for k, v in obj.items() if k not in KNOWN_FIELDS}
    if lang == UNKNOWN and fields["lang"] not in (None, ""):
        others["lang"] = fields["lang"]  # unusable as a code, kept so nothing is lost
    try:
        meta = json.dumps(others, ensure_ascii=False, default=_json_default, allow_nan=False)
    except (ValueError, TypeError):
        meta = json.dumps(others, ensure_ascii=True, default=_json_default)
    for name, value in (("text", text), ("url", fields["url"]), ("id", rid), ("meta", meta)):
        if value is not None and not _encodable(value):
            return _bad(path, no, R.reason(R.INVALID_UNICODE, f"lone surrogate in '{name}'"), raw, limits)
    return _doc(path, no, text, fields["url"], lang, rid, meta)


def parse_json_line(line: bytes, path: str, no: int, limits: Limits) -> dict[str, Any]:
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _bad(path, no, R.reason(R.INVALID_UTF8, f"{exc.reason} at byte {exc.start}"), line, limits)
    try:
        obj = json.loads(decoded)
    except json.JSONDecodeError as exc:
        return _bad(path, no, R.reason(R.INVALID_JSON, f"{exc.msg} at column {exc.colno}"), line, limits)
    except (RecursionError, ValueError) as exc:
        return _bad(path, no, R.reason(R.INVALID_JSON, type(exc).__name__), line, limits)
    return record_to_row(obj, path, no, line, limits)


def _open_binary(split: Split) -> BinaryIO:
    handle = open(split.path, "rb")  # noqa: SIM115 - closed by the caller
    if split.format == "jsonl.gz":
        return gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[return-value]
    return handle


def _where(split: Split) -> str:
    end = "end" if split.end < 0 else str(split.end)
    return f"(bytes {split.start}-{end})"


def read_jsonl(split: Split, limits: Limits) -> Iterator[dict[str, Any]]:
    """Rows of the lines that start inside the split (Hadoop's rule), with 1-based line numbers.

    Raises:
        InputReadError: the file could not be opened or read (see the module docstring). A
            corrupt gzip stream is not an I/O error: the lines before it are kept and one
            file-level `unreadable_gzip` row (record_no null) marks the file incomplete.
    """
    try:
        stream = _open_binary(split)
    except OSError as exc:
        raise read_failed(split.path, exc, _where(split)) from exc
    with stream:
        reader = stream  # GzipFile buffers itself; lines decoded before a corrupt block still count
        line_no = split.newlines_before
        pos = split.start
        seen_any = False
        try:
            if split.start > 0:
                reader.seek(split.start - 1)
                if reader.read(1) != b"\n":  # mid-line: that line belongs to the previous split
                    skipped = _skip_line(reader, limits)
                    pos += skipped
                    line_no += 1
            while split.end < 0 or pos < split.end:
                line, size, oversized = _read_line(reader, limits)
                if size == 0:
                    break
                pos += size
                line_no += 1
                if line_no == 1 and line.startswith(_BOM):
                    line = line[len(_BOM):]
                if oversized:
                    seen_any = True
                    yield _bad(split.path, line_no, R.reason(R.RECORD_TOO_LARGE,
                               f"{size} bytes > limit {limits.max_record_bytes}"), line, limits, size=size)
                    continue
                if line.strip():  # blank lines separate nothing and carry no record
                    seen_any = True
                    yield parse_json_line(line, split.path, line_no, limits)
            if not seen_any and split.start == 0 and split.end < 0:
                yield _bad(split.path, None, R.reason(R.EMPTY_FILE, "no records in file"), b"", limits)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:  # BadGzipFile before OSError: a subclass
            yield _bad(split.path, None, R.reason(R.UNREADABLE_GZIP, f"{exc} (after line {line_no})"),
                       None, limits)
        except OSError as exc:
            raise read_failed(split.path, exc, f"{_where(split)} after line {line_no}") from exc


def _read_line(reader: Any, limits: Limits) -> tuple[bytes, int, bool]:
    """One line without its newline, its size in bytes including the newline, and whether it is
    over the record limit.

    A line longer than the limit is consumed in chunks and only its head is kept, so a
    multi-gigabyte 'record' never sits in memory.
    """
    chunk = reader.readline(limits.max_record_bytes + 2)
    if not chunk:
        return b"", 0, False
    size = len(chunk)
    line = chunk.rstrip(b"\r\n")
    if len(line) <= limits.max_record_bytes:
        return line, size, False
    head = chunk[: limits.max_payload_bytes]
    while not chunk.endswith(b"\n"):
        chunk = reader.readline(1 << 20)
        if not chunk:
            break
        size += len(chunk)
    return head, size, True


def _skip_line(reader: Any, limits: Limits) -> int:
    size = 0
    while True:
        more = reader.readline(1 << 20)
        size += len(more)
        if not more or more.endswith(b"\n"):
            return size


class _Watched(io.RawIOBase):
    """A binary file that remembers the OSError it raised.

    pyarrow reports Parquet corruption as OSError too ("Corrupt snappy compressed data"), and
    hands back a Python file's own exception unchanged; so an error is an I/O error exactly when
    the file object itself raised it.
    """

    def __init__(self, raw: Any) -> None:
        super().__init__()
        self._raw = raw
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            return int(self._raw.readinto(buffer))
        except OSError as exc:
            self.error = exc
            raise

    def seek(self, offset: int, whence: int = 0) -> int:
        try:
            return int(self._raw.seek(offset, whence))
        except OSError as exc:
            self.error = exc
            raise

    def tell(self) -> int:
        return int(self._raw.tell())

    def close(self) -> None:
        self._raw.close()
        super().close()


def read_parquet(split: Split, limits: Limits, batch_rows: int = 2000) -> Iterator[dict[str, Any]]:
    """Rows of a Parquet file; a file whose schema lacks a usable `text` quarantines every row.

    Raises:
        InputReadError: the file could not be opened or read. A file pyarrow cannot decode
            (bad magic, a corrupt page) is not an I/O error: the rows before the problem are kept
            and one file-level `unreadable_parquet` row (record_no null) marks the file incomplete.
    """
    try:
        handle = _Watched(open(split.path, "rb", buffering=0))  # noqa: SIM115 - closed below
    except OSError as exc:
        raise read_failed(split.path, exc) from exc
    with handle:
        yield from _parquet_rows(split, handle, limits, batch_rows)


def _parquet_rows(split: Split, handle: _Watched, limits: Limits, batch_rows: int) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(handle)
        names = pf.schema_arrow.names
    except Exception as exc:  # not Parquet, truncated footer, …
        if handle.error is not None:
            raise read_failed(split.path, handle.error) from exc
        yield _bad(split.path, None, R.reason(R.UNREADABLE_PARQUET, " ".join(str(exc).split())[:300]),
                   None, limits)
        return
    if pf.metadata.num_rows == 0:
        yield _bad(split.path, None, R.reason(R.EMPTY_FILE, f"Parquet file has no rows (columns: "
                                                           f"{', '.join(names)})"), b"", limits)
        return
    schema_problem = None
    if "text" not in names:
        schema_problem = R.reason(R.MISSING_TEXT, f"Parquet schema has no 'text' column "
                                                  f"(columns: {', '.join(names)})")
    row_no = 0
    try:
        for batch in pf.iter_batches(batch_size=batch_rows):
            for record in batch.to_pylist():
                row_no += 1
                raw = json.dumps(record, ensure_ascii=False, default=_json_default)
                if schema_problem:
                    yield _bad(split.path, row_no, schema_problem, raw, limits)
                elif len(raw.encode("utf-8", "surrogatepass")) > limits.max_record_bytes:
                    yield _bad(split.path, row_no, R.reason(R.RECORD_TOO_LARGE,
                               f"row > limit {limits.max_record_bytes} bytes"), raw, limits)
                else:
                    yield record_to_row(record, split.path, row_no, raw, limits)
    except Exception as exc:  # a corrupt page in the middle of the file
        if handle.error is not None:
            raise read_failed(split.path, handle.error, f"after row {row_no}") from exc
        yield _bad(split.path, None, R.reason(R.UNREADABLE_PARQUET,
                   f"{' '.join(str(exc).split())[:300]} (after row {row_no})"), None, limits)


def read_split(split: Split, limits: Limits) -> Iterator[dict[str, Any]]:
    if split.format == "parquet":
        return read_parquet(split, limits)
    return read_jsonl(split, limits)


def count_newlines(path: str, start: int, end: int) -> int:
    """'\\n' bytes in [start, end): the pre-pass that gives split line numbers.

    Raises:
        InputReadError: an I/O error, so that the task is retried like a failed read.
    """
    total = 0
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            remaining = end - start
            while remaining > 0:
                block = handle.read(min(remaining, 1 << 24))
                if not block:
                    break
                total += block.count(b"\n")
                remaining -= len(block)
    except OSError as exc:
        raise read_failed(path, exc, f"(counting lines in bytes {start}-{end})") from exc
    return total
