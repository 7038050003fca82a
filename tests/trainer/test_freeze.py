"""`train_only_new_blocks`: a LlamaPro-expanded Qwen2 trains its new layers and nothing else.

The real path end to end, on the CPU: a random 2-layer Qwen2 (hidden 64, the full Qwen vocabulary,
which the shards' token ids need) is expanded to 4 layers by `trainer.expand.expand` (new layers
1 and 3), imported by `trainer.convert.import_hf`, and trained by `python -m trainer.pretrain`
restoring from the import, at a learning rate and weight decay that change whatever the optimizer
holds; then resumed for two more steps. The checkpoints are compared with the import tensor by
tensor. The helpers of `trainer.freeze` are checked on real Megatron and torch objects.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from test_expand import build, qwen2_config  # tests/trainer is on sys.path (no packages)
from test_pretrain import REPO, config, launch

from data_engine.tokenizer import QWEN_PADDED_VOCAB, tokenizer_dir
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


# --- a real expanded, imported, frozen run ------------------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SAILYARD_PARENT_RUN_ID")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _import(hf_dir: Path, out: Path) -> None:
    """`trainer.convert.import_hf` in its own process: NeMo's CPU patches are process-wide."""
    code = ("import sys; from trainer.convert import import_hf; "
            "import_hf(sys.argv[1], sys.argv[2], seq_length=64)")
    proc = subprocess.run([sys.executable, "-c", code, str(hf_dir), str(out)], cwd=out.parent, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _optimizer_keys(checkpoint: Path) -> list[str]:
    from torch.distributed.checkpoint import FileSystemReader

    meta = FileSystemReader(str(checkpoint / "weights")).read_metadata().state_dict_metadata
    return sorted(k for k in meta if k.startswith("optimizer."))


@pytest.fixture(scope="module")
def frozen(tmp_path_factory: pytest.TempPathFactory, shard_lake: Path) -> dict[str, Any]:
    from trainer.expand import count_parameters, expand, read_config

    root = tmp_path_factory.mktemp("freeze")
    base = build(root / "hf2", qwen2_config(vocab_size=QWEN_PADDED_VOCAB, num_hidden_layers=2))
    for path in tokenizer_dir("qwen2.5").iterdir():  # the importer stores the tokenizer
        shutil.copy(path, base)
    record = expand(base, 4, root / "hf4")
    assert tuple(record.new_layer_indices) == NEW_LAYERS
    imported = root / "nemo4"
    _import(root / "hf4", imported)
    cfg = config("llamapro", shard_lake, root / "work", stage="stage1", max_steps=3, restore_from=str(imported),
                 train_only_new_blocks=True, model={"num_layers": 4},
                 schedule={"lr": 1e-2, "min_lr": 1e-3, "warmup_ratio": 0.0, "hold_ratio": 1.0})
    first, stderr = launch(root, "llamapro", cfg)
    first_ckpt = Path(first["checkpoint"])
    weights_first = dict(model_tensors(first_ckpt))  # read before the resumed run prunes it
    optimizer_first = _optimizer_keys(first_ckpt)
    resumed, _ = launch(root, "llamapro", cfg, "--max-steps", "5")
    return {"imported": imported, "first": first, "stderr": stderr, "weights_first": weights_first,
            "optimizer_first": optimizer_first, "resumed": resumed,
            "old_params": count_parameters(read_config(base)),
            "new_params": count_parameters(read_config(root / "hf4"))}


def model_tensors(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Every model tensor of a NeMo checkpoint (per-layer tensors are [num_layers, …])."""
    from trainer.convert import CheckpointWeights

    weights = CheckpointWeights(checkpoint)
    return {key: weights[key] for key in weights}


def _assert_only_new_layers_changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> None:
    assert sorted(before) == sorted(after)
    assert "embedding.word_embeddings.weight" in after and "output_layer.weight" in after  # untied
    for key, old in before.items():
        new = after[key]
        if key.startswith("decoder.layers."):
            assert new.shape[0] == 4, key
            for layer in range(4):
                same = torch.equal(old[layer], new[layer])
                assert same == (layer not in NEW_LAYERS), f"{key} layer {layer}: {'unchanged' if same else 'changed'}"
        else:  # embeddings, output layer, final norm
            assert torch.equal(old, new), f"{key} changed"


def test_only_the_new_layers_train(frozen: dict[str, Any]):
    first = frozen["first"]
    assert first["status"] == "ok" and first["steps"] == 3
    assert first["restored_from"] == str(frozen["imported"])
    imported = model_tensors(frozen["imported"])
    _assert_only_new_layers_changed(imported, frozen["weights_first"])


def test_the_split_is_logged(frozen: dict[str, Any]):
    # 2 old layers + embeddings, output layer and final norm are frozen; the 2 new layers train.
    trainable, frozen_count = frozen["new_params"] - frozen["old_params"], frozen["old_params"]
    assert trainable == 74_240 and frozen_count == 19_522_112
    assert (f"freeze: {trainable:,} parameters train (0.38%), {frozen_count:,} frozen; training decoder layers "
            "1, 3 (0-based)") in frozen["stderr"]


def test_the_optimizer_holds_only_the_new_layers(frozen: dict[str, Any]):
    keys = frozen["optimizer_first"]
    assert keys and all(OPTIMIZER_KEY.match(k) for k in keys), keys
    assert {int(OPTIMIZER_KEY.match(k).group(2)) for k in keys} == set(NEW_LAYERS)
    # exp_avg and exp_avg_sq of the 7 tensors of each of the 2 new layers
    assert len(keys) == 2 * 7 * len(NEW_LAYERS)


def test_a_frozen_run_resumes_with_its_optimizer_state(frozen: dict[str, Any]):
    first, resumed = frozen["first"], frozen["resumed"]
    assert resumed["status"] == "ok" and resumed["steps"] == 5
    assert resumed["resumed_from"] == first["checkpoint"]
    last = Path(resumed["checkpoint"])
    after = model_tensors(last)
    _assert_only_new_layers_changed(model_tensors(frozen["imported"]), after)
    _assert_only_new_layers_changed(frozen["weights_first"], after)  # and they kept training
    assert _optimizer_keys(last) == frozen["optimizer_first"]
    # Megatron keeps Adam's step in the checkpoint's common state: 3 steps loaded + 2 taken (a fresh
    # optimizer would say 2).
    common = torch.load(last / "weights" / "common.pt", weights_only=False)
    assert float(common["optimizer"][0]["state"]["common_step"]) == 5
