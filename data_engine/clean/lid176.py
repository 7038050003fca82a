"""lid.176 in numpy: fastText's own answers, to the bit, for a batch at a time.

fastText spends its time per character n-gram — 2 to 4 characters of every `<word>`, about three
per character of text: it builds each n-gram string, hashes it (FNV-1a over its UTF-8 bytes), looks
the bucket up in two hash maps and adds the row's 16 numbers. Here a batch's n-grams are hashed in
a few numpy passes over its code points, buckets map to rows through one array, and each
document's rows are added in fastText's order in float32 (one vector add per position, across all
documents), so the averaged vector is fastText's to the last bit. The hierarchical-softmax tree is
then evaluated with fastText's float32 and double steps; where numpy's `exp`/`log` could round
differently from the C library's `expf`/`log` (a result within 1% of an ulp of a rounding
midpoint), the C library is called. fastText's tree search prunes by the best leaf found so far,
which is exact only when the best label leads the next by more than the search's slack, so a
document whose two best labels are closer than `_MARGIN`, or whose text holds what fastText
splits differently (NUL, `__label__`), is handed to fastText itself (`fallback`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import count, repeat

import numpy as np

_MAGIC, _VERSION = 793712314, 12
_FNV_OFFSET = np.uint32(2166136261)
_FNV_PRIME = np.uint32(16777619)
_MARGIN = np.float32(1e-3)  # log-probability lead the tree search cannot miss (depth × log(1 + 1e-5) ≪ this)
_MIDPOINT_SLACK = 0.01  # of an ulp: numpy and libm agree on the rounding farther than this from a midpoint
_EOS = "</s>"
# fastText splits on these where str.split() does not (NUL); a text with them, a token fastText reads as
# a label or the end of the line (`</s>`), or not already split and joined by single spaces goes to fastText
_CONTROLS = re.compile(r"[\0-\x0d]")


@dataclass(frozen=True)
class Lid176:
    vocab: dict[str, int]
    labels: tuple[str, ...]
    eos: int
    nwords: int
    bucket: int
    minn: int
    maxn: int
    prune: np.ndarray  # bucket → input row, -1 where the quantised model dropped the bucket
    rows: np.ndarray  # float32 (input rows + 1, dim): the dequantised input matrix, last row zero
    out: np.ndarray  # float32 (labels - 1, dim): one row per internal tree node
    left: np.ndarray  # per internal node (index - labels): its children, as node indices
    right: np.ndarray
    path_nodes: np.ndarray  # per leaf, root first: the internal nodes on its path (-1 pads)
    path_right: np.ndarray  # ... and whether each step goes to the right child
    top_down: np.ndarray  # internal nodes, every parent before its children


@lru_cache(maxsize=4)
def load(path: str) -> Lid176:
    """Read a quantised hierarchical-softmax supervised model with character n-grams (lid.176.ftz)."""
    with open(path, "rb") as handle:
        buf = handle.read()
    off = 0

    def read(fmt: str) -> tuple:
        nonlocal off
        values = struct.unpack_from("<" + fmt, buf, off)
        off += struct.calcsize("<" + fmt)
        return values

    magic, version = read("ii")
    if (magic, version) != (_MAGIC, _VERSION):
        raise ValueError(f"{path}: not a fastText model of format {_VERSION}")
    dim, _ws, _epoch, _min_count, _neg, word_ngrams, loss, model, bucket, minn, maxn, _lr_rate, _t = read("12id")
    if (loss, model, word_ngrams) != (1, 3, 1) or minn < 2:
        raise ValueError(f"{path}: only supervised hierarchical-softmax models with character n-grams "
                         "and no word n-grams are supported")
    size, nwords, nlabels, _ntokens, pruneidx_size = read("iiiqq")
    vocab: dict[str, int] = {}
    labels: list[str] = []
    counts: list[int] = []
    for i in range(size):
        end = buf.index(b"\0", off)
        raw = buf[off:end]
        off = end + 1
        count, kind = read("qb")
        if i < nwords:
            try:
                vocab[raw.decode("utf-8")] = i
            except UnicodeDecodeError:
                pass  # a word no UTF-8 text can contain
        else:
            labels.append(raw.decode("utf-8").removeprefix("__label__"))
            counts.append(count)
    pairs = np.frombuffer(buf, "<i4", 2 * pruneidx_size, off).reshape(-1, 2)
    off += 8 * pruneidx_size
    prune = np.full(bucket, -1, dtype=np.int32)
    prune[pairs[:, 0]] = pairs[:, 1]
    (quantised,) = read("?")
    if not quantised or pruneidx_size <= 0:
        raise ValueError(f"{path}: expected a quantised, pruned model (.ftz)")
    qnorm, m, n, codesize = read("?qqi")
    codes = np.frombuffer(buf, np.uint8, codesize, off).reshape(m, -1)
    off += codesize
    pq_dim, nsubq, dsub, lastdsub = read("iiii")
    centroids = np.frombuffer(buf, "<f4", pq_dim * 256, off)
    off += pq_dim * 256 * 4
    rows = np.zeros((m + 1, n), dtype=np.float32)
    for sub in range(nsubq):
        width = lastdsub if sub == nsubq - 1 else dsub
        table = centroids[sub * 256 * dsub:sub * 256 * dsub + 256 * width].reshape(256, width)
        rows[:m, sub * dsub:sub * dsub + width] = table[codes[:, sub]]
    if qnorm:
        norm_codes = np.frombuffer(buf, np.uint8, m, off)
        off += m
        read("iiii")
        norms = np.frombuffer(buf, "<f4", 256, off)
        off += 256 * 4
        rows[:m] *= norms[norm_codes][:, None]  # float32 alpha × centroid, as QuantMatrix adds it
    (qout,) = read("?")
    if qout:
        raise ValueError(f"{path}: a quantised output matrix is not supported")
    om, on = read("qq")
    out = np.frombuffer(buf, "<f4", om * on, off).reshape(om, on)
    left, right = _huffman(counts)
    return Lid176(vocab, tuple(labels), vocab[_EOS], nwords, bucket, minn, maxn, prune, rows,
                  np.ascontiguousarray(out[:nlabels - 1]), left, right, *_paths(left, right))


def _huffman(counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """fastText's HierarchicalSoftmaxLoss::buildTree (labels sorted by count, most frequent first)."""
    osz = len(counts)
    count = [*counts, *[10 ** 15] * (osz - 1)]
    left, right = [-1] * (2 * osz - 1), [-1] * (2 * osz - 1)
    leaf, node = osz - 1, osz
    for i in range(osz, 2 * osz - 1):
        mini = []
        for _ in range(2):
            if leaf >= 0 and count[leaf] < count[node]:
                mini.append(leaf)
                leaf -= 1
            else:
                mini.append(node)
                node += 1
        left[i], right[i] = mini
        count[i] = count[mini[0]] + count[mini[1]]
    return np.array(left[osz:], dtype=np.int64), np.array(right[osz:], dtype=np.int64)


