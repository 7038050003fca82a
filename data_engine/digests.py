"""File digests, streamed in large blocks: one reader for every checksum sailyard records.

SHA-256 names inputs (`ingest_log`) and tokenizers (a digest others can recompute with
`sha256sum`); xxh3 checksums shard files (`shard_manifest`), where speed matters at TB scale.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

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


def mix64(h: Any) -> Any:
    """splitmix64's finaliser over a uint64 array: every output bit depends on every input bit, so
    polynomial rolling hashes (dedup shingles, contamination n-grams) are usable bit for bit."""
    import numpy as np

    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(30))
        h = h * np.uint64(0xBF58476D1CE4E5B9)
        h = h ^ (h >> np.uint64(27))
        h = h * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))
