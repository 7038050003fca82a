"""Make NeMo 2 / Megatron-Core train on a machine without a GPU.

NeMo and Megatron-Core call CUDA unconditionally in a handful of places even when Lightning runs
on the CPU accelerator (measured list: /work/shared/notes/nemo-cpu.md). Everything that works
around that lives here, so a GPU run never sees any of it: `apply()` does nothing when CUDA is
available. The patches are process-wide and cannot be undone; apply them only in a process that
trains (the trainer's `setup` does).

What is patched, and why:

* `torch.cuda.current_device`, `Stream`, `stream`, `current_stream`, `synchronize` — RoPE, DDP
  setup and checkpoint saving call them without checking for a GPU. They become CPU no-ops
  (`current_device()` answers 0, which the device mode below maps to the CPU).
* A `TorchFunctionMode`, entered for the rest of the process, rewrites CUDA device arguments
  (`device="cuda"`, `device=0`, `.cuda()`, `.to("cuda")`) to the CPU and drops `pin_memory`: the
  optimizer, grad scaler, data sampler and loss reduction create tensors that way.
* The CUDA RNG tracker is replaced by Megatron's inference tracker, whose `fork()` is a no-op:
  without a GPU nobody seeds the model-parallel CUDA RNG state, and `fork()` would fail.
* `clip_grad_by_total_norm_fp32` asserts CUDA gradients and uses a fused CUDA kernel; a plain
  in-place scaling does the same on the CPU.
* Megatron routes file access through multi-storage-client whenever it is importable; it then
  prints tracebacks at interpreter exit. Local shards need none of it.
* `nemo.lightning.io.pl._fix_tensors_device` asserts CUDA is initialised when a checkpoint is
  loaded (stage-2 restore); on the CPU the loaded tensors are already where they belong.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

_applied = False


def apply() -> bool:
    """Apply every CPU patch once; return whether they are (now) in effect.

    Call before NeMo builds the trainer. On a machine with a GPU this returns False and changes
    nothing; a second call changes nothing either.
    """
    global _applied
    if torch.cuda.is_available():
        return False
    if _applied:
        return True
    _stub_cuda_runtime()
    _enter_device_mode()
    _use_noop_rng_tracker()
    _patch_grad_clipping()
    _disable_multi_storage_client()
    _patch_checkpoint_device_fix()
    _applied = True
    return True


# --- torch.cuda runtime calls ------------------------------------------------------------------


class _CpuStream:
    """Stands in for `torch.cuda.Stream`: work on the CPU is already ordered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        del args, kwargs

    def wait_stream(self, stream: Any) -> None:
        del stream

    def wait_event(self, event: Any) -> None:
        del event

    def record_event(self, event: Any = None) -> Any:
        return event

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True


def _stub_cuda_runtime() -> None:
    cuda = torch.cuda
    cuda.current_device = lambda: 0  # type: ignore[assignment]
    cuda.Stream = _CpuStream  # type: ignore[assignment, misc]
    cuda.stream = lambda stream=None: contextlib.nullcontext()  # type: ignore[assignment]
    cuda.current_stream = lambda device=None: _CpuStream()  # type: ignore[assignment]
    cuda.default_stream = lambda device=None: _CpuStream()  # type: ignore[assignment]
    cuda.synchronize = lambda device=None: None  # type: ignore[assignment]


# --- tensors created "on the GPU" -------------------------------------------------------------

_CPU = torch.device("cpu")


def _is_cuda_device(value: Any) -> bool:
    if isinstance(value, torch.device):
        return value.type == "cuda"
    if isinstance(value, str):
        return value.split(":", 1)[0] == "cuda"
    return isinstance(value, int) and not isinstance(value, bool)  # an int device means cuda:<n>


class CudaToCpu(TorchFunctionMode):
    """Rewrites CUDA device arguments to the CPU for every torch call in the process."""

    def __torch_function__(self, func: Callable[..., Any], types: Iterable[type],
                           args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.cuda or func is torch.Tensor.pin_memory:
            return args[0]
        if "device" in kwargs and _is_cuda_device(kwargs["device"]):
            kwargs["device"] = _CPU
        if kwargs.get("pin_memory"):
            kwargs["pin_memory"] = False
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda_device(args[1]):
            args = (args[0], _CPU, *args[2:])
        return func(*args, **kwargs)


def _enter_device_mode() -> None:
    CudaToCpu().__enter__()  # never exited: the mode stays on the stack for the life of the process


# --- Megatron internals -------------------------------------------------------------------------


def _use_noop_rng_tracker() -> None:
    from megatron.core.tensor_parallel import random as mcore_random

    mcore_random.initialize_rng_tracker(inference_rng_tracker=True, force_reset=True)


def clip_grad_by_total_norm_cpu(parameters: torch.Tensor | Iterable[torch.Tensor], max_norm: float,
                                total_norm: float, use_decoupled_grad: bool = False) -> None:
    """Megatron's `clip_grad_by_total_norm_fp32` without the CUDA-only fused kernel."""
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    clip_coeff = max_norm / (total_norm + 1.0e-6)
    if clip_coeff >= 1.0:
        return
    attr = "decoupled_grad" if use_decoupled_grad else "grad"
    for param in parameters:
        grad = getattr(param, attr, None)
        if grad is not None:
            grad.detach().mul_(clip_coeff)


def _patch_grad_clipping() -> None:
    from megatron.core.optimizer import clip_grads, optimizer

    clip_grads.clip_grad_by_total_norm_fp32 = clip_grad_by_total_norm_cpu
    optimizer.clip_grad_by_total_norm_fp32 = clip_grad_by_total_norm_cpu  # imported there by name


def _disable_multi_storage_client() -> None:
    from megatron.core.msc_utils import MultiStorageClientFeature

    MultiStorageClientFeature.disable()


def _patch_checkpoint_device_fix() -> None:
    from nemo.lightning.io import pl as io_pl

    io_pl._fix_tensors_device = lambda ckpt: ckpt  # type: ignore[attr-defined]


__all__ = ["CudaToCpu", "apply", "clip_grad_by_total_norm_cpu"]
