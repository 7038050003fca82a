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

import functools
import gzip
import hashlib
import io
import json
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

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
    """A unit of reading work: a byte range of a JSONL or Parquet file, or a whole gzip file.

    A JSONL range holds the lines that start inside it (Hadoop's rule); a Parquet range the row
    groups whose midpoint lies inside it (Spark's rule), so any cut gives every record once.
    """

    path: str
    format: str  # "jsonl", "jsonl.gz", "parquet"
    start: int = 0
    end: int = -1  # -1: to the end of the file
    newlines_before: int = 0  # '\n' bytes in [0, start): gives 1-based line numbers
    digest: bool = False
    """Compute the file's SHA-256 while reading it (whole-file splits only): the bytes are read once."""


@dataclass
class ReadFacts:
    """What reading a split learnt besides its rows; complete once the reader is exhausted."""

    digest: str | None = None
    """SHA-256 of the whole file, when the split asked for it."""
    newlines: int = 0
    """'\n' bytes in the split's JSONL range [start, end): the next split's `newlines_before`
    without a counting pre-pass."""


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


@functools.lru_cache(maxsize=4096)
def _lang(tag: str | None) -> str:
    """`normalize_lang`, remembered: a crawl carries a handful of distinct tags in millions of records."""
    return normalize_lang(tag)


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


_TO_JSON = json.JSONEncoder(ensure_ascii=False, default=_json_default)
_META_JSON = json.JSONEncoder(ensure_ascii=False, default=_json_default, allow_nan=False)
"""Made once: `json.dumps` with options builds a new encoder for every record."""


def record_to_row(obj: Any, path: str, no: int | None, raw: bytes | str, limits: Limits, *,
                  surrogates: bool = True) -> dict[str, Any]:
    """Validate one decoded record (a JSON object or a Parquet row as a dict).

    `surrogates=False` says the record cannot hold a lone surrogate (a JSON line without a `\\u`
    escape: valid UTF-8 never decodes to one), which skips re-encoding every field to check.
    """
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
    if not text or text.isspace():
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
        rid = _TO_JSON.encode(rid)
    lang = _lang(fields["lang"])
    others = {k: v for k, v in obj.items() if k not in KNOWN_FIELDS}
    if lang == UNKNOWN and fields["lang"] not in (None, ""):
        others["lang"] = fields["lang"]  # unusable as a code, kept so nothing is lost
    try:
        meta = _META_JSON.encode(others) if others else "{}"
    except (ValueError, TypeError):
        meta = json.dumps(others, ensure_ascii=True, default=_json_default)
    for name, value in (("text", text), ("url", fields["url"]), ("id", rid), ("meta", meta)):
        if surrogates and value is not None and not _encodable(value):
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
    return record_to_row(obj, path, no, line, limits, surrogates=b"\\u" in line)


_BLOCK = 256 * 1024
"""Bytes read at a time: few system calls, and a failed read still leaves the records before it."""
_TAIL_BLOCK = 8 * 1024
"""The first read past a split's end (its last line's remainder); doubles while that line goes on."""


def _where(split: Split) -> str:
    end = "end" if split.end < 0 else str(split.end)
    return f"(bytes {split.start}-{end})"


class _Hashing(io.RawIOBase):
    """A raw file whose bytes go through SHA-256 as they are read: the file is hashed by the same
    read that parses it (for gzip, the compressed bytes it decompresses)."""

    def __init__(self, raw: Any) -> None:
        super().__init__()
        self._raw = raw
        self._sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)
        if n:
            self._sha.update(memoryview(buffer)[:n])
        return int(n or 0)

    def hexdigest(self) -> str:
        """The digest of the whole file: bytes nobody parsed (after a corrupt gzip block, trailing
        data) are read and hashed first."""
        while block := self._raw.read(_BLOCK):
            self._sha.update(block)
        return self._sha.hexdigest()


