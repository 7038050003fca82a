"""LlamaPro block expansion of a Hugging Face Qwen2/Llama checkpoint, streamed tensor by tensor.

Sailor2 did not train from scratch: it grew Qwen2.5 with LlamaPro (0.5B 24→48 layers, 7B 28→32,
14B 48→64) so the new blocks can learn South-East Asian languages while the old ones keep what
they know. A new block is a copy of the layer before it whose two residual outputs (`o_proj`,
`down_proj`) are zero, so at initialisation it adds nothing and the expanded model computes exactly
what the original did — logits, greedy generation with a KV cache and all.

    expansion_map(L, N)        where each of the N output layers comes from (the placement rule)
    expand_config(config, m)   config.json with everything per layer following the map
    count_parameters(config)   parameter count from a Qwen2/Llama config.json alone
    expand(model_dir, N, out)  the expanded checkpoint, written shard by shard, and its record

Megatron-Sailor2's `tools/llama_pro.py` loads the whole model, builds a second state dict and
saves it with a transformers function that no longer exists; a 14B model (30 GB in bf16) neither
fits in RAM twice nor in one file. Here every tensor is read from its safetensors file when it is
written and dropped once its output shard (at most `max_shard_bytes`) is on disk.

transformers, torch and safetensors are imported inside the functions that need them, so the
placement rule and the parameter arithmetic can be used without paying for the imports.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from data_engine.digests import file_digest
from data_engine.errors import ConfigError

SUPPORTED_MODEL_TYPES = ("qwen2", "llama")
LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
# The residual branches' outputs: zero them (weights and, where a Llama has them, biases) and the
# block adds nothing to the residual stream.
ZEROED_PREFIXES = ("self_attn.o_proj.", "mlp.down_proj.")
REQUIRED_LAYER_TENSORS = ("self_attn.o_proj.weight", "mlp.down_proj.weight")
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
RECORD_NAME = "expansion.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9  # transformers' save_pretrained default ("5GB")
# Files in a model directory that hold weights (never copied: the expanded ones are written instead).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx")
NOT_COPIED = ("config.json", INDEX_NAME, "pytorch_model.bin.index.json", RECORD_NAME)
RULE = ("LlamaPro block expansion: with L old layers and E = N - L new ones, original layer i is followed by "
        "floor((i+1)*E/L) - floor(i*E/L) copies of itself (copy k = 0..E-1 sits after original layer "
        "ceil((k+1)*L/E) - 1); when E divides L that is one copy after every layer i with (i+1) % (L/E) == 0, "
        "llama_pro.py's placement. A copy's o_proj and down_proj are zero (identity at init); everything else "
        "(q/k/v weights and biases, gate/up, both norms) equals its source layer's.")


@dataclass(frozen=True)
class LayerSource:
    """Output layer's origin: the original layer it comes from and whether it is a new (zeroed) copy."""

    source: int
    new: bool


