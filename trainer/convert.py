"""Hugging Face Qwen2 ⇄ NeMo 2 checkpoints, with every tensor accounted for.

    import_hf(model_dir, out_dir, seq_length=N)   an HF dir (Qwen2.5, or its LlamaPro expansion)
                                                  → a NeMo checkpoint to train from at N tokens
    export_hf(checkpoint, out_dir)                a NeMo checkpoint → an HF dir for transformers

Both run through NeMo's connectors (`llm.import_ckpt` / `llm.export_ckpt`), with sailyard's own
subclasses of NeMo's Qwen2 importer and exporter, registered under `CONNECTOR`, because the stock
ones (nemo 2.7.3) get four things wrong for us:

* Without transformer_engine (every CPU machine) the model uses Megatron's local layer spec, whose
  norms are `input_layernorm` / `pre_mlp_layernorm`, while NeMo's mapping names the TE-fused
  `linear_qkv.layer_norm_weight` / `linear_fc1.layer_norm_weight`. Unmatched targets are skipped
  without a word: every per-layer norm stays at 1.0 and the import "succeeds". Here the mapping is
  written in checkpoint names and translated to the names the model at hand uses in memory, through
  the same `sharded_state_dict_keys_map` Megatron applies when it saves (so the checkpoint holds
  TE names either way, the names a TE model on a GPU loads; not tried here, no GPU).
* The sequence length comes from `max_position_embeddings` (131,072 for Qwen2.5-7B, so for
  Sailor2-8B); here it is the training one.
* `tie_word_embeddings` is ignored (a tied 0.5B model comes back untied, and a tied NeMo model
  cannot be exported); here it is carried both ways.
* Export writes NeMo's `seq_length` as `max_position_embeddings` and drops bos/eos; here every HF
  field NeMo does not hold is taken from the config the checkpoint was imported from.

And neither direction is trusted: after each conversion `verify` reads the written files back
(the HF safetensors, the NeMo distributed checkpoint) and checks, by its own arithmetic, that every
HF tensor equals the NeMo slice it maps to (QKV interleaved per query group, gate/up stacked) and
that no tensor on either side is left out. A conversion that fails the check raises
`SailyardError` naming the tensors.

Conversions are written next to `out_dir` under a `.partial` name and renamed when checked: a
failed or killed conversion leaves `out_dir` as it was, never a checkpoint that looks complete.
The export target is `CONNECTOR`, not "hf": for "hf", `llm.export_ckpt` first loads the whole
model once more only to ask whether ModelOpt converted it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch

from data_engine.digests import file_digest
from data_engine.errors import ConfigError, SailyardError

#: The extension sailyard's connectors are registered under on `llm.Qwen2Model` ("hf" is NeMo's own).
CONNECTOR = "sailyard-hf"
IMPORT_RECORD = "sailyard_import.json"
EXPORT_RECORD = "sailyard_export.json"
#: What LlamaPro expansion (`sailyard expand`) leaves in its output; copied into the import record.
EXPANSION_RECORD = "expansion.json"
#: NeMo pads the vocabulary to a multiple of this (times tensor parallelism) and the import cannot.
VOCAB_MULTIPLE = 128
#: HF buffers that are recomputed from the config, not weights (older checkpoints store them).
DERIVED_SUFFIXES = (".rotary_emb.inv_freq",)
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model")
#: Fields of an HF config that say where it came from, not what the model is.
HF_META_FIELDS = ("transformers_version", "_name_or_path", "architectures", "dtype", "torch_dtype")


# --- records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accounting:
    """What `verify` compared: every HF tensor against its NeMo slice."""

    hf_tensors: int
    nemo_tensors: int
    elements: int  # HF weight elements compared, all equal
    derived: tuple[str, ...] = ()  # HF buffers recomputed from the config, not carried
    padding_rows: int = 0  # NeMo vocabulary padding beyond the HF vocabulary (tensor parallelism)


@dataclass(frozen=True)
class ImportRecord:
    """`<out>/sailyard_import.json`: what a NeMo checkpoint was made from."""

    source: str
    output: str
    seq_length: int
    files: dict[str, str]  # HF weight and config files → sha256
    hf_config: dict[str, Any]
    nemo_config: dict[str, Any]
    expansion: dict[str, Any] | None  # the source's expansion.json (LlamaPro), when it has one
    accounting: Accounting
    seconds: float
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ExportRecord:
    """`<out>/sailyard_export.json`: which checkpoint an HF dir was written from."""

    checkpoint: str
    output: str
    base: str | None  # where the HF fields NeMo does not hold came from; None: NeMo's values
    files: dict[str, str]
    hf_config: dict[str, Any]
    accounting: Accounting
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- the HF side (no NeMo) ----------------------------------------------------------------------


@dataclass(frozen=True)
class HFSource:
    """An HF Qwen2 directory that NeMo's Qwen2 model can hold exactly."""

    dir: Path
    config: dict[str, Any]  # config.json as written
    weight_files: tuple[Path, ...]  # safetensors (and their index)
    expansion: dict[str, Any] | None


