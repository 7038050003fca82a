"""The helpers of `trainer.freeze`, checked on real Megatron and torch objects.

The real run — an expanded, imported Qwen2 whose stage 2 trains only LlamaPro's new layers, then
resumes with its optimizer state — is part of the two-stage chain in test_stages.py.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch

from trainer import freeze

NEW_LAYERS = (1, 3)  # LlamaPro's placement for 2 → 4: a copy after each original layer
OPTIMIZER_KEY = re.compile(r"^optimizer\.state\.(exp_avg|exp_avg_sq)\.module\.decoder\.layers\.(\d+)\.")


# --- helpers on real Megatron / torch objects ---------------------------------------------------


def test_trainable_names_go_by_global_layer_not_module_index():
    # The second of two pipeline stages of a 12-layer model: local layers 0..5 are global 6..11.
    layers = {f"module.decoder.layers.{k}": 6 + k for k in range(6)}
    names = [f"module.decoder.layers.{k}.mlp.linear_fc1.weight" for k in range(6)]
    names += ["module.decoder.final_layernorm.weight", "module.output_layer.weight"]
    assert freeze.trainable_names(names, layers, {1, 7, 11}) == {
        "module.decoder.layers.1.mlp.linear_fc1.weight",  # global 7
        "module.decoder.layers.5.mlp.linear_fc1.weight",  # global 11
    }
    # layer 1 must not capture layer 10, nor 11
    many = {f"decoder.layers.{k}": k for k in range(12)}
    assert freeze.trainable_names([f"decoder.layers.{k}.w" for k in range(12)], many, {1}) == {"decoder.layers.1.w"}
    assert freeze.trainable_names(names, layers, {0}) == set()  # nothing of this stage trains


def test_layer_key():
    assert (freeze.layer_key("optimizer.state.exp_avg.module.decoder.layers.mlp.linear_fc2.weight", 3)
            == "optimizer.state.exp_avg.module.decoder.layers.3.mlp.linear_fc2.weight")
    with pytest.raises(ValueError, match="names no decoder layer"):
        freeze.layer_key("optimizer.state.exp_avg.module.embedding.word_embeddings.weight", 0)


def test_per_layer_moves_the_layer_axis_into_the_key():
    from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensor, ShardedTensorFactory

    key = "optimizer.state.exp_avg.module.decoder.layers.mlp.linear_fc2.weight"
    # Layer 3 of 4, the second of two tensor-parallel shards along the local axis 0.
    stacked = ShardedTensor.from_rank_offsets(key, torch.ones(8, 16), (0, 3, 4), (1, 1, 2), replica_id=(0, 0, 0),
                                              prepend_axis_num=1)
    assert (stacked.global_shape, stacked.global_offset) == ((4, 16, 16), (3, 8, 0))
    one = freeze.per_layer(stacked)
    assert one.key == "optimizer.state.exp_avg.module.decoder.layers.3.mlp.linear_fc2.weight"
    assert (one.global_shape, one.global_offset, one.axis_fragmentations) == ((16, 16), (8, 0), (2, 1))
    assert one.prepend_axis_num == 0 and one.local_shape == (8, 16) and one.data is stacked.data
    assert one.replica_id == (0, 0, 0)

    def build_fn(k: str, data: torch.Tensor, replica_id: Any, flattened_range: Any) -> dict[str, Any]:
        return {"w": ShardedTensor.from_rank_offsets(k, data, (0, 1, 4), replica_id=replica_id, prepend_axis_num=1)}

    factory = ShardedTensorFactory(key, torch.ones(8), build_fn, lambda sub: sub["w"])
    built = freeze.per_layer(factory).build()
    assert built["w"].key == "optimizer.state.exp_avg.module.decoder.layers.1.mlp.linear_fc2.weight"
    assert built["w"].global_shape == (8,)

    others = [ShardedTensor.from_rank_offsets("optimizer.state.exp_avg.module.embedding.word_embeddings.weight",
                                              torch.ones(4, 2)),
              ShardedObject("optimizer.param_groups", {}, (1,), (0,)), 3.0, "text"]
    assert all(freeze.per_layer(v) is v for v in others)


def test_frozen_embedding_under_reentrant_recompute_needs_the_hook():
    """Full recompute checkpoints each layer with a reentrant autograd function: the layer's
    parameters get gradients only if the layer's input requires grad."""
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(10, 4).requires_grad_(False)
    layer = torch.nn.Linear(4, 4)
    ids = torch.tensor([[1, 2, 3]])

    def step() -> None:
        torch.utils.checkpoint.checkpoint(layer, embedding(ids), use_reentrant=True).sum().backward()

    with pytest.raises(RuntimeError, match="does not require grad"):
        step()
    embedding.register_forward_hook(freeze.output_requires_grad)
    step()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    assert embedding.weight.grad is None
    with torch.no_grad():
        assert not embedding(ids).requires_grad  # evaluation stays free of autograd


def test_callbacks_for_the_switch():
    assert freeze.callbacks(None) == []
    (callback,) = freeze.callbacks((1, 3))
    assert isinstance(callback, freeze.FreezeOutsideLayers) and callback.trainable == {1, 3}
    with pytest.raises(ValueError, match="at least one"):
        freeze.FreezeOutsideLayers(())
