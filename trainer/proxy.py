"""A RegMix proxy: a tiny Qwen2 trained on one mixture of the lake's shards, in a lean PyTorch loop.

RegMix fits mixture → validation loss on hundreds of small runs, so what matters is the cost of
one run. A NeMo launch spends its time on start-up (Megatron, Lightning, index building) for a
model of 1M parameters; this loop reads the same Megatron shards with numpy and trains a
`transformers` Qwen2 directly (bench/proxy.py has the figures). It reads in one sitting:

    load_shards(lake, stage)         the shard manifest's files, checked (trainer.data), per language
    ProxyData.ranges(split)          each shard's documents cut train/validation as Megatron cuts them
    training_samples(...)            seq_length+1 token windows; each sample's language drawn by weight
    validation_windows(...)          fixed windows of every language's validation documents
    train_proxy(data, weights, cfg)  AdamW, linear warmup then constant LR, clipping, accumulation

`compact_vocab` maps the token ids that occur in the stage's shards onto 0..V-1: the embedding and
LM head shrink from Qwen's 151,936 rows to the few thousand a small lake uses, which is most of a
CPU proxy's time. Losses are then cross-entropies over that vocabulary: comparable between proxies
of one sweep (same shards, same vocabulary), not with a full-vocabulary model's.

torch and transformers are imported inside the functions that need them, so that configs can be
built and checked (and sweep workers spawned) without paying for the import.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data_engine import lake as lake_io
from data_engine.config import from_dict
from data_engine.errors import ConfigError
from data_engine.export.indexed_dataset import index_info
from data_engine.tables import SHARD_MANIFEST
from data_engine.tokenizer import QWEN_PADDED_VOCAB
from trainer.data import blend_from_manifest, split_documents


@dataclass(frozen=True)
class ProxyConfig:
    """One proxy run. The defaults are the `tiny` preset (a CPU demo, seconds per proxy)."""

    num_layers: int = 2
    hidden_size: int = 64
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128  # SwiGLU width
    seq_length: int = 128  # tokens per sample (each window holds seq_length + 1: inputs and targets)
    global_batch_size: int = 8  # samples per optimizer step
    micro_batch_size: int = 8  # samples per forward pass; global/micro steps are accumulated
    steps: int = 40
    lr: float = 3e-3  # held constant after warmup (RegMix: 4e-4 over 1,000 steps)
    warmup_steps: int = 4
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1
    clip_grad: float = 1.0  # max global gradient norm; 0: no clipping
    val_batches: int = 2  # validation batches (of micro_batch_size windows) per language, at most
    split: str = "90,10,0"  # train,validation,test shares of each shard's documents (Megatron's split)
    compact_vocab: bool = True  # embed only the ids present in the stage's shards (see the module doc)
    threads: int = 1  # torch threads of the process training the proxy
    seed: int = 1234  # weight init and sampling: the same seed gives the same losses

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, ProxyConfig] = {
    # A few seconds a proxy on one CPU thread with a compact vocabulary of a few thousand ids (bench/proxy.py).
    "tiny": ProxyConfig(),
    # RegMix's tinyllama_1M (sail-sg/regmix model_training): 2 layers, d256, 8 heads (MHA), SwiGLU 512,
    # context 2048, batch 512 × 2048 = 1M tokens a step, micro 16, 1,000 steps, lr 4e-4 constant after
    # 100 warmup steps, AdamW .9/.95, wd .1, clip 1, 50 validation batches; full Qwen vocabulary. For GPUs.
    "regmix": ProxyConfig(num_layers=2, hidden_size=256, num_attention_heads=8, num_key_value_heads=8,
                          intermediate_size=512, seq_length=2048, global_batch_size=512, micro_batch_size=16,
                          steps=1000, lr=4e-4, warmup_steps=100, beta1=0.9, beta2=0.95, weight_decay=0.1,
                          clip_grad=1.0, val_batches=50, split="98,2,0", compact_vocab=False, threads=1,
                          seed=1234),
}


def proxy_config(preset: str, overrides: Mapping[str, Any] | None = None) -> ProxyConfig:
    """`PRESETS[preset]` with `overrides` (field → value) applied, checked.

    Raises:
        ConfigError: an unknown preset or field, a wrong type, or values that do not fit together.
    """
    if preset not in PRESETS:
        raise ConfigError(f"proxy preset {preset!r} is not one of {', '.join(sorted(PRESETS))}")
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ConfigError(f"proxy overrides must be a mapping of ProxyConfig fields, got {overrides!r}")
    doc = {**PRESETS[preset].to_dict(), **(overrides or {})}
    cfg = from_dict(ProxyConfig, doc, "proxy", source=f"proxy preset {preset!r}")
    problems = _problems(cfg)
    if problems:
        raise ConfigError(f"proxy preset {preset!r} with overrides {dict(overrides or {})}: "
                          + "; ".join(problems))
    return cfg


def _problems(c: ProxyConfig) -> list[str]:
    positive = ("num_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size",
                "seq_length", "global_batch_size", "micro_batch_size", "val_batches", "threads")
    problems = [f"{k} must be positive, got {getattr(c, k)}" for k in positive if getattr(c, k) <= 0]
    if problems:
        return problems
    if c.hidden_size % c.num_attention_heads:
        problems.append(f"hidden_size {c.hidden_size} is not a multiple of num_attention_heads "
                        f"{c.num_attention_heads}")
    if c.num_attention_heads % c.num_key_value_heads:
        problems.append(f"num_attention_heads {c.num_attention_heads} is not a multiple of "
                        f"num_key_value_heads {c.num_key_value_heads}")
    if c.global_batch_size % c.micro_batch_size:
        problems.append(f"global_batch_size {c.global_batch_size} is not a multiple of micro_batch_size "
                        f"{c.micro_batch_size}")
    problems += [f"{k} must be 0 or more, got {getattr(c, k)}" for k in ("steps", "warmup_steps")
                 if getattr(c, k) < 0]
    if not (c.lr > 0 and math.isfinite(c.lr)):
        problems.append(f"lr must be positive, got {c.lr}")
    problems += [f"{k} must be in [0, 1), got {getattr(c, k)}" for k in ("beta1", "beta2")
                 if not 0 <= getattr(c, k) < 1]
    problems += [f"{k} must be 0 or more, got {getattr(c, k)}" for k in ("weight_decay", "clip_grad")
                 if not getattr(c, k) >= 0]
    parts = c.split.split(",")
    if len(parts) != 3 or not all(re.fullmatch(r"\d+(\.\d+)?", p.strip()) for p in parts):
        problems.append(f"split: expected three non-negative numbers 'train,validation,test', got {c.split!r}")
    elif float(parts[0]) <= 0 or float(parts[1]) <= 0:
        problems.append(f"split {c.split!r}: a proxy needs positive train and validation shares")
    return problems


# --- data ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    prefix: str
    docs: int
    tokens: int
    dtype: str


@dataclass(frozen=True)
class Ranges:
    """A language's train and validation tokens: (prefix, first token, end token) pieces in shard order."""

    train: tuple[tuple[str, int, int], ...]
    validation: tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class ProxyData:
    """The checked shards of one manifest stage, per language. Plain data: it pickles to sweep workers
    without the token arrays, which each process maps from disk itself."""

    lake: str
    stage: str
    tokenizer: str
    manifest_version: int
    digest: str  # trainer.data's digest of the manifest rows used
    shards: dict[str, tuple[Shard, ...]]  # lang → shards, in prefix order
    _vocab: list[np.ndarray] = field(default_factory=list, repr=False, compare=False)

    @property
    def langs(self) -> list[str]:
        return sorted(self.shards)

    def ranges(self, split: str) -> dict[str, Ranges]:
        """Per language, the token ranges of each shard's train and validation documents: contiguous
        document ranges cut by `trainer.data.split_documents`, as Megatron splits every shard."""
        out = {}
        for lang, shards in self.shards.items():
            train, val = [], []
            for s in shards:
                n_train, n_val, _ = split_documents(s.docs, split)
                lo, mid, hi = (_doc_start(s, k) for k in (0, n_train, n_train + n_val))
                if mid > lo:
                    train.append((s.prefix, lo, mid))
                if hi > mid:
                    val.append((s.prefix, mid, hi))
            out[lang] = Ranges(tuple(train), tuple(val))
        return out

    def vocabulary(self) -> np.ndarray:
        """The sorted token ids occurring in the stage's shards (computed once, kept with the data)."""
        if not self._vocab:
            seen = np.zeros(QWEN_PADDED_VOCAB, dtype=bool)
            for shards in self.shards.values():
                for s in shards:
                    tokens = _tokens(s.prefix, s.dtype)
                    for lo in range(0, len(tokens), 1 << 24):
                        chunk = np.asarray(tokens[lo:lo + (1 << 24)], dtype=np.int64)
                        if chunk.size and chunk.max() >= len(seen):
                            seen = np.concatenate([seen, np.zeros(int(chunk.max()) + 1 - len(seen), bool)])
                        seen[chunk] = True
            self._vocab.append(np.flatnonzero(seen))
        return self._vocab[0]


