"""File digests, streamed in large blocks: one reader for every checksum sailyard records.

SHA-256 names inputs (`ingest_log`) and tokenizers (a digest others can recompute with
`sha256sum`); xxh3 checksums shard files (`shard_manifest`), where speed matters at TB scale.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

Algorithm = Literal["sha256", "xxh3_64", "xxh3_128"]
_BLOCK = 1 << 22


def file_digest(path: str | Path, algorithm: Algorithm = "sha256") -> str:
    """Hex digest of a file's bytes; OSError propagates (callers decide what an I/O error means)."""
    if algorithm == "sha256":
        digest = hashlib.sha256()
    else:
        import xxhash

        digest = getattr(xxhash, algorithm)()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
