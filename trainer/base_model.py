"""A stand-in for the Hugging Face base model where none can be downloaded.

Sailor2 starts from Qwen2.5 weights; the demo and the tests have no model hub, so they start from a
Qwen2 of the shape a `ModelArgs` names, randomly initialised with a fixed seed and saved exactly as
`save_pretrained` writes a real checkpoint (sharded safetensors, config.json, the bundled Qwen2.5
tokenizer). Everything after it — `sailyard expand`, `import-hf`, both stages, `export-hf` — is the
path a real Qwen2.5 directory takes.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from trainer.config import ModelArgs

#: Qwen2.5's special tokens: <|endoftext|> (also BOS in its config) and <|im_end|>.
QWEN_BOS, QWEN_EOS = 151643, 151645


def hf_config(m: ModelArgs, *, max_position_embeddings: int = 32768) -> dict[str, Any]:
    """The config.json fields of a Qwen2.5-style model with `m`'s shape."""
    return {"vocab_size": m.vocab_size, "hidden_size": m.hidden_size, "intermediate_size": m.ffn_hidden_size,
            "num_hidden_layers": m.num_layers, "num_attention_heads": m.num_attention_heads,
            "num_key_value_heads": m.num_query_groups, "max_position_embeddings": max_position_embeddings,
            "tie_word_embeddings": m.tie_embeddings, "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6,
            "bos_token_id": QWEN_BOS, "eos_token_id": QWEN_EOS, "use_sliding_window": False}


def model_args(config: dict[str, Any], *, seq_length: int) -> ModelArgs:
    """The trainer's `ModelArgs` for an HF Qwen2 config.json (after `sailyard expand`, say)."""
    return ModelArgs(num_layers=config["num_hidden_layers"], hidden_size=config["hidden_size"],
                     ffn_hidden_size=config["intermediate_size"], num_attention_heads=config["num_attention_heads"],
                     num_query_groups=config.get("num_key_value_heads", config["num_attention_heads"]),
                     seq_length=seq_length, vocab_size=config["vocab_size"],
                     tie_embeddings=bool(config.get("tie_word_embeddings", False)))


def write_random_qwen2(out: str | Path, m: ModelArgs, *, seed: int = 0, max_shard_size: str = "50MB") -> Path:
    """Save a seeded random Qwen2 of shape `m` (fp32) with the bundled tokenizer; returns `out`.

    An existing `out` written with the same shape and seed is kept as it is (the demo reruns).
    """
    import json

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from data_engine.tokenizer import tokenizer_dir

    out = Path(out)
    stamp = {"shape": hf_config(m), "seed": seed}
    marker = out / "sailyard_random_init.json"
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == stamp:
        return out
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(**hf_config(m), dtype="float32")).eval()
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, max_shard_size=max_shard_size)
    for path in tokenizer_dir("qwen2.5").iterdir():
        shutil.copy(path, tmp)
    (tmp / marker.name).write_text(json.dumps(stamp, indent=2), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out