def copies_after(old_layers: int, new_layers: int) -> list[int]:
    """How many new blocks follow each original layer: floor((i+1)·E/L) − floor(i·E/L) for layer i.

    These counts are the E copies spread as evenly as the integers allow: copy k (k = 0..E−1) goes
    after original layer ceil((k+1)·L/E) − 1, since k+1 = m lands after layer i exactly when
    i < m·L/E ≤ i+1, i.e. i·E/L < m ≤ (i+1)·E/L, and there are floor((i+1)E/L) − floor(iE/L) such m.

    When E divides L (s = L/E), floor((i+1)/s) − floor(i/s) is 1 exactly when s divides i+1 and 0
    otherwise: LlamaPro's "(i+1) % split == 0". The last original layer is always followed by a copy
    (the sum telescopes to E with the last term never empty), as in LlamaPro.

    E > L (more than doubling) is allowed: each layer is then followed by floor(E/L) or ceil(E/L)
    copies of itself in a row, each the identity at init. A stack of identical copies is only a
    starting point — training is what makes them differ — but nothing about it is wrong, so it is
    not refused.
    """
    if old_layers < 1:
        raise ConfigError(f"the model has {old_layers} layers; expansion needs at least one")
    if new_layers <= old_layers:
        raise ConfigError(f"--to-layers must be larger than the model's {old_layers} layers (got {new_layers})")
    e = new_layers - old_layers
    return [(i + 1) * e // old_layers - i * e // old_layers for i in range(old_layers)]


def expansion_map(old_layers: int, new_layers: int) -> tuple[LayerSource, ...]:
    """The N output layers in order: each original layer, then its new copies (see `copies_after`)."""
    out: list[LayerSource] = []
    for i, n in enumerate(copies_after(old_layers, new_layers)):
        out.append(LayerSource(i, False))
        out.extend(LayerSource(i, True) for _ in range(n))
    return tuple(out)


def new_layer_indices(mapping: Sequence[LayerSource]) -> list[int]:
    return [j for j, s in enumerate(mapping) if s.new]


def expand_config(config: Mapping[str, Any], mapping: Sequence[LayerSource]) -> dict[str, Any]:
    """config.json of the expanded model: every per-layer setting follows the layer it came from.

    - `num_hidden_layers` becomes N.
    - `layer_types` (when present) gets each output layer's source type.
    - `max_window_layers` (Qwen2: layers below it use full attention, the rest the sliding window
      when `use_sliding_window`) becomes the number of output layers whose source is below the old
      value. The map keeps the original order, so those form a prefix and every layer — old or new
      — keeps its source's attention kind. llama_pro.py leaves it unchanged, which is harmless only
      because Qwen2.5 and Sailor2 never turn the sliding window on.
    - `sliding_window` and `use_sliding_window` are the same for all layers and stay as they are.
    Any other list with one entry per layer is refused: it would need a rule of its own.
    """
    cfg = dict(config)
    old = int(cfg["num_hidden_layers"])
    if not mapping or {s.source for s in mapping} != set(range(old)):
        raise ConfigError(f"the layer map does not cover the config's {old} layers")
    for key, value in cfg.items():
        if key not in ("layer_types", "architectures") and isinstance(value, list) and len(value) == old:
            raise ConfigError(f"config.json field {key!r} has one entry per layer and expand has no rule for it; "
                              f"remove it or extend trainer.expand.expand_config")
    cfg["num_hidden_layers"] = len(mapping)
    if cfg.get("layer_types") is not None:
        types = list(cfg["layer_types"])
        if len(types) != old:
            raise ConfigError(f"config.json layer_types has {len(types)} entries for {old} layers")
        cfg["layer_types"] = [types[s.source] for s in mapping]
    if cfg.get("max_window_layers") is not None:
        cfg["max_window_layers"] = sum(1 for s in mapping if s.source < int(cfg["max_window_layers"]))
    return cfg


def count_parameters(config: Mapping[str, Any]) -> int:
    """Parameters of a Qwen2/Llama causal LM from its config.json (tied embeddings counted once).

    Qwen2 has biases on q/k/v only; Llama on q/k/v/o with `attention_bias` and on the MLP with
    `mlp_bias`. Absent keys take transformers' defaults for that model type.
    """
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(f"count_parameters knows {SUPPORTED_MODEL_TYPES}, not model_type {model_type!r}")
    h = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    kv = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or h // heads)
    ffn = int(config["intermediate_size"])
    vocab = int(config["vocab_size"])
    layers = int(config["num_hidden_layers"])
    if model_type == "qwen2":
        qkv_bias, o_bias, mlp_bias = True, False, False
    else:
        qkv_bias = o_bias = bool(config.get("attention_bias", False))
        mlp_bias = bool(config.get("mlp_bias", False))
    q, k = heads * head_dim, kv * head_dim
    attn = h * q + 2 * h * k + q * h + (q + 2 * k if qkv_bias else 0) + (h if o_bias else 0)
    mlp = 3 * h * ffn + (2 * ffn + h if mlp_bias else 0)
    per_layer = attn + mlp + 2 * h  # two RMSNorm weights
    tied = bool(config.get("tie_word_embeddings", False))
    return vocab * h * (1 if tied else 2) + layers * per_layer + h  # + the final norm


def parse_size(text: str | int) -> int:
    """'5GB', '500MB', '2GiB' or a byte count → bytes (decimal units, as transformers' max_shard_size)."""
    if isinstance(text, int):
        value = text
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", str(text), flags=re.IGNORECASE)
        if not m:
            raise ConfigError(f"shard size {text!r}: write a size such as 5GB, 500MB or a byte count")
        unit = (m.group(2) or "B").upper()
        scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
                 "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}[unit]
        value = int(float(m.group(1)) * scale)
    if value < 1:
        raise ConfigError(f"shard size must be positive (got {text!r})")
    return value


@dataclass(frozen=True)
class ExpansionRecord:
    """What `expansion.json` says: enough to know, later, which layers are new and from what."""

    source: str
    out: str
    model_type: str
    old_layers: int
    new_layers: int
    rule: str
    layers: tuple[dict[str, Any], ...]  # per output layer: {"index", "source", "new"}
    new_layer_indices: tuple[int, ...]
    new_layer_sources: tuple[int, ...]  # source original layer of each new layer, same order
    parameters_before: int
    parameters_after: int
    tied_embeddings: bool  # in the output
    untied: bool  # the input was tied and lm_head was written as a copy of the embedding
    dtypes: tuple[str, ...]  # safetensors dtypes seen (kept as they were)
    max_window_layers: tuple[int | None, int | None]  # before, after
    input_sha256: dict[str, str]  # every input safetensors file and the index
    shards: tuple[str, ...]
    copied_files: tuple[str, ...]
    source_expansion: dict[str, Any] | None  # the input's own expansion.json, when it was expanded before
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_config(model_dir: str | Path) -> dict[str, Any]:
    """config.json of a Qwen2/Llama checkpoint directory, refused with a reason when it is not one."""
    d = Path(model_dir)
    if not d.is_dir():
        raise ConfigError(f"--model {d}: not a directory; give a Hugging Face checkpoint directory")
    path = d / "config.json"
    if not path.is_file():
        raise ConfigError(f"--model {d}: no config.json; give a Hugging Face checkpoint directory")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc})") from exc
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(f"{path}: model_type {model_type!r}; expand handles {', '.join(SUPPORTED_MODEL_TYPES)} "
                          f"decoders (model.layers.N.self_attn/mlp)")
    if cfg.get("quantization_config"):
        raise ConfigError(f"{path}: a quantized checkpoint; expand the unquantized weights")
    for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size"):
        if not isinstance(cfg.get(key), int) or cfg[key] < 1:
            raise ConfigError(f"{path}: {key} missing or not a positive integer")
    return cfg


