"""The FLOPs behind MFU count the parameters transformers' own Qwen2 has."""

from __future__ import annotations

import pytest

from trainer.config import ModelArgs
from trainer.flops import flops_per_token, parameters

QWEN25_05B = ModelArgs(num_layers=24, hidden_size=896, ffn_hidden_size=4864, num_attention_heads=14,
                       num_query_groups=2, seq_length=4096, vocab_size=151936, tie_embeddings=True)


@pytest.mark.parametrize("m", [ModelArgs(vocab_size=1000), QWEN25_05B,
                               ModelArgs(num_layers=48, hidden_size=896, ffn_hidden_size=4864, num_attention_heads=14,
                                         num_query_groups=2, vocab_size=151936, tie_embeddings=False)])
def test_parameters_match_transformers(m: ModelArgs) -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=m.vocab_size, hidden_size=m.hidden_size, intermediate_size=m.ffn_hidden_size,
                      num_hidden_layers=m.num_layers, num_attention_heads=m.num_attention_heads,
                      num_key_value_heads=m.num_query_groups, tie_word_embeddings=m.tie_embeddings)
    with torch.device("meta"):  # shapes only: the 1B counts without allocating it
        model = Qwen2ForCausalLM(cfg)
    assert parameters(m) == sum(p.numel() for p in model.parameters())


def test_flops_per_token_is_six_n_plus_attention() -> None:
    m = QWEN25_05B
    n = parameters(m) - 0  # tied: the one embedding matrix is also the output layer's product
    assert flops_per_token(m, 4096) == 6 * n + 12 * 24 * 896 * 4096
    assert 6 * 494e6 < flops_per_token(m, 4096) < 6 * 494e6 * 1.5  # Qwen2.5-0.5B has 494M parameters