def load_shards(lake: str | Path, stage: str, tokenizer: str = "qwen2.5", *,
                split: str | None = None) -> ProxyData:
    """The shards of manifest stage `stage`, checked like the trainer checks them (files present,
    counts and checksums as the manifest says, the right tokenizer; with `split`, every part of
    it non-empty in every shard).

    Raises:
        TableNotFoundError / ConfigError: see `trainer.data.blend_from_manifest`.
    """
    blend = blend_from_manifest(lake, stage, tokenizer=tokenizer, split=split)
    prefixes = set(blend.paths[1::2])
    table = lake_io.read_arrow(lake, SHARD_MANIFEST, version=blend.manifest_version)
    rows = sorted((r for r in table.to_pylist() if r["stage"] == stage and r["prefix"] in prefixes),
                  key=lambda r: (r["lang"], r["prefix"]))
    shards: dict[str, list[Shard]] = {}
    for r in rows:
        info = index_info(r["prefix"] + ".idx")
        shards.setdefault(r["lang"], []).append(Shard(r["prefix"], int(r["docs"]), int(r["tokens"]),
                                                      info.dtype.name))
    return ProxyData(lake=str(Path(lake).resolve()), stage=stage, tokenizer=tokenizer,
                     manifest_version=blend.manifest_version, digest=blend.digest,
                     shards={lang: tuple(s) for lang, s in shards.items()})