def read_hf_source(model_dir: str | Path, *, seq_length: int) -> HFSource:
    """Check that `model_dir` is a Qwen2 that imports without loss, before NeMo starts.

    Raises:
        ConfigError: naming what NeMo's Qwen2 cannot represent (sliding windows, RoPE scaling,
            other architectures, a vocabulary NeMo would pad), or what is missing.
    """
    root = Path(model_dir).expanduser().absolute()
    cfg_path = root / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"--model {root}: no config.json; give a Hugging Face model directory")
    cfg = _read_json(cfg_path)
    where = f"--model {root}"
    if cfg.get("model_type") != "qwen2":
        raise ConfigError(f"{where}: model_type is {cfg.get('model_type')!r}; only Qwen2 models (Qwen2.5, "
                          "Sailor2) are supported")
    check_representable(cfg, where=where)
    max_pos = int(cfg.get("max_position_embeddings", 32768))
    if not isinstance(seq_length, int) or seq_length < 1:
        raise ConfigError(f"--seq-length must be a positive integer, got {seq_length!r}")
    if seq_length > max_pos:
        raise ConfigError(f"--seq-length {seq_length} exceeds the model's max_position_embeddings ({max_pos})")
    if not any((root / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(f"{where}: no tokenizer ({' or '.join(TOKENIZER_FILES)}); NeMo stores the "
                          "tokenizer in the checkpoint, copy it into the model directory")
    expansion = _read_json(root / EXPANSION_RECORD) if (root / EXPANSION_RECORD).is_file() else None
    return HFSource(dir=root, config=cfg, weight_files=weight_files(root), expansion=expansion)


def check_representable(cfg: Mapping[str, Any], *, where: str) -> None:
    """Refuse an HF Qwen2 config with features NeMo's Qwen2 drops without a word."""
    problems = []
    if cfg.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act is {cfg['hidden_act']!r} (NeMo's Qwen2 uses silu)")
    if cfg.get("rope_scaling"):
        problems.append(f"rope_scaling is {cfg['rope_scaling']!r} (NeMo's Qwen2 import drops it)")
    if cfg.get("use_sliding_window") or "sliding_attention" in (cfg.get("layer_types") or ()):
        problems.append("it uses sliding-window attention (NeMo's Qwen2 has none)")
    hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    groups = int(cfg.get("num_key_value_heads") or heads)
    if hidden % heads or heads % groups:
        problems.append(f"hidden_size {hidden}, {heads} heads and {groups} KV heads do not divide")
    elif cfg.get("head_dim") not in (None, hidden // heads):
        problems.append(f"head_dim {cfg['head_dim']} is not hidden_size / num_attention_heads")
    if int(cfg["vocab_size"]) % VOCAB_MULTIPLE:
        problems.append(f"vocab_size {cfg['vocab_size']} is not a multiple of {VOCAB_MULTIPLE} (NeMo would "
                        "pad the embedding and the import cannot)")
    if problems:
        raise ConfigError(f"{where}: cannot be held exactly by NeMo's Qwen2: " + "; ".join(problems))


def weight_files(root: Path) -> tuple[Path, ...]:
    """The safetensors files of an HF dir (with their index when sharded)."""
    index = root / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
        missing = [s for s in shards if not (root / s).is_file()]
        if missing:
            raise ConfigError(f"{root}: the safetensors index names missing shards: {', '.join(missing)}")
        return (index, *(root / s for s in shards))
    single = root / "model.safetensors"
    if single.is_file():
        return (single,)
    raise ConfigError(f"{root}: no model.safetensors or model.safetensors.index.json (every tensor is "
                      "checked from the safetensors files; save the model with safe_serialization)")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not readable JSON ({exc})") from exc


# --- accounting: HF tensors against the NeMo checkpoint (no NeMo) --------------------------------


@dataclass(frozen=True)
class Layout:
    """The shapes that decide how HF tensors sit inside NeMo's fused ones."""

    num_layers: int
    heads: int
    groups: int
    head_dim: int
    tied: bool

    @classmethod
    def from_hf_config(cls, cfg: Mapping[str, Any]) -> Layout:
        heads = int(cfg["num_attention_heads"])
        return cls(num_layers=int(cfg["num_hidden_layers"]), heads=heads,
                   groups=int(cfg.get("num_key_value_heads") or heads),
                   head_dim=int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads),
                   tied=bool(cfg.get("tie_word_embeddings", False)))


@dataclass(frozen=True)
class Link:
    """One HF tensor and where it sits in NeMo: `nemo[layer]` (stacked per layer) cut to `part`."""

    hf: str
    nemo: str  # the checkpoint's name (TE names, whatever spec wrote it), without "module."
    layer: int | None
    part: str  # "all", "q", "k", "v" (per query group), "gate", "up" (halves), "vocab" (rows)


# (NeMo name under decoder.layers, HF name under model.layers.<i>, part)
_LAYER_LINKS = (
    ("self_attention.linear_qkv.weight", "self_attn.q_proj.weight", "q"),
    ("self_attention.linear_qkv.weight", "self_attn.k_proj.weight", "k"),
    ("self_attention.linear_qkv.weight", "self_attn.v_proj.weight", "v"),
    ("self_attention.linear_qkv.bias", "self_attn.q_proj.bias", "q"),
    ("self_attention.linear_qkv.bias", "self_attn.k_proj.bias", "k"),
    ("self_attention.linear_qkv.bias", "self_attn.v_proj.bias", "v"),
    ("self_attention.linear_proj.weight", "self_attn.o_proj.weight", "all"),
    ("self_attention.linear_qkv.layer_norm_weight", "input_layernorm.weight", "all"),
    ("mlp.linear_fc1.weight", "mlp.gate_proj.weight", "gate"),
    ("mlp.linear_fc1.weight", "mlp.up_proj.weight", "up"),
    ("mlp.linear_fc1.layer_norm_weight", "post_attention_layernorm.weight", "all"),
    ("mlp.linear_fc2.weight", "mlp.down_proj.weight", "all"),
)


def links(layout: Layout) -> list[Link]:
    """Every HF tensor of a Qwen2 with `layout` and its place in the NeMo checkpoint."""
    out = [Link("model.embed_tokens.weight", "embedding.word_embeddings.weight", None, "vocab"),
           Link("model.norm.weight", "decoder.final_layernorm.weight", None, "all")]
    if not layout.tied:
        out.append(Link("lm_head.weight", "output_layer.weight", None, "vocab"))
    for i in range(layout.num_layers):
        out += [Link(f"model.layers.{i}.{hf}", f"decoder.layers.{nemo}", i, part) for nemo, hf, part in _LAYER_LINKS]
    return out


def piece(tensor: torch.Tensor, link: Link, layout: Layout, rows: int) -> torch.Tensor:
    """The slice of NeMo's `tensor` that holds `link.hf` (`rows`: the HF tensor's first dimension)."""
    t = tensor if link.layer is None else tensor[link.layer]
    if link.part == "all":
        return t
    if link.part == "vocab":
        return t[:rows]
    if link.part in ("gate", "up"):
        half = t.shape[0] // 2
        return t[:half] if link.part == "gate" else t[half:]
    # Megatron's fused QKV: per query group, its heads/groups query heads, then one key, one value head.
    per_group = layout.heads // layout.groups
    grouped = t.reshape(layout.groups, per_group + 2, layout.head_dim, *t.shape[1:])
    if link.part == "q":
        return grouped[:, :per_group].reshape(layout.heads * layout.head_dim, *t.shape[1:])
    return grouped[:, per_group + (link.part == "v")].reshape(layout.groups * layout.head_dim, *t.shape[1:])


def account(hf: Mapping[str, torch.Tensor], nemo: Mapping[str, torch.Tensor], layout: Layout, *,
            what: str = "the NeMo checkpoint and the HF model") -> Accounting:
    """Check that `nemo` holds exactly the tensors of `hf`: nothing unused, nothing unset, all equal.

    `hf` maps HF names to tensors, `nemo` checkpoint names (no "module.", layers stacked) to
    tensors; both may load lazily. Values are compared exactly, in the HF tensor's dtype.

    Raises:
        SailyardError: listing every HF tensor that is unused, missing or different, and every
            NeMo tensor that no HF tensor set.
    """
    expected = links(layout)
    want_hf, want_nemo = {lk.hf for lk in expected}, {lk.nemo for lk in expected}
    derived = sorted(k for k in hf if k.endswith(DERIVED_SUFFIXES))
    extra_hf = sorted(set(hf) - want_hf - set(derived))
    problems: list[str] = []
    if layout.tied and "lm_head.weight" in extra_hf:  # stored although tied: must be the embedding
        extra_hf.remove("lm_head.weight")
        if not torch.equal(hf["lm_head.weight"], hf.get("model.embed_tokens.weight", torch.empty(0))):
            problems.append(_names("tied lm_head.weight differs from model.embed_tokens.weight", ["lm_head.weight"]))
    if extra_hf:
        problems.append(_names("HF tensors that no NeMo parameter takes", extra_hf))
    if missing := sorted(want_hf - set(hf)):
        problems.append(_names("HF tensors missing", missing))
    if unset := sorted(set(nemo) - want_nemo):
        problems.append(_names("NeMo tensors that no HF tensor sets", unset))
    if absent := sorted(want_nemo - set(nemo)):
        problems.append(_names("NeMo tensors missing", absent))
    differ: list[str] = []
    elements = padding = 0
    by_nemo: dict[str, list[Link]] = {}
    for lk in expected:
        if lk.hf in hf and lk.nemo in nemo:
            by_nemo.setdefault(lk.nemo, []).append(lk)
    for name, group in by_nemo.items():
        tensor = nemo[name]  # a stacked tensor is loaded once for all its layers
        stacked = group[0].layer is not None
        if stacked and (tensor.dim() == 0 or tensor.shape[0] != layout.num_layers):
            differ.append(f"{name} (shape {tuple(tensor.shape)}, not {layout.num_layers} stacked layers)")
            continue
        for lk in group:
            want = hf[lk.hf]
            where = f"{name}[{lk.layer}]" if stacked else name
            try:
                got = piece(tensor, lk, layout, rows=want.shape[0] if want.dim() else 0)
            except RuntimeError:  # the fused tensor does not have the layout's shape
                got = None
            if got is None or got.shape != want.shape:
                differ.append(f"{lk.hf} (shape {tuple(want.shape)}; {where} gives "
                              f"{tuple(got.shape) if got is not None else tuple(tensor.shape)})")
            elif not torch.equal(got.to(want.dtype), want):
                diff = (got.to(torch.float64) - want.to(torch.float64)).abs().max().item()
                differ.append(f"{lk.hf} (→ {where}, max |diff| {diff:.3g})")
            else:
                elements += want.numel()
                if lk.part == "vocab" and lk.layer is None and lk.nemo == "embedding.word_embeddings.weight":
                    padding = tensor.shape[0] - want.shape[0]
        del tensor
    if differ:
        problems.append(_names("HF tensors not equal to what NeMo holds", differ))
    if problems:
        raise SailyardError(f"{what} differ, tensor for tensor: " + "; ".join(problems))
    return Accounting(hf_tensors=len(set(hf) - set(derived)), nemo_tensors=len(nemo), elements=elements,
                      derived=tuple(derived), padding_rows=padding)


def _names(title: str, names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit]) + (f", and {len(names) - limit} more" if len(names) > limit else "")
    return f"{len(names)} {title}: {shown}"


class SafetensorsWeights(Mapping[str, torch.Tensor]):
    """The tensors of an HF dir's safetensors files, read one at a time."""

    def __init__(self, root: Path) -> None:
        from safetensors import safe_open

        self._handles = {}
        self._where: dict[str, Any] = {}
        for path in weight_files(root):
            if path.suffix != ".safetensors":
                continue
            handle = safe_open(str(path), framework="pt")
            self._handles[path] = handle
            for key in handle.keys():
                self._where[key] = handle

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._where[key].get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


class CheckpointWeights(Mapping[str, torch.Tensor]):
    """The model tensors of a NeMo checkpoint (`weights/`, Megatron's torch_dist format), read one
    at a time with torch.distributed.checkpoint; no NeMo, no process group.

    Megatron stores each per-layer tensor as one [num_layers, …] tensor; optimizer state and
    `_extra_state` are not model tensors and are left out.
    """

    PREFIX = "module."

    def __init__(self, checkpoint: Path) -> None:
        from torch.distributed.checkpoint import FileSystemReader
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        weights = checkpoint / "weights"
        meta = weights / "metadata.json"
        backend = _read_json(meta).get("sharded_backend") if meta.is_file() else None
        if backend != "torch_dist":
            raise ConfigError(f"{checkpoint}: not a NeMo checkpoint in Megatron's torch_dist format "
                              f"(weights/metadata.json says {backend!r})")
        self._reader = FileSystemReader(str(weights))
        self._meta = {
            key[len(self.PREFIX):]: value
            for key, value in self._reader.read_metadata().state_dict_metadata.items()
            if key.startswith(self.PREFIX) and isinstance(value, TensorStorageMetadata)
        }

    def __getitem__(self, key: str) -> torch.Tensor:
        import torch.distributed.checkpoint as dcp

        meta = self._meta[key]
        tensor = torch.empty(meta.size, dtype=meta.properties.dtype)
        with warnings.catch_warnings():  # "torch.distributed is … uninitialized": as intended
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load({self.PREFIX + key: tensor}, storage_reader=self._reader, no_dist=True)
        return tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self._meta)

    def __len__(self) -> int:
        return len(self._meta)


def verify(hf_dir: str | Path, checkpoint: str | Path) -> Accounting:
    """Read both sides from disk and `account` for every tensor; see `account` for what raises."""
    hf_dir, checkpoint = Path(hf_dir), Path(checkpoint)
    layout = Layout.from_hf_config(_read_json(hf_dir / "config.json"))
    return account(SafetensorsWeights(hf_dir), CheckpointWeights(checkpoint), layout,
                   what=f"NeMo checkpoint {checkpoint} and HF model {hf_dir}")


# --- import and export --------------------------------------------------------------------------


def import_hf(model_dir: str | Path, out_dir: str | Path, *, seq_length: int,
              overwrite: bool = False) -> ImportRecord:
    """Convert an HF Qwen2 dir into a NeMo checkpoint at `out_dir` for training at `seq_length`.

    Writes `<out_dir>/sailyard_import.json` (the `ImportRecord`). Needs RAM for the model twice.

    Raises:
        ConfigError: the dir is not a Qwen2 NeMo can hold exactly, or `out_dir` exists.
        SailyardError: the written checkpoint does not hold every HF tensor (`out_dir` is left
            as it was).
    """
    source = read_hf_source(model_dir, seq_length=seq_length)
    out = _output(out_dir, overwrite, apart_from=source.dir)
    started = time.time()
    files = {p.name: file_digest(p) for p in (*source.weight_files, source.dir / "config.json")}
    llm = _prepare_nemo()
    from nemo.lightning import io

    with _staged(out) as staging:
        llm.import_ckpt(model=llm.Qwen2Model(nemo_qwen2_config(source.dir, seq_length=seq_length)),
                        source=f"{CONNECTOR}://{source.dir}", output_path=staging, seq_length=seq_length)
        cfg = io.load_context(str(staging), subpath="model.config")
        if cfg.seq_length != seq_length:  # what training will read back, not what was asked
            raise SailyardError(f"the imported checkpoint records seq_length {cfg.seq_length}, not {seq_length}")
        accounting = verify(source.dir, staging)
        record = ImportRecord(source=str(source.dir), output=str(out), seq_length=seq_length, files=files,
                              hf_config=source.config, nemo_config=_nemo_config_summary(cfg),
                              expansion=source.expansion, accounting=accounting,
                              seconds=round(time.time() - started, 2), versions=_versions())
        _write_json(staging / IMPORT_RECORD, record.to_dict())
    return record


def export_hf(checkpoint: str | Path, out_dir: str | Path, *, base: str | Path | None = None,
              overwrite: bool = False) -> ExportRecord:
    """Write the NeMo checkpoint as an HF dir that `transformers.AutoModelForCausalLM` loads.

    `checkpoint` is a checkpoint or a folder of them (its newest `*-last` is taken). HF config
    fields NeMo does not hold (max_position_embeddings, bos/eos, sliding-window settings, …) come
    from `base`: an imported checkpoint (its `sailyard_import.json`) or an HF dir; by default the
    checkpoint's own import record when it is an imported checkpoint, else NeMo's values.

    Raises:
        ConfigError: no checkpoint there, a non-Qwen2 checkpoint, a `base` that describes a
            different model, or `out_dir` exists.
        SailyardError: the written safetensors do not hold every NeMo tensor.
    """
    from trainer.pretrain import resolve_checkpoint

    ckpt = resolve_checkpoint(Path(checkpoint).expanduser().absolute())
    if not (ckpt / "context").is_dir():
        raise ConfigError(f"--checkpoint {ckpt}: no context/ inside; not a NeMo 2 checkpoint")
    base_path, base_config = _base_config(ckpt, base)
    out = _output(out_dir, overwrite, apart_from=ckpt)
    started = time.time()
    llm = _prepare_nemo()
    from nemo.lightning import io

    model = io.load_context(str(ckpt), subpath="model")
    if not isinstance(model, llm.Qwen2Model):
        raise ConfigError(f"--checkpoint {ckpt} holds a {type(model).__name__}; export-hf writes Qwen2 models")
    exporter = model.exporter(CONNECTOR, ckpt)
    exporter.base_config = base_config
    exporter.config  # noqa: B018 - a base that contradicts the checkpoint fails here, before any weight is read
    with _staged(out) as staging:
        llm.export_ckpt(path=ckpt, target=CONNECTOR, output_path=staging, overwrite=True,
                        base_config=base_config)
        accounting = verify(staging, ckpt)
        hf_config = _read_json(staging / "config.json")
        record = ExportRecord(checkpoint=str(ckpt), output=str(out), base=base_path,
                              files={p.name: file_digest(p) for p in weight_files(staging)},
                              hf_config=hf_config, accounting=accounting, seconds=round(time.time() - started, 2))
        _write_json(staging / EXPORT_RECORD, record.to_dict())
    return record


def _output(out_dir: str | Path, overwrite: bool, *, apart_from: Path) -> Path:
    out = Path(out_dir).expanduser().absolute()
    if out == apart_from or out in apart_from.parents:  # replacing it would delete the input
        raise ConfigError(f"--out {out} is or contains the input {apart_from}; write somewhere else")
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out} exists; remove it or pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    return out


