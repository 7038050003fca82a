"""A run killed and started again repeats the uninterrupted run exactly, validation included.

Found by reading nemo 2.7.3 / lightning 2.4.0 and measured on CPU fp32 (tests/trainer/test_exact_resume.py):

* The validation data never moves. Every validation takes a fresh iterator over the validation loader
  (Lightning's `_EvaluationLoop.reset` calls `iter()` each time) and NeMo's sampler starts every split
  but train at sample 0 (`MegatronDataSampler.transform_dataloader`: `consumed_samples=0`). So each
  validation evaluates the same first `limit_val_batches` global batches, a curve comparable across
  steps; NeMo only indexes more validation samples than it ever reads. `prepare` leaves data alone.
* Lightning's loop counters are what broke. NeMo's `ModelCheckpoint` saves in `on_train_batch_end`
  of step N: the optimizer has stepped, but Lightning counts the batch "processed", not yet
  "completed", and step N's validation has not run. A restart rewinds the counter to "completed",
  one step behind the optimizer, and NeMo's `NoValOnRestartTrainingLoop` (the epoch loop `llm.pretrain`
  installs) skips the restart's validation on the assumption that the checkpoint followed it. So the
  validation due at N never ran and every later one came a step late (8 steps, every 2: after 5 and 7
  instead of 4, 6 and 8), logged under the MLflow step of the one before. Train losses stayed exact:
  the data position and the schedule follow the optimizer's step count.
* The previous validation's per-run counter, restored too, would make Lightning take the restart's
  validation as half done and evaluate part of its batches (Lightning issue #19549).
* Lightning seeds the train fetcher's count with the steps done, NeMo's fetcher counts microbatches:
  a resumed run never reached "last batch", whose validation an uninterrupted run runs even off the
  interval (5 steps, every 2: the validation after step 5 was lost).
* NeMo 2 saves no RNG state. This model draws no random numbers while training (Qwen2's dropouts
  are 0), but each `iter()` of a DataLoader draws a worker seed from torch's generator: a resumed run
  ended in another torch RNG state, which a model with dropout would feel in its losses.

`ExactResume` repairs the counters in the loaded checkpoint before Lightning restores them, lets the
restart run the validation due at the checkpoint's step, and saves the python / numpy / torch / CUDA /
Megatron-tracker RNG states with every checkpoint, putting them back when training continues.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_warn


def prepare(data: Any) -> Any:
    """The data module, unchanged: validation already reads the same first batches every time."""
    return data


def callbacks() -> list[Any]:
    """Lightning callbacks that exact validation across resumes needs."""
    return [ExactResume()]


class ExactResume(Callback):
    """Makes a resumed run's loop counters and RNG states those of the run it continues."""

    def __init__(self) -> None:
        self._rng: dict[str, Any] | None = None  # loaded with a checkpoint, applied when training continues
        self._microbatches_read: int | None = None  # the train fetcher's count at the resumed step
        self._replay_step_end = False  # the checkpoint was written inside its step: validate on restart

    # --- loop counters ----------------------------------------------------------------------

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        """Lightning calls this before it restores its loops from `checkpoint`, so edits here are what it restores."""
        fit = (checkpoint.get("loops") or {}).get("fit_loop")
        self._replay_step_end = fit is not None and repair_loop_state(fit)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Put back the checkpoint's RNG states as late as possible: everything a fresh process draws while it
        builds the model and the loaders happened before the checkpoint in the run it continues."""
        if self._rng is not None:
            if same_rng_on_every_rank():
                set_rng_states(self._rng)
            else:
                rank_zero_warn("trainer.validation: RNG states not restored: the checkpoint holds rank 0's only, and "
                               "with tensor, pipeline or expert parallelism other ranks draw from other states")
            self._rng = None
        if self._replay_step_end:
            # NeMo's NoValOnRestartTrainingLoop skips the restart's validation, assuming the checkpoint was
            # written after it; NeMo's ModelCheckpoint writes it before (on_train_batch_end).
            trainer.fit_loop.epoch_loop.skip_val_on_restart = False
        self._microbatches_read = microbatches_read(trainer) if trainer.ckpt_path else None

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        """Count the microbatches the run read before the resume as read.

        Lightning seeds the train fetcher's count with the number of *steps* done, while NeMo's fetcher counts
        microbatches; the count decides when the last batch is reached, and the last batch is validated even when
        it is not a multiple of `val_check_interval`.
        """
        if self._microbatches_read is not None:
            fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
            if fetcher is not None:
                fetcher.fetched = self._microbatches_read
            self._microbatches_read = None

    # --- RNG ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Called while a checkpoint is written: the RNG states of that moment travel with it."""
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rng = state_dict.get("rng")


def repair_loop_state(fit: dict[str, Any]) -> bool:
    """Make a `fit_loop` state dict from a checkpoint restart where the run it was saved from stood.

    Returns whether the checkpoint was written inside its step N (processed > completed: NeMo's periodic
    save in `on_train_batch_end`). Its step is then counted as completed: the optimizer step is done,
    and what is left of it, the validation due at N, runs when Lightning restarts. No validation was
    under way at a save, so the validation loop's per-run counter starts from zero.
    """
    mid_step = False
    batches = fit.get("epoch_loop.batch_progress")
    if batches is not None:
        mid_step = batches["total"]["processed"] > batches["total"]["completed"]
        for part in ("total", "current"):  # restarting, Lightning sets ready, started, processed to completed
            batches[part]["completed"] = batches[part]["processed"]
    val = fit.get("epoch_loop.val_loop.batch_progress")
    if val is not None:
        val["current"] = {key: 0 for key in val["current"]}
    return mid_step


def microbatches_read(trainer: Any) -> int | None:
    """How many microbatches this rank had read when the run resumed (None: not a Megatron data module)."""
    sampler = getattr(getattr(trainer, "datamodule", None), "data_sampler", None)
    consumed = getattr(sampler, "init_consumed_samples", None)
    micro = getattr(sampler, "micro_batch_size", None)
    if not consumed or not micro:
        return None
    from megatron.core import parallel_state

    return int(consumed) // (int(micro) * parallel_state.get_data_parallel_world_size())


def rng_states() -> dict[str, Any]:
    """Every generator a training step may draw from: python, numpy, torch (CPU and CUDA), Megatron's tracker."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    # plain lists, not an ndarray: Megatron reads a checkpoint's common part with torch.load(weights_only=True)
    states: dict[str, Any] = {"python": random.getstate(), "numpy": [name, keys.tolist(), pos, has_gauss, cached],
                              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    # the tracker hands out its own tensors: copy them
    states["megatron"] = {name: state.clone() for name, state in _megatron_rng_tracker().get_states().items()}
    return states


def same_rng_on_every_rank() -> bool:
    """Whether rank 0's RNG states, the only ones a checkpoint keeps (Megatron writes its common part on
    rank 0 alone), are every rank's: Megatron seeds by pipeline stage and the tracker by tensor and expert rank."""
    from megatron.core import parallel_state as ps

    if not ps.model_parallel_is_initialized():
        return not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1
    return (ps.get_tensor_model_parallel_world_size() == ps.get_pipeline_model_parallel_world_size()
            == ps.get_expert_model_parallel_world_size() == 1)


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if states.get("megatron"):
        _megatron_rng_tracker().set_states(dict(states["megatron"]))


def _megatron_rng_tracker() -> Any:
    """The tracker Megatron's tensor-parallel dropout draws from (on a CPU trainer.cpu_patches' stateless one)."""
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

    return get_cuda_rng_tracker()