@lru_cache(maxsize=1)
def _libm() -> tuple:
    lib = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    expf, log = lib.expf, lib.log
    expf.restype, expf.argtypes = ctypes.c_float, [ctypes.c_float]
    log.restype, log.argtypes = ctypes.c_double, [ctypes.c_double]
    return expf, log


def _near_midpoint(exact: np.ndarray, rounded: np.ndarray) -> np.ndarray:
    """Where float64 `exact` lies so close to a midpoint between float32 neighbours that another
    implementation's rounding may differ (or the value is not an ordinary finite float32)."""
    r = rounded.astype(np.float64)
    up = exact >= r
    step = np.where(up, np.nextafter(rounded, np.float32(np.inf)).astype(np.float64) - r,
                    r - np.nextafter(rounded, np.float32(-np.inf)).astype(np.float64))
    with np.errstate(invalid="ignore"):
        risky = (step / 2 - np.abs(exact - r)) < _MIDPOINT_SLACK * step
    return risky | ~np.isfinite(step) | (np.abs(rounded) < np.finfo(np.float32).tiny)


def _with_libm(x: np.ndarray, exact: np.ndarray, out: np.ndarray, which: int) -> np.ndarray:
    """`out` with the C library's answer (`_libm()[which]`) wherever numpy's may round differently."""
    risky = _near_midpoint(exact, out)
    if risky.any():
        fn = _libm()[which]
        flat, given = out.reshape(-1), x.reshape(-1)
        for i in np.flatnonzero(risky.reshape(-1)):
            flat[i] = np.float32(fn(float(given[i])))
    return out