class _Lines:
    """Lines of a byte stream from file offset `pos`, read in blocks (no per-line system call).

    `next_line` gives (content without its line ending, size in bytes including the newline, and
    whether the content is over the record limit); `newline` then says whether it had one.
    Content over the limit is never buffered whole: only its first `head` bytes are kept and the
    rest is read past.
    """

    def __init__(self, read: Any, pos: int, end: int, limits: Limits) -> None:
        self._read = read
        self.pos = pos  # file offset of the next unconsumed byte
        self._end = end
        self._max = limits.max_record_bytes
        self._head = limits.max_payload_bytes
        self._buf = b""
        self._i = 0  # the next unconsumed byte in _buf
        self._eof = False
        self._tail = _TAIL_BLOCK
        self.newline = False  # whether the line just consumed ended with a newline

    def _more(self) -> bool:
        """Append one block to the buffer (dropping what was consumed); False at end of file."""
        if self._eof:
            return False
        at = self.pos + len(self._buf) - self._i  # file offset of the next read
        if self._end < 0 or at < self._end:
            want = _BLOCK if self._end < 0 else min(_BLOCK, self._end - at)
        else:  # past the split: only the last line's remainder is wanted
            want, self._tail = self._tail, min(2 * self._tail, _BLOCK)
        chunk = self._read(want)
        if not chunk:
            self._eof = True
            return False
        self._buf = self._buf[self._i:] + chunk if self._i < len(self._buf) else chunk
        self._i = 0
        return True

    def skip_line(self) -> int:
        """Consume up to and including the next newline; returns the bytes consumed."""
        start = self.pos
        while True:
            nl = self._buf.find(b"\n", self._i)
            if nl >= 0:
                self.pos += nl + 1 - self._i
                self._i = nl + 1
                self.newline = True
                return self.pos - start
            self.pos += len(self._buf) - self._i
            self._buf, self._i = b"", 0
            if not self._more():
                self.newline = False
                return self.pos - start

    def next_line(self) -> tuple[bytes, int, bool]:
        buf, i = self._buf, self._i
        nl = buf.find(b"\n", i)
        while nl < 0 and len(buf) - i <= self._max + 1:
            searched = len(buf) - i
            if not self._more():
                break
            buf, i = self._buf, self._i
            nl = buf.find(b"\n", i + searched)
        if nl >= 0 or self._eof:  # the whole line is in the buffer
            stop = nl if nl >= 0 else len(buf)
            size = stop - i + (1 if nl >= 0 else 0)
            raw = buf[i:stop]
            self._i = i + size
            self.pos += size
            self.newline = nl >= 0
            line = raw.rstrip(b"\r\n")
            if len(line) <= self._max:
                return line, size, False
            return raw[: self._head], size, True
        head = buf[i: i + self._head]  # over the limit with no end in sight: read past the rest
        size = len(buf) - i
        self.pos += size
        self._buf, self._i = b"", 0
        self.newline = False
        while self._more():
            nl = self._buf.find(b"\n")
            if nl >= 0:
                size += nl + 1
                self.pos += nl + 1
                self._i = nl + 1
                self.newline = True
                break
            size += len(self._buf)
            self.pos += len(self._buf)
            self._buf = b""
        return head, size, True


def read_jsonl(split: Split, limits: Limits, facts: ReadFacts | None = None) -> Iterator[dict[str, Any]]:
    """Rows of the lines that start inside the split (Hadoop's rule), with 1-based line numbers.

    `facts` (when given) gets the split's newline count and, for `split.digest`, the file's
    SHA-256 once the rows are exhausted.

    Raises:
        InputReadError: the file could not be opened or read (see the module docstring). A
            corrupt gzip stream is not an I/O error: the lines before it are kept and one
            file-level `unreadable_gzip` row (record_no null) marks the file incomplete.
    """
    if split.digest and (split.start > 0 or split.end >= 0):
        raise ValueError(f"only a whole-file split can hash its file: {split}")
    facts = facts if facts is not None else ReadFacts()
    try:
        raw = open(split.path, "rb", buffering=0)  # noqa: SIM115 - closed below
    except OSError as exc:
        raise read_failed(split.path, exc, _where(split)) from exc
    with raw:
        source: Any = _Hashing(raw) if split.digest else raw
        line_no = split.newlines_before
        newlines = 0
        seen_any = False
        try:
            if split.start > 0:
                raw.seek(split.start - 1)
                mid_line = raw.read(1) != b"\n"  # mid-line: that line belongs to the previous split
            if split.format == "jsonl.gz":  # read1: what was decoded before a corrupt block still counts
                read = gzip.GzipFile(fileobj=source, mode="rb").read1
            else:
                read = source.read
            lines = _Lines(read, split.start, split.end, limits)
            if split.start > 0 and mid_line:
                lines.skip_line()
                line_no += 1
                newlines += lines.newline and (split.end < 0 or lines.pos <= split.end)
            while split.end < 0 or lines.pos < split.end:
                at = lines.pos
                line, size, oversized = lines.next_line()
                if size == 0:
                    break
                line_no += 1
                newlines += lines.newline and (split.end < 0 or at + size <= split.end)  # in the range
                if at == 0 and line.startswith(_BOM):
                    line = line[len(_BOM):]
                if oversized:
                    seen_any = True
                    yield _bad(split.path, line_no, R.reason(R.RECORD_TOO_LARGE,
                               f"{size} bytes > limit {limits.max_record_bytes}"), line, limits, size=size)
                    continue
                if line and not line.isspace():  # blank lines separate nothing and carry no record
                    seen_any = True
                    yield parse_json_line(line, split.path, line_no, limits)
            if not seen_any and split.start == 0 and split.end < 0:
                yield _bad(split.path, None, R.reason(R.EMPTY_FILE, "no records in file"), b"", limits)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:  # BadGzipFile before OSError: a subclass
            yield _bad(split.path, None, R.reason(R.UNREADABLE_GZIP, f"{exc} (after line {line_no})"),
                       None, limits)
        except OSError as exc:
            raise read_failed(split.path, exc, f"{_where(split)} after line {line_no}") from exc
        facts.newlines = newlines
        if isinstance(source, _Hashing):
            try:
                facts.digest = source.hexdigest()
            except OSError as exc:
                raise read_failed(split.path, exc, "(computing its SHA-256)") from exc


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