_MAPS: dict[tuple[Any, ...], np.ndarray] = {}  # per process: a shard's memory-mapped tokens


def _tokens(prefix: str, dtype: str) -> np.ndarray:
    path = Path(prefix + ".bin")
    st = path.stat()
    key = (prefix, dtype, st.st_ino, st.st_size, st.st_mtime_ns)  # a rewritten file is mapped afresh
    if key not in _MAPS:
        _MAPS[key] = (np.memmap(path, dtype=np.dtype(dtype), mode="r") if st.st_size
                      else np.zeros(0, dtype=np.dtype(dtype)))
    return _MAPS[key]


def _doc_start(s: Shard, k: int) -> int:
    """Token offset of document k of a shard (k == docs: the end), from the `.idx` pointers."""
    if k >= s.docs:
        return s.tokens
    # .idx: a 34-byte header, int32 lengths, then int64 byte pointers, one per document (checked)
    itemsize = np.dtype(s.dtype).itemsize
    pointers = np.memmap(s.prefix + ".idx", dtype=np.int64, mode="r", offset=34 + s.docs * 4, shape=(s.docs,))
    return int(pointers[k]) // itemsize


class _Stream:
    """Token pieces read as one sequence, cyclically: a window running past the end continues at the
    start (the next epoch), so a language smaller than a window still yields full windows."""

    def __init__(self, pieces: tuple[tuple[str, int, int], ...], dtype: Mapping[str, str]):
        self.pieces = [(_tokens(p, dtype[p]), lo, hi) for p, lo, hi in pieces]
        self.ends = np.cumsum([hi - lo for _, lo, hi in pieces])
        self.size = int(self.ends[-1]) if len(self.ends) else 0

    def read(self, start: int, n: int, *, wrap: bool = True) -> np.ndarray:
        out, pos = [], start
        while n > 0:
            if pos >= self.size:
                if not wrap:
                    break
                pos = 0
            i = int(np.searchsorted(self.ends, pos, side="right"))
            tokens, lo, hi = self.pieces[i]
            offset = lo + pos - (int(self.ends[i - 1]) if i else 0)
            take = min(n, hi - offset)
            out.append(np.asarray(tokens[offset:offset + take], dtype=np.int64))
            pos, n = pos + take, n - take
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _dtypes(data: ProxyData) -> dict[str, str]:
    return {s.prefix: s.dtype for shards in data.shards.values() for s in shards}


