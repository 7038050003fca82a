"""Train only some decoder layers (LlamaPro's new blocks); everything else frozen.

LlamaPro trains the blocks it inserted and keeps the original model (embeddings, output layer,
final norm, the old layers) exactly as it was, so what the base model knew is not overwritten.
Freezing here means `requires_grad=False`, set before Megatron builds anything from the model:

* Megatron's DDP allocates gradient buffers and registers gradient hooks only for parameters that
  require grad (megatron/core/distributed/distributed_data_parallel.py:133 and :343), and
  `get_megatron_optimizer` groups only those (`_get_param_groups`, megatron/core/optimizer/__init__.py:99).
  A parameter frozen after that would stay in the optimizer, and AdamW's decoupled weight decay
  would still shrink it every step: it must be frozen before.
* Both are built in `MegatronStrategy.setup` → `setup_megatron_parallel`
  (nemo/lightning/pytorch/strategies/megatron_strategy.py:665-698): `MegatronParallel(...)` (which
  configures the virtual-pipeline chunks after the first), then `self.init_model_parallel()`
  (→ `MegatronParallel.init_model_parallel` → `init_ddp`, nemo/lightning/megatron_parallel.py:570/628),
  then `setup_optimizers`.
* Lightning's hooks miss that window (lightning/pytorch/trainer/trainer.py:943-961): a callback's
  `setup` runs before `configure_model` builds the Megatron module (nothing to freeze yet),
  `on_fit_start` after `strategy.setup` (DDP and optimizer already hold every parameter). NeMo's
  `ModelTransform` applies at `on_train_epoch_start`, later still (PEFT re-runs the strategy's
  set-up to cope).

So `FreezeOutsideLayers.setup` wraps the strategy's `init_model_parallel`: the freeze runs when
every model chunk of this rank exists and before any is wrapped. Nothing in `trainer.pretrain`
changes but the callback list.

Checkpoints: the model state still holds every parameter (a state dict does not look at
`requires_grad`). The optimizer's does not, and Megatron stores each per-layer tensor, and the
optimizer state derived from it, as one `[num_layers, …]` tensor under a key without the layer
(`optimizer.state.exp_avg.module.decoder.layers.mlp.linear_fc1.weight`); state for layers 1 and 3
of 4 leaves that tensor half-covered and the save fails ("Invalid access pattern",
megatron/core/dist_checkpointing/validation.py:495). The callback therefore also wraps the
strategy's `optimizer_sharded_state_dict` (used by both `save_checkpoint` and `load_checkpoint`,
megatron_strategy.py:1081 and :1171) to store that state one layer a key
(`…decoder.layers.3.mlp.linear_fc1.weight`, the form Megatron itself uses for non-homogeneous
layers, megatron/core/transformer/transformer_block.py:792). A resumed run freezes the same
layers (the run identity records the switch) and so asks for the same keys; stage 2 restored from
such a run loads weights only. The distributed optimizer's default checkpoint format on a GPU
(`dp_reshardable`) keys its state by gradient bucket (megatron/core/optimizer/distrib_optimizer.py:1527),
not by layer, and passes through as it is (not run here: this machine has no GPU).

With full activation recompute the frozen embedding's output is made to require grad, or the new
layers would get no gradient (`output_requires_grad`).
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lightning.pytorch import Callback

#: A decoder layer in Megatron's module tree; its index is local to the pipeline stage (chunk).
LAYER_PATH = re.compile(r"(?:^|\.)decoder\.layers\.\d+$")
#: Where a checkpoint key of a layer-stacked tensor names the decoder layers.
LAYERS_KEY = "decoder.layers."
#: The input embedding of a pipeline's first stage (Megatron's GPTModel.embedding).
EMBEDDING_PATH = re.compile(r"(?:^|\.)embedding$")


@dataclass(frozen=True)
class Split:
    """Parameters of one rank by whether they train (counted in elements)."""

    trainable: int
    frozen: int
    layers: tuple[int, ...]  # the 0-based global layers on this rank that train


def callbacks(trainable_layers: Sequence[int] | None) -> list[Any]:
    """Lightning callbacks that freeze every parameter outside `trainable_layers` (None: train all)."""
    if trainable_layers is None:
        return []
    return [FreezeOutsideLayers(trainable_layers)]


def trainable_names(names: Iterable[str], layers: Mapping[str, int], trainable: Collection[int]) -> set[str]:
    """The parameter names that train: those inside a layer module whose global index is in `trainable`.

    `layers` maps each decoder layer's module path to its 0-based *global* index. The path holds
    the index local to its pipeline stage (`decoder.layers.0` on every stage), so it cannot say
    which layer it is when pipeline parallelism splits the model; the global index comes from
    Megatron's `layer_number` (1-based, offset by the stage's first layer; Megatron's own
    checkpoint offsets use it the same way, megatron/core/transformer/transformer_block.py:789).
    """
    prefixes = tuple(f"{path}." for path, index in layers.items() if index in trainable)
    return {name for name in names if name.startswith(prefixes)} if prefixes else set()


def layer_indices(module: Any) -> dict[str, int]:
    """Module path → 0-based global layer index for every decoder layer in `module`."""
    found = {}
    for path, sub in module.named_modules():
        if LAYER_PATH.search(path):
            if not isinstance(getattr(sub, "layer_number", None), int):
                raise TypeError(f"{path} ({type(sub).__name__}) has no Megatron layer_number")
            found[path] = sub.layer_number - 1
    return found


def freeze(chunks: Iterable[Any], trainable: Collection[int]) -> Split:
    """Set `requires_grad=False` on every parameter of `chunks` outside the `trainable` layers.

    `chunks` are this rank's model chunks (one per virtual pipeline stage). Parameters inside a
    trainable layer keep their flag.

    Raises:
        ValueError: a trainable index is not a layer of the model (checked against num_layers,
            which every pipeline stage knows).
    """
    counts = {True: 0, False: 0}
    on_rank: set[int] = set()
    for chunk in chunks:
        num_layers = chunk.config.num_layers
        outside = sorted(i for i in trainable if not 0 <= i < num_layers)
        if outside:
            raise ValueError(f"trainable layers {outside} are not layers of a {num_layers}-layer model")
        layers = layer_indices(chunk)
        on_rank.update(i for i in layers.values() if i in trainable)
        params = dict(chunk.named_parameters())
        keep = trainable_names(params, layers, trainable)
        for name, param in params.items():
            if name not in keep:
                param.requires_grad_(False)
            counts[param.requires_grad] += param.numel()
        if getattr(chunk.config, "recompute_granularity", None) == "full":
            for path, sub in chunk.named_modules():
                if EMBEDDING_PATH.search(path):
                    sub.register_forward_hook(output_requires_grad)
    return Split(trainable=counts[True], frozen=counts[False], layers=tuple(sorted(on_rank)))


def output_requires_grad(module: Any, inputs: Any, output: Any) -> Any:
    """Forward hook: the embedding's output requires grad even though the embedding is frozen.

    Full activation recompute runs each layer inside Megatron's reentrant `CheckpointFunction`
    (megatron/core/tensor_parallel/random.py:407, called from transformer_block.py:456), whose
    outputs require grad only if one of its tensor inputs does; the layers' own parameters are not
    inputs. With the embedding and the layers before the first new one frozen, no input does, so
    the new layers would get no gradient (and the loss none to go backward from). Torch's
    reentrant checkpoint behaves the same; Hugging Face's `enable_input_require_grads` is this
    hook. Later pipeline stages need none: what they receive already requires grad.
    """
    del module, inputs
    import torch

    if torch.is_grad_enabled() and isinstance(output, torch.Tensor) and not output.requires_grad:
        output.requires_grad_(True)
    return output


def layer_key(key: str, layer: int) -> str:
    """`…decoder.layers.<rest>` → `…decoder.layers.<layer>.<rest>`."""
    head, found, rest = key.partition(LAYERS_KEY)
    if not found:
        raise ValueError(f"{key!r} names no decoder layer")
    return f"{head}{LAYERS_KEY}{layer}.{rest}"


def per_layer(value: Any) -> Any:
    """A sharded-state-dict leaf with its decoder-layer axis turned into its key (see the module
    docstring); anything else as it is.

    A `ShardedTensor` of a layer-stacked key has the global layer as its first prepended axis
    (offset = `layer_number - 1`); a `ShardedTensorFactory` (the SwiGLU `linear_fc1` split) builds
    such tensors when saved, so its builder's output is rewritten the same way, and its merge
    (after loading) sees the same structure it built.
    """
    from megatron.core.dist_checkpointing.dict_utils import dict_list_map_inplace
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

    if isinstance(value, ShardedTensorFactory) and LAYERS_KEY in value.key:
        build = value.build_fn

        def build_per_layer(*args: Any) -> Any:
            return dict_list_map_inplace(per_layer, build(*args))

        return dataclasses.replace(value, build_fn=build_per_layer)
    if not isinstance(value, ShardedTensor) or LAYERS_KEY not in value.key or value.prepend_axis_num < 1:
        return value
    fragments = value.axis_fragmentations
    return dataclasses.replace(value, key=layer_key(value.key, value.global_offset[0]),
                               global_shape=value.global_shape[1:], global_offset=value.global_offset[1:],
                               axis_fragmentations=None if fragments is None else fragments[1:],
                               prepend_axis_num=value.prepend_axis_num - 1)


def report(split: Split) -> str:
    """The line logged once a rank is frozen."""
    rank = _rank()
    where = f" on (tensor, pipeline) rank {rank}" if rank != (0, 0) else ""
    total = split.trainable + split.frozen
    share = split.trainable / total if total else 0.0
    layers = ", ".join(map(str, split.layers)) or "none (this pipeline stage holds no trainable layer)"
    return (f"freeze: {split.trainable:,} parameters train ({share:.2%}), {split.frozen:,} frozen{where}; "
            f"training decoder layers {layers} (0-based); embeddings, output layer, final norm and every "
            "other layer stay as restored")


def _rank() -> tuple[int, int]:
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        return (0, 0)
    return (parallel_state.get_tensor_model_parallel_rank(), parallel_state.get_pipeline_model_parallel_rank())


def _first_of_data_parallel() -> bool:
    from megatron.core import parallel_state

    return not parallel_state.model_parallel_is_initialized() or parallel_state.get_data_parallel_rank() == 0


class FreezeOutsideLayers(Callback):
    """Freeze all but the given decoder layers before Megatron's DDP and optimizer are built.

    Layers are 0-based *global* indices (what `expansion.json`'s `new_layer_indices` holds), matched
    through Megatron's `layer_number`, so the same indices are right on every pipeline stage and
    virtual-pipeline chunk (PP>1), not only on a single stage. See the module docstring for when
    the freeze happens and why.
    """

    def __init__(self, trainable_layers: Sequence[int]) -> None:
        super().__init__()
        if not trainable_layers:
            raise ValueError("FreezeOutsideLayers needs at least one trainable layer")
        self.trainable = frozenset(int(i) for i in trainable_layers)
        self.split: Split | None = None
        self._wrapped: Any = None  # the strategy whose methods are wrapped (once per strategy)

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Hook the freeze into the strategy's set-up, which runs next (see the module docstring)."""
        del pl_module
        if stage != "fit" or self._wrapped is trainer.strategy:
            return
        strategy = trainer.strategy
        original = getattr(strategy, "init_model_parallel", None)
        if original is None or not getattr(strategy, "_init_model_parallel", False):
            raise TypeError(f"train_only_new_blocks needs NeMo's MegatronStrategy building the model parallel "
                            f"wrappers itself; got {type(strategy).__name__}")

        def init_model_parallel() -> None:
            self.split = freeze(strategy.megatron_parallel, self.trainable)
            if _first_of_data_parallel():
                print(report(self.split), file=sys.stderr, flush=True)
            original()

        def optimizer_sharded_state_dict(*args: Any, **kwargs: Any) -> Any:
            from megatron.core.dist_checkpointing.dict_utils import dict_list_map_inplace

            return dict_list_map_inplace(per_layer, sharded_state_dict(*args, **kwargs))

        sharded_state_dict = strategy.optimizer_sharded_state_dict
        strategy.init_model_parallel = init_model_parallel
        strategy.optimizer_sharded_state_dict = optimizer_sharded_state_dict
        self._wrapped = strategy

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        """Refuse to train everything when the freeze did not run (another strategy set-up path)."""
        del trainer, pl_module
        if self.split is None:
            raise RuntimeError("train_only_new_blocks: the model was not frozen before its optimizer was built")
