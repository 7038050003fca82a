"""Storage that fails with a real `OSError(EIO)` when the ingest reader reaches byte N of one file.

Used as Spark's Python daemon (`spark.python.daemon.module=faulty_storage`, this directory on
PYTHONPATH): the daemon replaces `builtins.open` and then runs PySpark's own daemon, so every
Python worker it forks — the ones that run ingest's `mapInPandas` — sees the faulty storage. No
Spark code and no sailyard code is replaced; the reader gets an OSError from a file object, as
it would from a flaky NFS mount.

The plan is a JSON file named by `$SAILYARD_FAULT_PLAN`, re-read at every open:
`{"path": <file>, "offset": N, "times": k, "state": <dir>}`. On a handle the ingest reader opened
(`read_jsonl`, `read_parquet` in data_engine/ingest/records.py — planning reads the file whole
first and is left alone), a read that covers byte N raises EIO while fewer than `k` faults are
recorded in `state` (`k < 0`: always). Each fault leaves `state/fault-<i>.json` with the split's start and
the read's position, so a test can tell which split failed and how many attempts there were.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import sys
from typing import Any

_READERS = {"read_jsonl", "read_parquet"}
_real_open = builtins.open


def _plan() -> dict[str, Any] | None:
    name = os.environ.get("SAILYARD_FAULT_PLAN")
    if not name or not os.path.exists(name):
        return None
    with _real_open(name, encoding="utf-8") as handle:
        return json.load(handle)


def _reader_split() -> Any:
    """The `split` argument of the ingest reader opening the file, or None outside the reader.

    Checked at open, not at read: pyarrow reads from its own I/O threads."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name in _READERS and frame.f_code.co_filename.endswith("records.py"):
            return frame.f_locals.get("split")
        frame = frame.f_back
    return None


def _record_fault(plan: dict[str, Any], split: Any, pos: int) -> bool:
    """Claim the next fault slot (atomically: two workers may race); False when all are used."""
    i = 0
    while plan["times"] < 0 or i < plan["times"]:
        try:
            fd = os.open(os.path.join(plan["state"], f"fault-{i}.json"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            i += 1
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump({"split_start": getattr(split, "start", None), "pos": pos, "pid": os.getpid()}, handle)
        return True
    return False


class _FaultyFile(io.RawIOBase):
    def __init__(self, path: str, plan: dict[str, Any], split: Any) -> None:
        super().__init__()
        self._raw = _real_open(path, "rb", buffering=0)
        self._plan = plan
        self._split = split

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def readinto(self, buffer: Any) -> int:
        pos = self._raw.tell()
        target = self._plan["offset"]
        if pos <= target < pos + len(buffer) and _record_fault(self._plan, self._split, pos):
            raise OSError(errno.EIO, os.strerror(errno.EIO), self._plan["path"])
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


def faulty_open(file: Any, mode: str = "r", buffering: int = -1, *args: Any, **kwargs: Any) -> Any:
    plan = _plan()
    if plan is None or mode != "rb" or not isinstance(file, str) or os.path.realpath(file) != plan["path"]:
        return _real_open(file, mode, buffering, *args, **kwargs)
    split = _reader_split()
    if split is None:
        return _real_open(file, mode, buffering, *args, **kwargs)
    raw = _FaultyFile(plan["path"], plan, split)
    return raw if buffering == 0 else io.BufferedReader(raw)


def install() -> None:
    builtins.open = faulty_open


if __name__ == "__main__":
    install()
    from pyspark.daemon import manager

    manager()
