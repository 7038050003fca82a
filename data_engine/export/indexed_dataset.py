"""Megatron-Core's indexed dataset format (`.bin` + `.idx`, header `MMIDIDX`), written in parts.

The format is small and stable: the `.bin` is every document's token ids back to back; the
`.idx` holds a header, then per sequence its length (int32) and byte offset (int64), then the
document boundaries (int64, one sequence per document here). Writing it ourselves keeps torch and
megatron out of the Spark executors; megatron-core's `IndexedDataset` reads the result (tested).
An index is written block by block (`write_index_chunks`), so the task writing a part holds one
block of lengths, never the part's whole index.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INDEX_HEADER = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
_HEADER_BYTES = 34  # magic (9), version (8), dtype code (1), sequence count (8), document entries (8)
_DTYPE_CODES = {np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype(np.int16): 3,
                np.dtype(np.int32): 4, np.dtype(np.int64): 5, np.dtype(np.float64): 6,
                np.dtype(np.float32): 7, np.dtype(np.uint16): 8}
_BLOCK_DOCS = 1 << 20  # documents per block when an index is written piecewise


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (Megatron's rule, < 65,500), else int32 (Qwen2's 151k vocab)."""
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


def write_index(idx_path: str | Path, lengths: np.ndarray, dtype: np.dtype) -> str:
    """The `.idx` for documents of `lengths` tokens each, stored back to back in the `.bin`;
    returns its xxh3-128."""
    lengths = np.asarray(lengths, dtype=np.int32)
    return write_index_chunks(idx_path, lambda: iter([lengths]), dtype)[2]


def write_index_chunks(idx_path: str | Path, chunks: Callable[[], Iterator[np.ndarray]],
                       dtype: np.dtype) -> tuple[int, int, str]:
    """The `.idx` of the documents whose lengths `chunks()` yields, block by block.

    `chunks` is called once per section (counts, lengths, pointers), so memory stays one block
    however many documents a part holds. Returns (documents, tokens, xxh3-128 of the file): the
    checksum is computed while writing, so nobody reads the file back to record it.
    """
    import xxhash

    dtype = np.dtype(dtype)
    documents = tokens = 0
    for block in chunks():
        documents += len(block)
        tokens += int(np.asarray(block, dtype=np.int64).sum())
    checksum = xxhash.xxh3_128()

    def put(data: bytes) -> None:
        checksum.update(data)
        out.write(data)

    with open(idx_path, "wb") as out:
        put(INDEX_HEADER + struct.pack("<Q", INDEX_VERSION) + struct.pack("<B", _DTYPE_CODES[dtype])
            + struct.pack("<Q", documents) + struct.pack("<Q", documents + 1))
        for block in chunks():
            put(np.asarray(block, dtype=np.int32).tobytes(order="C"))
        offset = 0  # byte offset of the next document in the .bin
        for block in chunks():
            sizes = np.asarray(block, dtype=np.int64) * dtype.itemsize
            ends = offset + np.cumsum(sizes)
            put((ends - sizes).tobytes(order="C"))
            offset = int(ends[-1]) if len(ends) else offset
        for lo in range(0, documents + 1, _BLOCK_DOCS):
            put(np.arange(lo, min(lo + _BLOCK_DOCS, documents + 1), dtype=np.int64).tobytes(order="C"))
    return documents, tokens, checksum.hexdigest()


def read_index(idx_path: str | Path) -> tuple[np.dtype, np.ndarray]:
    """(dtype, per-document lengths) of an `.idx`: for checks and reports without megatron.

    The lengths are memory-mapped, not read: a shard of 100M documents has a 1.2 GB index.
    """
    info = index_info(idx_path)
    return info.dtype, _lengths(idx_path, info.sequences)


@dataclass(frozen=True)
class IndexInfo:
    """What an `.idx` says about its shard: the trainer compares it with the manifest."""

    dtype: np.dtype
    sequences: int
    documents: int  # entries of the document index minus one
    tokens: int


def index_info(idx_path: str | Path) -> IndexInfo:
    """Header counts and the token total of an `.idx`; raises ValueError when it is not one."""
    with open(idx_path, "rb") as handle:
        head = handle.read(_HEADER_BYTES)
    if len(head) < _HEADER_BYTES or head[:9] != INDEX_HEADER:
        raise ValueError(f"{idx_path} is not a Megatron index (bad header)")
    dtype = next((d for d, c in _DTYPE_CODES.items() if c == head[17]), None)
    if dtype is None:
        raise ValueError(f"{idx_path} has unknown dtype code {head[17]}")
    (sequences,) = struct.unpack("<Q", head[18:26])
    (doc_entries,) = struct.unpack("<Q", head[26:34])
    need = _HEADER_BYTES + sequences * 12 + doc_entries * 8
    if Path(idx_path).stat().st_size != need:
        raise ValueError(f"{idx_path} has {Path(idx_path).stat().st_size} bytes, its header says {need}")
    tokens = int(_lengths(idx_path, sequences).sum(dtype=np.int64))
    return IndexInfo(dtype, int(sequences), max(int(doc_entries) - 1, 0), tokens)


def _lengths(idx_path: str | Path, sequences: int) -> np.ndarray:
    if sequences == 0:  # numpy cannot map zero bytes
        return np.zeros(0, dtype=np.int32)
    return np.memmap(idx_path, dtype=np.int32, mode="r", offset=_HEADER_BYTES, shape=(sequences,))


def file_checksum(path: str | Path) -> str:
    """xxh3-128 of a file, streamed: the `.bin`/`.idx` checksums of `shard_manifest`."""
    from data_engine.digests import file_digest

    return file_digest(path, "xxh3_128")