def weight_map(model_dir: str | Path) -> dict[str, str]:
    """tensor name → safetensors file name, from the index of a sharded checkpoint or the single file."""
    d = Path(model_dir)
    index = d / INDEX_NAME
    if index.is_file():
        try:
            wm = dict(json.loads(index.read_text())["weight_map"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"{index}: not a safetensors index ({exc})") from exc
        missing = sorted({f for f in wm.values() if not (d / f).is_file()})
        if missing:
            raise ConfigError(f"{index} names files that are not there: {', '.join(missing[:5])}")
        return wm
    single = d / SINGLE_NAME
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as f:
            return {name: SINGLE_NAME for name in f.keys()}
    raise ConfigError(f"--model {d}: no {SINGLE_NAME} or {INDEX_NAME}; save the model with safetensors "
                      f"(save_pretrained(..., safe_serialization=True))")


def _layer_layout(names: Sequence[str], layers: int, where: str) -> tuple[list[str], list[str]]:
    """(tensor suffixes every layer has, non-layer tensor names), checked against the layer count."""
    per_layer: dict[int, set[str]] = {}
    others: list[str] = []
    for name in names:
        m = LAYER_KEY.match(name)
        if m:
            per_layer.setdefault(int(m.group(1)), set()).add(m.group(2))
        else:
            others.append(name)
    if sorted(per_layer) != list(range(layers)):
        raise ConfigError(f"{where}: tensors for layers {_ranges(sorted(per_layer))} but config.json says "
                          f"{layers} layers; the weights and the config do not belong together")
    first = per_layer[0]
    for i, suffixes in per_layer.items():
        if suffixes != first:
            raise ConfigError(f"{where}: layer {i} has tensors {sorted(suffixes ^ first)[:4]} that layer 0 "
                              f"does not share; expand needs identical layers")
    missing = [t for t in REQUIRED_LAYER_TENSORS if t not in first]
    if missing:
        raise ConfigError(f"{where}: layers have no {', '.join(missing)}; not a Qwen2/Llama decoder layout")
    return sorted(first), others


def _ranges(xs: Sequence[int]) -> str:
    return f"{xs[0]}..{xs[-1]} ({len(xs)})" if xs else "none"


class _ShardWriter:
    """Output tensors go to a shard in memory until the next one would pass `max_bytes`; then to disk.

    Shards are written under temporary names because their count is known only at the end; `close`
    renames them the way save_pretrained names them and writes the index when there is more than one.
    """

    def __init__(self, out: Path, max_bytes: int) -> None:
        self.out, self.max_bytes = out, max_bytes
        self.buffer: dict[str, Any] = {}
        self.size = 0
        self.parts: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0
        self.parameters = 0

    def add(self, name: str, tensor: Any) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self.buffer and self.size + nbytes > self.max_bytes:
            self.flush()
        self.buffer[name] = tensor.contiguous()
        self.size += nbytes
        self.total_bytes += nbytes
        self.parameters += tensor.numel()

    def flush(self) -> None:
        if not self.buffer:
            return
        from safetensors.torch import save_file

        path = self.out / f".part-{len(self.parts):05d}.safetensors"
        save_file(self.buffer, str(path), metadata={"format": "pt"})
        self.parts.append((path, list(self.buffer)))
        self.buffer, self.size = {}, 0

    def close(self) -> list[str]:
        self.flush()
        n = len(self.parts)
        names = [SINGLE_NAME] if n == 1 else [f"model-{k + 1:05d}-of-{n:05d}.safetensors" for k in range(n)]
        wm: dict[str, str] = {}
        for (path, tensors), name in zip(self.parts, names, strict=True):
            path.rename(self.out / name)
            wm.update(dict.fromkeys(tensors, name))
        if n > 1:
            index = {"metadata": {"total_size": self.total_bytes, "total_parameters": self.parameters},
                     "weight_map": dict(sorted(wm.items()))}
            (self.out / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        return names


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: exists and is not empty; give a new directory (expand never overwrites)")


def expand(model_dir: str | Path, to_layers: int, out_dir: str | Path, *,
           max_shard_bytes: int | str = DEFAULT_MAX_SHARD_BYTES, untie_embeddings: bool = False) -> ExpansionRecord:
    """Write `model_dir` expanded to `to_layers` layers into `out_dir` (see the module docstring).

    The output is assembled in a sibling `.<name>.partial-<pid>` directory and renamed into place at
    the end, so a crash never leaves something that looks like a finished model. Tensors keep their
    dtype (they are copied, or zeroed like themselves). With tied embeddings the output has no
    lm_head either, unless `untie_embeddings` writes it as a copy of the embedding (what Sailor2-1B
    did: 988M parameters instead of 852M); either way the logits are the same.
    """
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig

    started = time.time()
    src, out = Path(model_dir), Path(out_dir)
    max_bytes = parse_size(max_shard_bytes)
    cfg = read_config(src)
    old = int(cfg["num_hidden_layers"])
    if not isinstance(to_layers, int) or to_layers <= old:
        raise ConfigError(f"--to-layers must be larger than the model's {old} layers (got {to_layers})")
    if out.resolve() == src.resolve():
        raise ConfigError("--out must differ from --model")
    _check_out(out)
    effective = AutoConfig.from_pretrained(str(src))  # transformers' defaults for absent keys
    tied_in = bool(effective.tie_word_embeddings)
    mapping = expansion_map(old, to_layers)
    new_cfg = expand_config(cfg, mapping)
    untied = bool(untie_embeddings and tied_in)
    if untied:
        new_cfg["tie_word_embeddings"] = False

    wm = weight_map(src)
    suffixes, others = _layer_layout(list(wm), old, str(src))
    if tied_in:
        others = [n for n in others if n != "lm_head.weight"]  # transformers re-ties it on load anyway
    if "model.embed_tokens.weight" not in wm:
        raise ConfigError(f"{src}: no model.embed_tokens.weight; not a Qwen2/Llama causal LM checkpoint")
    head = [n for n in others if n.startswith("lm_head.")]
    front = [n for n in others if n not in head and not n.startswith("model.norm.")]
    back = [n for n in others if n.startswith("model.norm.")] + head

    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        writer = _ShardWriter(tmp, max_bytes)
        dtypes: set[str] = set()
        before = 0
        with contextlib.ExitStack() as stack:
            handles: dict[str, Any] = {}

            def read(name: str) -> Any:
                file = wm[name]
                if file not in handles:
                    handles[file] = stack.enter_context(safe_open(str(src / file), framework="pt"))
                return handles[file].get_tensor(name)

            for file in sorted(set(wm.values())):
                with safe_open(str(src / file), framework="pt") as f:
                    for name in f.keys():
                        if wm.get(name) == file and not (tied_in and name == "lm_head.weight"):
                            s = f.get_slice(name)
                            dtypes.add(s.get_dtype())
                            n = 1
                            for d in s.get_shape():
                                n *= d
                            before += n
            for name in front:
                writer.add(name, read(name))
            for j, layer in enumerate(mapping):
                for suffix in suffixes:
                    t = read(f"model.layers.{layer.source}.{suffix}")
                    if layer.new:  # its own storage: safetensors hands out views of one mapping per tensor
                        t = torch.zeros_like(t) if suffix.startswith(ZEROED_PREFIXES) else t.clone()
                    writer.add(f"model.layers.{j}.{suffix}", t)
            for name in back:
                writer.add(name, read(name))
            if untied:
                writer.add("lm_head.weight", read("model.embed_tokens.weight").clone())
        shards = writer.close()
        (tmp / "config.json").write_text(json.dumps(new_cfg, indent=2) + "\n")
        _check_loaded_config(tmp, effective, mapping)
        copied = []
        for f in sorted(src.iterdir()):
            if f.is_file() and f.name not in NOT_COPIED and not f.name.endswith(WEIGHT_SUFFIXES):
                shutil.copy2(f, tmp / f.name)
                copied.append(f.name)
        inputs = sorted(set(wm.values())) + ([INDEX_NAME] if (src / INDEX_NAME).is_file() else [])
        prior = src / RECORD_NAME
        new_idx = new_layer_indices(mapping)
        record = ExpansionRecord(
            source=str(src.resolve()), out=str(out.resolve()), model_type=str(cfg["model_type"]),
            old_layers=old, new_layers=to_layers, rule=RULE,
            layers=tuple({"index": j, "source": s.source, "new": s.new} for j, s in enumerate(mapping)),
            new_layer_indices=tuple(new_idx), new_layer_sources=tuple(mapping[j].source for j in new_idx),
            parameters_before=before, parameters_after=writer.parameters,
            tied_embeddings=bool(tied_in and not untied), untied=untied, dtypes=tuple(sorted(dtypes)),
            max_window_layers=(cfg.get("max_window_layers"), new_cfg.get("max_window_layers")),
            input_sha256={name: file_digest(src / name) for name in inputs},
            shards=tuple(shards), copied_files=tuple(copied),
            source_expansion=json.loads(prior.read_text()) if prior.is_file() else None,
            seconds=round(time.time() - started, 2),
        )
        (tmp / RECORD_NAME).write_text(json.dumps(record.to_dict(), indent=2) + "\n")
        if out.is_dir():
            out.rmdir()  # empty (checked above); rename needs the name free
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def _check_loaded_config(out: Path, old: Any, mapping: Sequence[LayerSource]) -> None:
    """transformers must read back the layer count and, per layer, the attention kind of the source layer."""
    from transformers import AutoConfig

    new = AutoConfig.from_pretrained(str(out))
    if new.num_hidden_layers != len(mapping):
        raise RuntimeError(f"expanded config reads back {new.num_hidden_layers} layers, not {len(mapping)}")
    old_types, new_types = getattr(old, "layer_types", None), getattr(new, "layer_types", None)
    if old_types is not None and list(new_types or []) != [old_types[s.source] for s in mapping]:
        raise RuntimeError(f"expanded layer_types {new_types} do not follow the source layers {old_types}")
