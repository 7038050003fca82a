"""Cutting a language into parts, without Spark: the parts are the documents in order, cut by token
offsets alone (not by how tokenisation split them into pieces), near-equal, and each a Megatron
indexed dataset with the checksums the writer reports."""

from __future__ import annotations

import numpy as np
import pytest
import xxhash

from data_engine.export import parts as parts_mod
from data_engine.export.indexed_dataset import read_index, write_index, write_index_chunks
from data_engine.export.parts import doc_span, plan_windows, window_tokens, write_window

DTYPE = np.dtype(np.int32)


def _documents(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 151000, size=int(k)).astype(np.int32) for k in rng.integers(1, 60, size=n)]


def _pieces(tmp_path, docs: list[np.ndarray], cuts: list[int], tag: str) -> list[tuple[str, str, int, int]]:
    """The documents as tokenisation tasks would leave them: contiguous runs split at `cuts`."""
    out = []
    bounds = [0, *cuts, len(docs)]
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        base = tmp_path / f"{tag}-{i}"
        run = docs[lo:hi]
        (base.with_suffix(".bin")).write_bytes(b"".join(d.tobytes() for d in run))
        np.save(f"{base}.lengths.npy", np.array([len(d) for d in run], dtype=np.int32))
        out.append((str(base.with_suffix(".bin")), f"{base}.lengths.npy", len(run), sum(len(d) for d in run)))
    return out


def _write_all(tmp_path, lang, pieces, part_tokens, tag):
    written = []
    for w in plan_windows(lang, pieces, part_tokens):
        got = write_window(w, DTYPE, str(tmp_path / f"{tag}-part-{w.index}"))
        if got is not None:
            written.append(got)
    return written


def test_window_sizes_are_near_equal_and_bounded():
    assert window_tokens(1000, None) == 1000 and window_tokens(10, 100) == 10
    for total, bound in [(1000, 300), (1001, 250), (7, 2), (10**12, 2**28)]:
        size = window_tokens(total, bound)
        n = -(-total // size)
        assert size <= bound and n == -(-total // bound)  # as few windows as the bound allows
        assert total - (n - 1) * size > 0 and (n - 1) * size < total  # none empty by arithmetic


def test_parts_are_the_documents_in_order_whatever_the_pieces(tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    docs = _documents(0, 200)
    total = sum(len(d) for d in docs)
    one = _write_all(tmp_path, "tha", _pieces(tmp_path, docs, [], "a"), 900, "a")
    other = _write_all(tmp_path, "tha", _pieces(tmp_path, docs, [1, 17, 18, 120, 199], "b"), 900, "b")
    assert len(one) == -(-total // 900) > 3
    for x, y in zip(one, other, strict=True):  # the same bytes, however tokenisation split the documents
        for key in ("bin_path", "idx_path"):
            with open(x[key], "rb") as fx, open(y[key], "rb") as fy:
                assert fx.read() == fy.read()
        assert (x["checksum"], x["idx_checksum"]) == (y["checksum"], y["idx_checksum"])
    got, size = [], window_tokens(total, 900)
    for part in one:
        prefix = part["bin_path"][:-4]
        ds = IndexedDataset(prefix)
        got += [np.array(ds[i]) for i in range(len(ds))]  # copies: the maps close with ds
        assert part["checksum"] == xxhash.xxh3_128_hexdigest(open(part["bin_path"], "rb").read())
        assert part["idx_checksum"] == xxhash.xxh3_128_hexdigest(open(part["idx_path"], "rb").read())
        _, lengths = read_index(part["idx_path"])
        assert part["tokens"] - lengths[-1] < size  # at most the window plus its last document
        assert part["bytes"] == part["tokens"] * 4 and part["docs"] == len(ds)
    assert len(got) == len(docs) and all(np.array_equal(a, b) for a, b in zip(got, docs, strict=True))
    assert min(p["tokens"] for p in one) > size // 2  # no stub of a last part


def test_a_document_longer_than_a_window_leaves_windows_without_parts(tmp_path):
    docs = [np.arange(5, dtype=np.int32), np.arange(50, dtype=np.int32), np.arange(3, dtype=np.int32)]
    written = _write_all(tmp_path, "lao", _pieces(tmp_path, docs, [2], "c"), 10, "c")
    assert [p["docs"] for p in written] == [2, 1]  # windows 1-4 start no document: no part
    assert [p["window"] for p in written] == [0, 5]


def test_doc_span_finds_documents_by_their_start():
    lengths = np.array([3, 4, 5, 6], dtype=np.int32)  # starts 10, 13, 17, 22 at offset 10
    assert doc_span(lengths, 10, 0, 13) == (0, 1, 0, 3)
    assert doc_span(lengths, 10, 13, 22) == (1, 3, 3, 12)
    assert doc_span(lengths, 10, 23, 40) == (4, 4, 18, 18)
    assert doc_span(lengths, 10, 0, 100) == (0, 4, 0, 18)


def test_doc_span_across_blocks(monkeypatch):
    monkeypatch.setattr(parts_mod, "_LENGTH_BLOCK", 3)
    lengths = np.array([2] * 10, dtype=np.int32)
    for lo, hi in [(0, 5), (5, 13), (7, 100), (19, 20), (20, 30)]:
        starts = np.arange(10) * 2
        a, b = int(np.searchsorted(starts, lo)), int(np.searchsorted(starts, hi))
        assert doc_span(lengths, 0, lo, hi) == (a, b, 2 * a, 2 * b), (lo, hi)


def test_index_written_in_blocks_is_the_same_file(tmp_path):
    lengths = np.random.default_rng(1).integers(1, 99, size=1000).astype(np.int32)
    whole = write_index(tmp_path / "whole.idx", lengths, DTYPE)
    docs, tokens, blocks = write_index_chunks(tmp_path / "blocks.idx", lambda: iter(np.array_split(lengths, 7)), DTYPE)
    assert (tmp_path / "whole.idx").read_bytes() == (tmp_path / "blocks.idx").read_bytes()
    assert whole == blocks == xxhash.xxh3_128_hexdigest((tmp_path / "whole.idx").read_bytes())
    assert (docs, tokens) == (1000, int(lengths.sum()))


def test_a_piece_this_process_cannot_see_is_named(tmp_path):
    docs = _documents(2, 10)
    pieces = _pieces(tmp_path, docs, [5], "d")
    (window,) = plan_windows("vie", pieces, None)
    (tmp_path / "d-1.bin").unlink()
    with pytest.raises(RuntimeError, match=r"d-1.bin, written by another Spark task, is not visible to this executor"):
        write_window(window, DTYPE, str(tmp_path / "out"))