@contextlib.contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A `.partial` sibling of `out` to write into; it replaces `out` only if the block succeeds."""
    staging = out.with_name(f".{out.name}.partial")
    if staging.exists():  # a killed earlier attempt
        shutil.rmtree(staging)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)


def _base_config(ckpt: Path, base: str | Path | None) -> tuple[str | None, dict[str, Any] | None]:
    """The HF config an export follows for the fields NeMo does not hold, and where it came from."""
    if base is None:
        # An imported checkpoint is its own base; a trained one has the base its run started from.
        from trainer.checkpoints import lineage

        imported = (lineage(ckpt) or {}).get("import")
        record = Path(imported) / IMPORT_RECORD if imported else ckpt / IMPORT_RECORD
        return (str(record), _read_json(record)["hf_config"]) if record.is_file() else (None, None)
    root = Path(base).expanduser().absolute()
    if (root / IMPORT_RECORD).is_file():
        return str(root / IMPORT_RECORD), _read_json(root / IMPORT_RECORD)["hf_config"]
    if (root / "config.json").is_file():
        return str(root / "config.json"), _read_json(root / "config.json")
    raise ConfigError(f"--base {root}: neither an imported checkpoint ({IMPORT_RECORD}) nor an HF dir (config.json)")


def _write_json(path: Path, obj: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("nemo-toolkit", "megatron-core", "transformers", "torch"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


_CONFIG_SUMMARY = ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups",
                   "kv_channels", "seq_length", "vocab_size", "make_vocab_size_divisible_by",
                   "share_embeddings_and_output_weights", "rotary_base", "layernorm_epsilon", "normalization",
                   "add_qkv_bias", "params_dtype", "bf16", "fp16")


def _nemo_config_summary(cfg: Any) -> dict[str, Any]:
    values = {k: getattr(cfg, k) for k in _CONFIG_SUMMARY}
    return {k: str(v).removeprefix("torch.") if isinstance(v, torch.dtype) else v for k, v in values.items()}


# --- NeMo ---------------------------------------------------------------------------------------


def _prepare_nemo() -> Any:
    """Make NeMo usable here and return `nemo.collections.llm`: the CPU patches when there is no
    GPU (`trainer.cpu_patches`), offline Hugging Face, and sailyard's connectors registered."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every read is a local directory
    from trainer import cpu_patches

    cpu_patches.apply()
    _register_connectors()
    from nemo.collections import llm

    return llm


