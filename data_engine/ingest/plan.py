"""Find the input files and cut them into splits the executors read in parallel."""

from __future__ import annotations

import glob
import hashlib
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


def splits_for(file: InputFile, split_bytes: int) -> list[Split]:
    """Byte ranges for large plain JSONL; one whole-file split for everything else."""
    if file.format != "jsonl" or file.size <= split_bytes:
        return [Split(file.path, file.format)]
    bounds = list(range(0, file.size, split_bytes)) + [file.size]
    return [Split(file.path, file.format, start, end if end < file.size else -1)
            for start, end in zip(bounds[:-1], bounds[1:], strict=True)]


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