def _mixture(data: ProxyData, weights: Mapping[str, float]) -> dict[str, float]:
    """Every language of the stage → its normalised weight (0 when not named)."""
    problems = []
    unknown = sorted(set(weights) - set(data.shards))
    if unknown:
        problems.append(f"languages without shards in the stage: {unknown} (the stage has {data.langs})")
    bad = {k: v for k, v in weights.items()
           if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0)}
    if bad:
        problems.append(f"weights must be finite and ≥ 0, got {bad}")
    if not problems and not sum(weights.values()) > 0:
        problems.append(f"no positive weight in {dict(weights)}")
    if problems:
        raise ConfigError(f"mixture for stage {data.stage!r}: " + "; ".join(problems))
    total = float(sum(weights.values()))
    return {lang: float(weights.get(lang, 0.0)) / total for lang in data.langs}


def training_samples(data: ProxyData, weights: Mapping[str, float], cfg: ProxyConfig,
                     ranges: Mapping[str, Ranges] | None = None) -> Iterator[tuple[list[str], np.ndarray]]:
    """Endless micro-batches: (languages, raw token windows micro×(seq+1)). Each sample's language is
    drawn with the mixture weights (weight 0: never), its window starts uniformly in the language's
    train tokens. Seeded by cfg.seed."""
    w = _mixture(data, weights)
    ranges = ranges or data.ranges(cfg.split)
    langs = [lang for lang in data.langs if w[lang] > 0]
    empty = [lang for lang in langs if not ranges[lang].train]
    if empty:
        raise ConfigError(f"stage {data.stage!r}: {empty} have weight but no training documents under split "
                          f"{cfg.split!r}")
    dtype = _dtypes(data)
    streams = {lang: _Stream(ranges[lang].train, dtype) for lang in langs}
    p = np.array([w[lang] for lang in langs])
    rng = np.random.default_rng(cfg.seed)
    while True:
        picks = rng.choice(len(langs), size=cfg.micro_batch_size, p=p / p.sum())
        chosen = [langs[i] for i in picks]
        windows = [streams[lang].read(int(rng.integers(streams[lang].size)), cfg.seq_length + 1)
                   for lang in chosen]
        yield chosen, np.stack(windows)


