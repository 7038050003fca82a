"""What a Qwen2 training step costs: parameters, model FLOPs a token, and a device's peak.

Model FLOPs count what the model needs, not what recomputation adds (the usual MFU definition,
PaLM appendix B): 6 per parameter and token for the matrix products, forward and backward, plus
12 · layers · hidden · sequence per token for attention scores. Pure, so that sizing a cluster run
needs no torch.
"""

from __future__ import annotations

import os

from trainer.config import ModelArgs

#: Dense bf16 peak of one device in TFLOP/s, by a substring of `torch.cuda.get_device_name()`.
#: `$SAILYARD_PEAK_TFLOPS` overrides it (other devices, other precisions).
PEAK_TFLOPS: dict[str, float] = {"H200": 989.0, "H100": 989.0, "GH200": 989.0, "B200": 2250.0, "A100": 312.0,
                                 "L40S": 362.0, "A10": 125.0}
PEAK_ENV = "SAILYARD_PEAK_TFLOPS"


def parameters(m: ModelArgs) -> int:
    """Parameters of a Qwen2 decoder: attention with q/k/v biases, SwiGLU MLP, two RMSNorms a layer."""
    head = m.hidden_size // m.num_attention_heads
    kv = head * m.num_query_groups
    attention = m.hidden_size * (m.hidden_size + 2 * kv) + (m.hidden_size + 2 * kv) + m.hidden_size * m.hidden_size
    mlp = 3 * m.hidden_size * m.ffn_hidden_size
    layer = attention + mlp + 2 * m.hidden_size
    embeddings = m.vocab_size * m.hidden_size * (1 if m.tie_embeddings else 2)
    return m.num_layers * layer + embeddings + m.hidden_size


def flops_per_token(m: ModelArgs, seq_length: int) -> float:
    """Training FLOPs a token costs (forward + backward), without the embedding lookup."""
    matmul = parameters(m) - m.vocab_size * m.hidden_size * (0 if m.tie_embeddings else 1)  # lookup is free
    return 6.0 * matmul + 12.0 * m.num_layers * m.hidden_size * seq_length


def peak_flops(gpu: bool) -> float | None:
    """One device's peak FLOP/s, or None where unknown (CPUs: no MFU is logged)."""
    if os.environ.get(PEAK_ENV):
        return float(os.environ[PEAK_ENV]) * 1e12
    if not gpu:
        return None
    import torch

    name = torch.cuda.get_device_name()
    for key, tflops in sorted(PEAK_TFLOPS.items(), key=lambda kv: -len(kv[0])):
        if key in name:
            return tflops * 1e12
    return None
