"""Find the input files, cut them into splits and pack the splits into tasks of about equal work."""

from __future__ import annotations

import glob
import hashlib
import heapq
from dataclasses import dataclass
from pathlib import Path

from data_engine.digests import file_digest
from data_engine.errors import InputError
from data_engine.ingest.records import Split, read_failed

_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".jsonl.gz": "jsonl.gz",
            ".json.gz": "jsonl.gz", ".ndjson.gz": "jsonl.gz", ".parquet": "parquet"}


@dataclass(frozen=True)
class InputFile:
    path: str
    format: str
    size: int


def file_format(path: str | Path) -> str | None:
    name = Path(path).name.lower()
    for suffix in sorted(_FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return _FORMATS[suffix]
    return None


def discover(inputs: list[str]) -> tuple[list[InputFile], list[str]]:
    """Files named by `inputs` (files, directories searched recursively, globs).

    Returns the readable inputs sorted by path and the paths that were skipped because their
    extension is not a known format (reported to the user, never silently dropped). A file named
    explicitly with an unknown extension is an error.
    """
    found: dict[str, InputFile] = {}
    ignored: list[str] = []
    for spec in inputs:
        explicit = not glob.has_magic(spec)
        matches = [spec] if explicit else sorted(glob.glob(spec, recursive=True))
        if not matches or not all(Path(m).exists() for m in matches):
            raise InputError(f"input {spec!r} matches no file or directory")
        for match in matches:
            root = Path(match)
            for file in _files_under(root):
                fmt = file_format(file)
                if fmt is None:
                    if explicit and not root.is_dir():
                        raise InputError(f"input file {file} has an unknown format; expected one of "
                                         f"{', '.join(sorted(_FORMATS))}")
                    ignored.append(str(file.resolve()))
                    continue
                resolved = str(file.resolve())
                found[resolved] = InputFile(resolved, fmt, file.stat().st_size)
    if not found:
        raise InputError(f"no input files of a known format in {inputs}"
                         + (f" (ignored: {ignored[:5]})" if ignored else ""))
    return [found[p] for p in sorted(found)], sorted(set(ignored))


def _files_under(root: Path) -> list[Path]:
    """The file itself, or the files below a directory minus hidden and `_`-prefixed ones
    (`.crc`, `_SUCCESS` and other writer debris)."""
    if not root.is_dir():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file()
                  and not any(part.startswith((".", "_")) for part in p.relative_to(root).parts))


def sha256_file(path: str) -> str:
    """The file's identity in `ingest_log`; an I/O error fails the task (and is retried)."""
    try:
        return file_digest(path)
    except OSError as exc:
        raise read_failed(path, exc, "(computing its SHA-256)") from exc


OPEN_COST = 4 * 1024 * 1024
"""What opening a file costs in bytes of reading (Spark's `openCostInBytes`): many small files are
packed into one task, never one task each."""
_READ_COST = {"jsonl": 1.0, "jsonl.gz": 4.0, "parquet": 3.0}
"""Parsing work per byte on disk, relative to plain JSONL (compressed bytes expand)."""
_HASH_COST = 0.1
"""Hashing a file is about ten times faster than parsing it."""


def split_size(files: list[InputFile], split_bytes: int, parallelism: int) -> int:
    """Bytes per split: `split_bytes` at most, less when that would leave cores idle (Spark's
    rule for file scans: total / parallelism, but never below the cost of opening a file)."""
    total = sum(f.size + OPEN_COST for f in files)
    return max(1, min(split_bytes, max(OPEN_COST, total // max(1, parallelism))))


def splits_for(file: InputFile, split_bytes: int) -> list[Split]:
    """Byte ranges of a JSONL or Parquet file larger than `split_bytes`; else the whole file in one
    split that hashes it while reading it. A gzip stream cannot be cut: one split, streamed."""
    if file.format == "jsonl.gz" or file.size <= split_bytes:
        return [Split(file.path, file.format, digest=True)]
    bounds = list(range(0, file.size, split_bytes)) + [file.size]
    return [Split(file.path, file.format, start, end if end < file.size else -1)
            for start, end in zip(bounds[:-1], bounds[1:], strict=True)]


def split_cost(split: Split, size: int) -> float:
    """Relative work of a split (`size`: its file's size), for packing splits into tasks."""
    length = (size if split.end < 0 else split.end) - split.start
    return _READ_COST.get(split.format, 1.0) * length + OPEN_COST


def hash_cost(size: int) -> float:
    return _HASH_COST * size + OPEN_COST


def pack(costs: list[float], bins: int) -> list[list[int]]:
    """Indexes of `costs` in at most `bins` groups of about equal total (largest first, each into the
    lightest group); every group non-empty, each group's indexes in ascending order."""
    bins = max(1, min(bins, len(costs)))
    heap = [(0.0, b) for b in range(bins)]
    groups: list[list[int]] = [[] for _ in range(bins)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, b = heapq.heappop(heap)
        groups[b].append(i)
        heapq.heappush(heap, (load + costs[i], b))
    return [sorted(g) for g in groups if g]


def batch_id(digests: list[str]) -> str:
    """Same set of input files → same batch id, so a re-run recognises its own commits."""
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()[:16]


def default_source(inputs: list[str]) -> str:
    """A source name from the first input: a directory's name or a file's stem."""
    spec = inputs[0].rstrip("/")
    parts = [p for p in Path(spec).parts if not glob.has_magic(p)]
    path = Path(*parts) if parts else Path(".")
    if glob.has_magic(spec) or path.is_dir():
        name = path.resolve().name
    else:
        name = path.name.split(".")[0]
    return name or "web"