def validation_windows(data: ProxyData, cfg: ProxyConfig,
                       ranges: Mapping[str, Ranges] | None = None) -> dict[str, list[np.ndarray]]:
    """Per language of the stage, up to val_batches × micro_batch_size windows of seq_length+1 raw
    token ids from its validation documents, spread evenly over them, fixed by the data alone. A
    language with fewer validation tokens than one window gets one shorter window of all of them."""
    ranges = ranges or data.ranges(cfg.split)
    dtype, out = _dtypes(data), {}
    for lang in data.langs:
        stream = _Stream(ranges[lang].validation, dtype)
        if stream.size < 2:
            raise ConfigError(f"stage {data.stage!r}: {lang} has no validation tokens under split {cfg.split!r}")
        n = min(cfg.val_batches * cfg.micro_batch_size, (stream.size - 1) // cfg.seq_length)
        if n == 0:
            out[lang] = [stream.read(0, stream.size, wrap=False)]
            continue
        starts = np.linspace(0, stream.size - 1 - cfg.seq_length, n).round().astype(np.int64)
        out[lang] = [stream.read(int(s), cfg.seq_length + 1, wrap=False) for s in starts]
    return out


def token_lookup(data: ProxyData, cfg: ProxyConfig) -> tuple[np.ndarray | None, int]:
    """(raw id → model id table or None, model vocabulary size) for cfg.compact_vocab."""
    if not cfg.compact_vocab:
        return None, QWEN_PADDED_VOCAB
    ids = data.vocabulary()
    lut = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
    lut[ids] = np.arange(len(ids))
    return lut, len(ids)


# --- model and training -------------------------------------------------------------------------


def build_model(cfg: ProxyConfig, vocab_size: int) -> Any:
    """A randomly initialised Qwen2ForCausalLM of the proxy's shape, seeded by cfg.seed."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                         num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_attention_heads,
                         num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.seq_length,
                         tie_word_embeddings=False, use_cache=False, attn_implementation="sdpa")
    torch.manual_seed(cfg.seed)
    return Qwen2ForCausalLM(config)


@dataclass(frozen=True)
class ProxyResult:
    val_loss: dict[str, float]  # every language of the stage, weighted or not
    train_loss: float  # mean over the last tenth of the steps (nan without steps)
    steps: int
    tokens: int  # training tokens seen (targets)
    seconds: float  # model build, training and validation


def train_proxy(data: ProxyData, weights: Mapping[str, float], cfg: ProxyConfig) -> ProxyResult:
    """Train one proxy on the mixture `weights` (lang → weight ≥ 0, normalised here; languages not
    named get 0) and measure every language's validation loss. CUDA when available, else CPU.

    Raises:
        ConfigError: weights for languages outside the stage, no positive weight, or a language
            without training (weighted) or validation tokens under cfg.split.
    """
    import torch
    import torch.nn.functional as F

    started = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ranges = data.ranges(cfg.split)
    samples = training_samples(data, weights, cfg, ranges)
    val = validation_windows(data, cfg, ranges)
    lut, vocab = token_lookup(data, cfg)
    model = build_model(cfg, vocab).to(device)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                              weight_decay=cfg.weight_decay, fused=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def batch(windows: np.ndarray) -> Any:
        return torch.from_numpy(lut[windows] if lut is not None else windows).to(device)

    accumulate = cfg.global_batch_size // cfg.micro_batch_size
    losses = []
    model.train()
    for step in range(cfg.steps):
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
        for group in optim.param_groups:
            group["lr"] = lr
        total = 0.0
        for _ in range(accumulate):
            x = batch(next(samples)[1])
            with autocast:
                logits = model(input_ids=x[:, :-1]).logits
            loss = F.cross_entropy(logits.float().reshape(-1, vocab), x[:, 1:].reshape(-1)) / accumulate
            loss.backward()
            total += float(loss.detach())
        if cfg.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        optim.step()
        optim.zero_grad(set_to_none=True)
        losses.append(total)

    model.eval()
    val_loss = {}
    with torch.no_grad():
        for lang, windows in val.items():
            nll, count = 0.0, 0
            for lo in range(0, len(windows), cfg.micro_batch_size):
                x = batch(np.stack(windows[lo:lo + cfg.micro_batch_size]))
                with autocast:
                    logits = model(input_ids=x[:, :-1]).logits
                nll += float(F.cross_entropy(logits.float().reshape(-1, vocab), x[:, 1:].reshape(-1),
                                             reduction="sum"))
                count += x[:, 1:].numel()
            val_loss[lang] = nll / count
    tail = losses[-max(1, len(losses) // 10):]
    return ProxyResult(val_loss=val_loss, train_loss=float(np.mean(tail)) if tail else float("nan"),
                       steps=cfg.steps, tokens=cfg.steps * cfg.global_batch_size * cfg.seq_length,
                       seconds=round(time.perf_counter() - started, 3))