def nemo_qwen2_config(hf_dir: Path, *, seq_length: int) -> Any:
    """NeMo's `Qwen2Config` for an HF Qwen2 dir, as NeMo's importer builds it (nemo 2.7.3), with
    the training `seq_length` and the HF `tie_word_embeddings`.

    Built by the constructor: fields assigned afterwards would not reach the checkpoint's context.
    """
    from nemo.collections.llm import Qwen2Config
    from transformers import AutoConfig, GenerationConfig

    src = AutoConfig.from_pretrained(str(hf_dir))
    dtype = _hf_dtype(src)
    generation = (GenerationConfig.from_pretrained(str(hf_dir)) if (hf_dir / "generation_config.json").is_file()
                  else GenerationConfig.from_model_config(src))
    return Qwen2Config(
        num_layers=src.num_hidden_layers, hidden_size=src.hidden_size, ffn_hidden_size=src.intermediate_size,
        num_attention_heads=src.num_attention_heads, num_query_groups=src.num_key_value_heads,
        init_method_std=src.initializer_range, layernorm_epsilon=src.rms_norm_eps, gated_linear_unit=True,
        make_vocab_size_divisible_by=VOCAB_MULTIPLE, rotary_base=src.rope_theta, vocab_size=src.vocab_size,
        share_embeddings_and_output_weights=bool(src.tie_word_embeddings), seq_length=seq_length,
        fp16=dtype == torch.float16, bf16=dtype == torch.bfloat16, params_dtype=dtype,
        generation_config=generation,
    )


