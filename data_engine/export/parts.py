"""A language's shard as several parts, each written by one Spark task, cut by the data alone.

Tokenisation leaves, per Spark task and language, a *piece*: that task's documents of the language
in `doc_id` order (a `.bin` of tokens and a `.lengths.npy`). Tasks take contiguous ranges of the
(lang, doc_id) order, so a language's pieces in task order are all its documents in `doc_id`
order whatever the task boundaries were, and a document's token offset within its language is a
fact of the data. A language of T tokens is cut into n = ⌈T / part_tokens⌉ windows of ⌈T / n⌉
tokens; part w holds the documents that *start* in window w. Hence:

- the same documents and `part_bytes` give the same parts, byte for byte, on any cluster shape;
- parts are near-equal (no last part of a few documents, which would leave a Megatron split
  part empty), and none exceeds its window by more than its last document;
- one task per window copies its documents' byte range out of the pieces it overlaps and writes
  its `.idx`, both checksummed while written; only small rows of counts reach the driver.

Windows no document starts in (a document longer than a window spans them) give no part; the
parts left are numbered k = 0, 1, … in window order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_engine.export.indexed_dataset import write_index_chunks

_COPY_BLOCK = 1 << 24  # bytes per read when copying a piece's range
_LENGTH_BLOCK = 1 << 20  # document lengths per block when scanning a piece
NOT_SHARED = "is not visible to this executor"


@dataclass(frozen=True)
class Piece:
    """One task's documents of one language, as tokenisation left them."""

    bin_path: str
    lengths_path: str
    offset: int  # token offset of its first document within the language
    docs: int
    tokens: int


@dataclass(frozen=True)
class Window:
    """The documents of `lang` starting at token offsets [lo, hi), and the pieces that hold them."""

    lang: str
    index: int
    lo: int
    hi: int
    pieces: tuple[Piece, ...]


def window_tokens(total: int, part_tokens: int | None) -> int:
    """Tokens per window: ⌈T / n⌉ with n = ⌈T / part_tokens⌉ (None: one window for everything)."""
    if part_tokens is None or total <= part_tokens:
        return max(total, 1)
    n = -(-total // part_tokens)
    return -(-total // n)


def plan_windows(lang: str, pieces: Sequence[tuple[str, str, int, int]], part_tokens: int | None) -> list[Window]:
    """The windows of one language from its pieces `(bin, lengths, docs, tokens)` in task order."""
    placed, offset = [], 0
    for bin_path, lengths_path, docs, tokens in pieces:
        if docs > 0:
            placed.append(Piece(bin_path, lengths_path, offset, int(docs), int(tokens)))
            offset += int(tokens)
    if offset == 0:
        return []
    size = window_tokens(offset, part_tokens)
    windows = []
    for w in range(-(-offset // size)):
        lo, hi = w * size, (w + 1) * size
        overlapping = tuple(p for p in placed if p.offset < hi and p.offset + p.tokens > lo)
        windows.append(Window(lang, w, lo, hi, overlapping))
    return windows


def doc_span(lengths: np.ndarray, offset: int, lo: int, hi: int) -> tuple[int, int, int, int]:
    """(a, b, ta, tb): documents a … b-1 of a piece starting at language offset `offset` begin in
    [lo, hi); ta and tb are the piece-local token offsets of documents a and b (or its end)."""
    n = len(lengths)
    a = b = ta = tb = None
    pos = 0
    for i in range(0, n, _LENGTH_BLOCK):
        block = np.asarray(lengths[i:i + _LENGTH_BLOCK], dtype=np.int64)
        ends = pos + np.cumsum(block)
        starts = ends - block
        if a is None:
            j = int(np.searchsorted(offset + starts, lo))
            if j < len(block):
                a, ta = i + j, int(starts[j])
        if a is not None:
            j = int(np.searchsorted(offset + starts, hi))
            if j < len(block):
                b, tb = i + j, int(starts[j])
                break
        pos = int(ends[-1])
    if a is None:
        a, ta = n, pos
    if b is None:
        b, tb = n, pos
    return a, b, ta, tb


def _open_piece(piece: Piece, itemsize: int) -> np.ndarray:
    """The piece's lengths (memory-mapped), after checking this process sees the files the
    tokenising task wrote: on nodes without a shared disk it would not."""
    try:
        size = os.path.getsize(piece.bin_path)
        lengths = np.load(piece.lengths_path, mmap_mode="r")
    except FileNotFoundError as exc:
        raise RuntimeError(f"the tokenised piece {exc.filename}, written by another Spark task, {NOT_SHARED}: "
                           "the shard folder must be on storage every node shares (a shared mount)") from exc
    if size != piece.tokens * itemsize or len(lengths) != piece.docs:
        raise RuntimeError(f"the tokenised piece {piece.bin_path} has {size} bytes and {len(lengths)} documents, "
                           f"its task wrote {piece.tokens * itemsize} and {piece.docs}: it {NOT_SHARED} as written")
    return lengths


def write_window(window: Window, dtype: np.dtype, out_prefix: str) -> dict[str, Any] | None:
    """Write the part of `window` as `<out_prefix>.bin/.idx`; its counts and checksums, or None
    when no document starts in the window (then nothing is written)."""
    import xxhash

    itemsize = np.dtype(dtype).itemsize
    spans = []
    for piece in window.pieces:
        lengths = _open_piece(piece, itemsize)
        a, b, ta, tb = doc_span(lengths, piece.offset, window.lo, window.hi)
        if b > a:
            spans.append((piece, lengths, a, b, ta, tb))
    if not spans:
        return None
    checksum = xxhash.xxh3_128()
    size = 0
    with open(f"{out_prefix}.bin", "wb") as out:
        for piece, _, _, _, ta, tb in spans:
            with open(piece.bin_path, "rb") as src:
                src.seek(ta * itemsize)
                left = (tb - ta) * itemsize
                while left:
                    block = src.read(min(left, _COPY_BLOCK))
                    if not block:
                        raise RuntimeError(f"{piece.bin_path} ended {left} bytes early")
                    checksum.update(block)
                    out.write(block)
                    left -= len(block)
                    size += len(block)

    def chunks() -> Iterator[np.ndarray]:
        for _, lengths, a, b, _, _ in spans:
            for lo in range(a, b, _LENGTH_BLOCK):
                yield np.asarray(lengths[lo:min(lo + _LENGTH_BLOCK, b)])

    docs, tokens, idx_checksum = write_index_chunks(f"{out_prefix}.idx", chunks, dtype)
    if size != tokens * itemsize:
        raise RuntimeError(f"part {out_prefix}.bin has {size} bytes, its lengths say {tokens * itemsize}")
    return {"lang": window.lang, "window": window.index, "bin_path": f"{out_prefix}.bin",
            "idx_path": f"{out_prefix}.idx", "docs": docs, "tokens": tokens, "bytes": size,
            "checksum": checksum.hexdigest(), "idx_checksum": idx_checksum}


def index_bytes(docs: int) -> int:
    """Size of the `.idx` of `docs` documents (header, lengths, pointers, document index)."""
    return 34 + docs * 12 + (docs + 1) * 8


def visible(part: dict[str, Any]) -> bool:
    """Whether this process sees a written part at the size its task reported."""
    try:
        return (Path(part["bin_path"]).stat().st_size == part["bytes"]
                and Path(part["idx_path"]).stat().st_size == index_bytes(part["docs"]))
    except FileNotFoundError:
        return False