def expf(x: np.ndarray) -> np.ndarray:
    """C's expf (float32 in, float32 out), as fastText computes it."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore", under="ignore"):
        exact = np.exp(x.astype(np.float64))
        out = exact.astype(np.float32)
    return _with_libm(x, exact, out, 0)


def log_to_float(x: np.ndarray) -> np.ndarray:
    """float32(C's log(double)), as fastText's `std_log` returns it."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore"):
        exact = np.log(x)
        out = exact.astype(np.float32)
    return _with_libm(x, exact, out, 1)


def _extend(h: np.ndarray, data: list[np.ndarray], more: list[np.ndarray]) -> np.ndarray:
    """FNV-1a of `h` continued over one code point's UTF-8 bytes, per position: `data[k]` is the
    k-th byte sign-extended as fastText's `uint32_t(int8_t(c))`, `more[k - 1]` all ones where the
    code point has a k-th byte (a select by masks: several times cheaper than `np.where`)."""
    h = (h ^ data[0]) * _FNV_PRIME
    for k in range(1, len(data)):
        step = (h ^ data[k]) * _FNV_PRIME
        h = (step & more[k - 1]) | (h & ~more[k - 1])
    return h


def _token_ids(model: Lid176, tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """fastText's input ids of each distinct token — its word id if it is a known word, then its
    n-grams by start and length — as one array and each token's offset into it (+ the end)."""
    word_ids = np.fromiter(map(model.vocab.get, tokens, repeat(-1)), dtype=np.int32, count=len(tokens))
    raw = np.frombuffer(("<" + ">\n<".join(tokens) + ">\n").encode("utf-8"), dtype=np.uint8)
    signed = np.zeros(len(raw) + 3, dtype=np.uint32)
    signed[:len(raw)] = raw.view(np.int8)  # int8 → uint32 wraps: fastText's sign extension
    starts = np.flatnonzero((raw & 0xC0) != 0x80)  # first byte of every code point
    nb = np.diff(starts, append=len(raw))
    data = [signed[starts]] + [signed[starts + k] for k in range(1, int(nb.max()))]
    more = [np.where(nb > k, np.uint32(0xFFFFFFFF), np.uint32(0)) for k in range(1, len(data))]
    n_pos = len(starts)
    ends = np.flatnonzero(data[0] == 10)  # the "\n" after each token
    token_of = np.zeros(n_pos + 1, dtype=np.int32)  # tokens ended before each position
    token_of[ends + 1] = 1
    np.cumsum(token_of, out=token_of)
    width = 1 + model.maxn - model.minn + 1
    first = np.concatenate([[0], ends[:-1] + 1])  # each token's "<"
    keys = [first[word_ids >= 0] * width]
    values = [word_ids[word_ids >= 0]]
    h = np.full(n_pos, _FNV_OFFSET, dtype=np.uint32)
    bucket = np.uint32(model.bucket)
    for n in range(1, model.maxn + 1):
        m = n_pos - n + 1
        if m <= 0:
            break
        h = _extend(h[:m], [d[n - 1:n - 1 + m] for d in data], [k[n - 1:n - 1 + m] for k in more])
        if n < model.minn:
            continue
        row = model.prune[h - (h // bucket) * bucket]  # h % bucket, by a division numpy does fast
        at = np.flatnonzero((row >= 0) & (token_of[n:n + m] == token_of[:m]))  # no "\n" among the n
        keys.append(at * width + (1 + n - model.minn))
        values.append(row[at] + model.nwords)
    key = np.concatenate(keys)
    order = np.argsort(key, kind="stable")
    ids = np.concatenate(values)[order]
    per_token = np.bincount(token_of[key[order] // width], minlength=len(tokens))
    offsets = np.zeros(len(tokens) + 1, dtype=np.int64)
    np.cumsum(per_token, out=offsets[1:])
    return ids, offsets


def input_ids(model: Lid176, flats: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(row ids, document of each) in fastText's order: per word its id (if known), then its
    n-grams by start and length; then the end-of-line token. `flats`: non-empty texts whose
    tokens are separated by single spaces. Words recur, so each distinct one is hashed once."""
    distinct: dict[str, int] = {}
    tokens = " ".join(flats).split(" ")
    # each token's first position (setdefault keeps the first), then its rank among those: its number
    first_seen = np.fromiter(map(distinct.setdefault, tokens, count()), dtype=np.int64, count=len(tokens))
    uniq = list(distinct)
    rank = np.zeros(len(tokens), dtype=np.int64)
    rank[np.fromiter(distinct.values(), dtype=np.int64, count=len(uniq))] = np.arange(len(uniq))
    code = rank[first_seen]
    ids_of, offsets = _token_ids(model, uniq)
    per_doc = np.fromiter((f.count(" ") + 1 for f in flats), dtype=np.int64, count=len(flats))
    # the end-of-line token after each document's last word, as one more "distinct token"
    ids_of = np.append(ids_of, np.int32(model.eos))
    offsets = np.append(offsets, offsets[-1] + 1)
    code = np.insert(code, np.cumsum(per_doc), len(uniq))
    lengths = offsets[code + 1] - offsets[code]
    before = np.zeros(len(code) + 1, dtype=np.int64)
    np.cumsum(lengths, out=before[1:])
    pick = np.repeat(offsets[code] - before[:-1], lengths) + np.arange(before[-1])
    doc_lengths = np.add.reduceat(lengths, np.concatenate([[0], np.cumsum(per_doc + 1)[:-1]]))
    return ids_of[pick], np.repeat(np.arange(len(flats)), doc_lengths)


def hidden(model: Lid176, ids: np.ndarray, doc: np.ndarray, n_docs: int) -> np.ndarray:
    """Each document's average input row, summed in its ids' order in float32 (Model::computeHidden)."""
    counts = np.bincount(doc, minlength=n_docs)
    order = np.argsort(-counts, kind="stable")  # longest first: step j touches a prefix of the documents
    rank = np.empty(n_docs, dtype=np.int64)
    rank[order] = np.arange(n_docs)
    first = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(counts, out=first[1:])
    longest = int(counts.max()) if n_docs else 0
    grid = np.full((longest, n_docs), len(model.rows) - 1, dtype=np.int32)  # the zero row pads
    grid[np.arange(len(ids)) - first[doc], rank[doc]] = ids
    active = np.maximum(n_docs - np.searchsorted(counts[order][::-1], np.arange(longest), side="right"), 0)
    acc = np.zeros((n_docs, model.rows.shape[1]), dtype=np.float32)
    buf = np.empty_like(acc)
    for j in range(longest):
        k = int(active[j])
        np.take(model.rows, grid[j, :k], axis=0, out=buf[:k])
        np.add(acc[:k], buf[:k], out=acc[:k])
    scale = (1.0 / np.maximum(counts[order], 1)).astype(np.float32)
    acc *= scale[:, None]
    out = np.empty_like(acc)
    out[order] = acc
    return out


def _paths(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per leaf, root first: the internal nodes on its path (index - labels; -1 pads) and whether each
    step goes right; and the internal nodes in an order with every parent before its children."""
    osz = len(left) + 1
    parent = np.full(2 * osz - 1, -1, dtype=np.int64)
    went_right = np.zeros(2 * osz - 1, dtype=bool)
    for i in range(osz - 1):
        parent[left[i]] = i + osz
        parent[right[i]] = i + osz
        went_right[right[i]] = True
    steps = []
    for leaf in range(osz):
        path, node = [], leaf
        while parent[node] >= 0:
            path.append((parent[node] - osz, went_right[node]))
            node = parent[node]
        steps.append(path[::-1])
    depth = max(len(p) for p in steps)
    nodes = np.full((osz, depth), -1, dtype=np.int64)
    to_right = np.zeros((osz, depth), dtype=bool)
    for leaf, path in enumerate(steps):
        for d, (node, r) in enumerate(path):
            nodes[leaf, d], to_right[leaf, d] = node, r
    return nodes, to_right, np.arange(2 * osz - 2, osz - 1, -1) - osz  # children have smaller indices


def _step_logs(dots: np.ndarray, right: np.ndarray) -> np.ndarray:
    """std_log of the branch taken at each node, exactly as HierarchicalSoftmaxLoss::dfs computes it:
    f = 1. / (1 + std::exp(-f)) (expf, a float sum, a double quotient stored as float), then
    std_log(1.0 - f) to the left, std_log(f) to the right (log of the float + 1e-5, in double)."""
    sig = (1.0 / (np.float32(1) + expf(-dots)).astype(np.float64)).astype(np.float32)
    branch = np.where(right, sig, (1.0 - sig.astype(np.float64)).astype(np.float32))
    return log_to_float(branch.astype(np.float64) + 1e-5)


def _left_to_fasttext(flat: str) -> bool:
    return ("__label__" in flat or "</s>" in flat or "  " in flat or flat[0] == " " or flat[-1] == " "
            or _CONTROLS.search(flat) is not None)


def predict(model: Lid176, flats: Sequence[str]) -> tuple[list[str | None], np.ndarray]:
    """Per text: fastText's top label and its probability (float32), or (None, nan) where the
    caller must ask fastText (see the module docstring). `flats`: " ".join(text.split()) forms."""
    n_docs = len(flats)
    labels: list[str | None] = [None] * n_docs
    probs = np.full(n_docs, np.nan, dtype=np.float32)
    mine = [i for i, f in enumerate(flats) if f and not _left_to_fasttext(f)]
    if not mine:
        return labels, probs
    ids, doc = input_ids(model, [flats[i] for i in mine])
    h = hidden(model, ids, doc, len(mine))
    dots = np.zeros((len(model.out), len(mine)), dtype=np.float32)  # node × document
    for j in range(h.shape[1]):  # DenseMatrix::dotRow: d += at(i, j) * vec[j], in float32
        dots += model.out[:, j][:, None] * h[:, j][None, :]
    # Which leaf wins, from float64 approximations of every branch (off by ~1e-7, far below _MARGIN) ...
    sig = 1.0 / (1.0 + np.exp(-dots.astype(np.float64)))
    go_left, go_right = np.log(1.0 - sig + 1e-5), np.log(sig + 1e-5)
    osz = len(model.labels)
    score = np.zeros((2 * osz - 1, len(mine)))
    for i in model.top_down:
        score[model.left[i]] = score[i + osz] + go_left[i]
        score[model.right[i]] = score[i + osz] + go_right[i]
    leaves = score[:osz]
    best = leaves.argmax(axis=0)
    columns = np.arange(len(mine))
    top = leaves[best, columns]
    leaves[best, columns] = -np.inf
    sure = (top - leaves.max(axis=0) > _MARGIN) & (top > np.log(1e-5) + _MARGIN)
    # ... and its score exactly as fastText adds it up, root to leaf, in float32.
    nodes, right = model.path_nodes[best], model.path_right[best]  # document × depth
    steps = _step_logs(dots[np.maximum(nodes, 0), columns[:, None]], right)
    exact = np.zeros(len(mine), dtype=np.float32)
    for d in range(nodes.shape[1]):
        exact = np.where(nodes[:, d] >= 0, exact + steps[:, d], exact)
    p = expf(exact)
    for k, i in enumerate(mine):
        if sure[k]:
            labels[i], probs[i] = model.labels[best[k]], p[k]
    return labels, probs