def _hf_dtype(cfg: Any) -> torch.dtype:
    value = getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None) or torch.float32
    return value if isinstance(value, torch.dtype) else getattr(torch, str(value))


def memory_names(model: Any) -> Any:
    """A function from checkpoint names (`decoder.layers.*.…`) to the names `model` holds in memory.

    They differ for Megatron's local layer spec (no transformer_engine): its layers keep the norms
    as `input_layernorm` / `pre_mlp_layernorm` and rename them to TE's names on save, by their
    `sharded_state_dict_keys_map`; this applies that map backwards.
    """
    from megatron.core.transformer.transformer_layer import TransformerLayer

    layer = next((m for m in model.modules() if isinstance(m, TransformerLayer)), None)
    keys_map = dict(layer.submodules_config.sharded_state_dict_keys_map) if layer is not None else {}
    marker = "decoder.layers.*."

    def rename(name: str) -> str:
        head, sep, rest = name.partition(marker)
        for in_memory, stored in keys_map.items():
            if sep and rest.startswith(stored):
                return f"{head}{sep}{in_memory}{rest[len(stored):]}"
        return name

    return rename


#: NeMo's HF Qwen2 mapping (HFQwen2Importer.convert_state, nemo 2.7.3), in checkpoint names.
_HF_TO_NEMO = {
    "model.embed_tokens.weight": "embedding.word_embeddings.weight",
    "model.layers.*.self_attn.o_proj.weight": "decoder.layers.*.self_attention.linear_proj.weight",
    "model.layers.*.mlp.down_proj.weight": "decoder.layers.*.mlp.linear_fc2.weight",
    "model.layers.*.input_layernorm.weight": "decoder.layers.*.self_attention.linear_qkv.layer_norm_weight",
    "model.layers.*.post_attention_layernorm.weight": "decoder.layers.*.mlp.linear_fc1.layer_norm_weight",
    "model.norm.weight": "decoder.final_layernorm.weight",
    "lm_head.weight": "output_layer.weight",
}
_QKV_HF = tuple(f"model.layers.*.self_attn.{p}_proj" for p in "qkv")
_QKV_NEMO = "decoder.layers.*.self_attention.linear_qkv"
_FC1_HF = ("model.layers.*.mlp.gate_proj.weight", "model.layers.*.mlp.up_proj.weight")
_FC1_NEMO = "decoder.layers.*.mlp.linear_fc1.weight"