def read_parquet(split: Split, limits: Limits, batch_rows: int = 2000,
                 facts: ReadFacts | None = None) -> Iterator[dict[str, Any]]:
    """Rows of the split's row groups; a file whose schema lacks a usable `text` quarantines every row.

    Row numbers count from the file's first row whichever row groups the split holds (the footer
    says how many rows come before them). A file-level problem of the whole file (unreadable
    footer, no rows) is reported by the split that starts the file only. `split.digest` hashes
    the file after its rows are read, through the same handle (`facts.digest`).

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
        if split.digest and facts is not None:
            try:
                handle.seek(0)
                sha = hashlib.sha256()
                while block := handle.read(_BLOCK):
                    sha.update(block)
            except OSError as exc:
                raise read_failed(split.path, exc, "(computing its SHA-256)") from exc
            facts.digest = sha.hexdigest()


def row_groups(metadata: Any, start: int = 0, end: int = -1) -> list[tuple[int, int]]:
    """(index, rows before it) of the row groups whose midpoint lies in bytes [start, end)."""
    out = []
    before = 0
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        if start <= 0 and end < 0:
            out.append((index, before))
        else:
            offsets = [4]  # a group without columns sits at the file's start
            if group.num_columns:
                first = group.column(0)
                offsets = [o for o in (first.dictionary_page_offset, first.data_page_offset) if o]
            size = sum(group.column(c).total_compressed_size for c in range(group.num_columns))
            mid = min(offsets) + size // 2
            if start <= mid and (end < 0 or mid < end):
                out.append((index, before))
        before += group.num_rows
    return out


def _parquet_rows(split: Split, handle: _Watched, limits: Limits, batch_rows: int) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    first = split.start == 0  # the split that reports problems of the whole file
    try:
        pf = pq.ParquetFile(handle)
        names = pf.schema_arrow.names
        groups = row_groups(pf.metadata, split.start, split.end)
    except Exception as exc:  # not Parquet, truncated footer, …
        if handle.error is not None:
            raise read_failed(split.path, handle.error) from exc
        if first:
            yield _bad(split.path, None, R.reason(R.UNREADABLE_PARQUET, " ".join(str(exc).split())[:300]),
                       None, limits)
        return
    if pf.metadata.num_rows == 0:
        if first:
            yield _bad(split.path, None, R.reason(R.EMPTY_FILE, f"Parquet file has no rows (columns: "
                                                               f"{', '.join(names)})"), b"", limits)
        return
    schema_problem = None
    if "text" not in names:
        schema_problem = R.reason(R.MISSING_TEXT, f"Parquet schema has no 'text' column "
                                                  f"(columns: {', '.join(names)})")
    row_no = 0
    try:
        for index, before in groups:
            row_no = before
            for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[index]):
                for record in batch.to_pylist():
                    row_no += 1
                    raw = _TO_JSON.encode(record)
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


def read_split(split: Split, limits: Limits, facts: ReadFacts | None = None) -> Iterator[dict[str, Any]]:
    if split.format == "parquet":
        return read_parquet(split, limits, facts=facts)
    return read_jsonl(split, limits, facts)


def count_newlines(path: str, start: int, end: int) -> int:
    """'\\n' bytes in [start, end) of a file, counted on their own: what `ReadFacts.newlines` of
    a split over that range reports while reading it (tests and tools check one by the other).

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