@cache
def _register_connectors() -> None:
    """Define sailyard's Qwen2 importer and exporter and register them on `llm.Qwen2Model` under
    `CONNECTOR`. Defined here, not at module level, so that importing this module starts no NeMo."""
    import tempfile

    from nemo.collections import llm
    from nemo.collections.common.tokenizers.huggingface.auto_tokenizer import AutoTokenizer
    from nemo.collections.llm.gpt.model.base import torch_dtype_from_mcore_config
    from nemo.collections.llm.gpt.model.qwen2 import HFQwen2Exporter, HFQwen2Importer
    from nemo.lightning import io, teardown
    from nemo.lightning.io.state import TransformFns

    @io.model_importer(llm.Qwen2Model, CONNECTOR)
    class SailyardQwen2Importer(HFQwen2Importer):
        """NeMo's importer with the training sequence length, tied embeddings and norms that land."""

        def apply(self, output_path: Path, trust_remote_code: bool | None = None, *, seq_length: int) -> Path:
            from transformers import AutoModelForCausalLM

            self.trust_remote_code = False
            self.seq_length = seq_length
            # NeMo writes the tokenizer to a fixed /tmp/nemo_tokenizer: two imports at once would mix.
            with tempfile.TemporaryDirectory(prefix="sailyard-import-") as tmp:
                self.tokenizer_dir = str(Path(tmp) / "nemo_tokenizer")  # its name in context/, as NeMo's
                source = AutoModelForCausalLM.from_pretrained(str(self), dtype="auto")
                target = self.init()
                trainer = self.nemo_setup(target, ckpt_async_save=False)
                self.convert_state(source, target)
                self.nemo_save(output_path, trainer)
                teardown(trainer, target)
            return output_path

        @property
        def config(self) -> Any:
            return nemo_qwen2_config(Path(str(self)), seq_length=self.seq_length)

        @property
        def tokenizer(self) -> Any:
            if getattr(self, "_tokenizer", None) is None:
                from transformers import AutoTokenizer as HFAutoTokenizer

                HFAutoTokenizer.from_pretrained(str(self)).save_pretrained(self.tokenizer_dir)
                self._tokenizer = AutoTokenizer(self.tokenizer_dir)
            return self._tokenizer

        def convert_state(self, source: Any, target: Any) -> Any:
            name = memory_names(target)
            mapping = {hf: name(nemo) for hf, nemo in _HF_TO_NEMO.items()}
            if target.config.share_embeddings_and_output_weights:
                del mapping["lm_head.weight"]
            transforms = [
                io.state_transform(source_key=tuple(f"{p}.weight" for p in _QKV_HF),
                                   target_key=name(f"{_QKV_NEMO}.weight"), fn=TransformFns.merge_qkv),
                io.state_transform(source_key=tuple(f"{p}.bias" for p in _QKV_HF),
                                   target_key=name(f"{_QKV_NEMO}.bias"), fn=TransformFns.merge_qkv_bias),
                io.state_transform(source_key=_FC1_HF, target_key=name(_FC1_NEMO), fn=TransformFns.merge_fc1),
            ]
            # Local-spec norms are created in fp32 whatever the model's dtype; the checkpoint holds
            # everything in the model's dtype, as a TE model on a GPU does.
            return io.apply_transforms(source, target, mapping=mapping, transforms=transforms,
                                       cast_dtype=target.config.params_dtype)

    @io.model_exporter(llm.Qwen2Model, CONNECTOR)
    class SailyardQwen2Exporter(HFQwen2Exporter):
        """NeMo's exporter with tied embeddings, bos/eos and the source's HF-only config fields."""

        base_config: dict[str, Any] | None = None

        def apply(self, output_path: Path, trust_remote_code: bool | None = None, *,
                  base_config: dict[str, Any] | None = None) -> Path:
            self.trust_remote_code = False
            self.base_config = base_config
            source, _ = self.nemo_load(str(self))
            target = self.init(torch_dtype_from_mcore_config(source.config))
            target = self.convert_state(source, target).cpu()
            generation = getattr(source.config, "generation_config", None)
            if generation is not None:
                target.generation_config = generation
            target.save_pretrained(output_path)
            self.tokenizer.save_pretrained(output_path)
            return output_path

        @property
        def config(self) -> Any:
            from transformers import Qwen2Config as HFQwen2Config

            stock = super().config
            nemo_cfg = io.load_context(str(self), subpath="model.config")
            held = {k: getattr(stock, k) for k in _NEMO_HELD}
            held["tie_word_embeddings"] = bool(nemo_cfg.share_embeddings_and_output_weights)
            base = {k: v for k, v in (self.base_config or {}).items() if k not in HF_META_FIELDS}
            if not base:  # NeMo's values, and bos/eos from the generation config NeMo keeps
                generation = getattr(nemo_cfg, "generation_config", None)
                for key in ("bos_token_id", "eos_token_id"):
                    if getattr(generation, key, None) is not None:
                        setattr(stock, key, getattr(generation, key))
                stock.tie_word_embeddings = held["tie_word_embeddings"]
                return stock
            clash = {k: (base[k], v) for k, v in held.items() if k in base and base[k] != v}
            if clash:
                raise ConfigError("the base config describes another model than the checkpoint: " + ", ".join(
                    f"{k} {b!r} there, {v!r} in the checkpoint" for k, (b, v) in sorted(clash.items())))
            return HFQwen2Config(**base | held, architectures=["Qwen2ForCausalLM"])

        def convert_state(self, source: Any, target: Any) -> Any:
            name = memory_names(source)
            tied = bool(source.config.share_embeddings_and_output_weights)
            mapping = {name(nemo): hf for hf, nemo in _HF_TO_NEMO.items()
                       if hf not in ("model.embed_tokens.weight", "lm_head.weight")}
            transforms = [
                io.state_transform(source_key=name(f"{_QKV_NEMO}.weight"),
                                   target_key=tuple(f"{p}.weight" for p in _QKV_HF), fn=TransformFns.split_qkv),
                io.state_transform(source_key=name(f"{_QKV_NEMO}.bias"),
                                   target_key=tuple(f"{p}.bias" for p in _QKV_HF), fn=TransformFns.split_qkv_bias),
                io.state_transform(source_key=name(_FC1_NEMO), target_key=_FC1_HF, fn=TransformFns.split_fc1),
                io.state_transform(source_key="embedding.word_embeddings.weight",
                                   target_key="model.embed_tokens.weight", fn=TransformFns.prune_padding),
            ]
            if not tied:
                transforms.append(io.state_transform(source_key="output_layer.weight", target_key="lm_head.weight",
                                                     fn=TransformFns.prune_padding))
            dtype = next(target.parameters()).dtype
            target = io.apply_transforms(source, target, mapping=mapping, transforms=transforms, cast_dtype=dtype,
                                         state_dict_ignored_entries=["lm_head.weight"] if tied else [])
            if tied:
                target.tie_weights()  # lm_head still points at the embedding the mapping replaced
            return target


#: HF Qwen2 config fields that NeMo's config holds (the rest an export takes from the base config).
_NEMO_HELD = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
              "rms_norm_eps", "rope_theta", "vocab_size", "initializer_range")
