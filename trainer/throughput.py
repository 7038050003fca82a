"""Tokens per second and model FLOPs utilisation, logged beside the loss.

NeMo logs loss, learning rate and gradient norm itself; how fast a run goes is what a user sizing a
cluster job needs next. Step time is wall time between the ends of consecutive optimizer steps (the
first step after a start or a validation is left out: it pays for start-up and for the validation
itself); FLOPs are `trainer.flops`'.
"""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch.callbacks import Callback

from trainer.config import ModelArgs
from trainer.flops import flops_per_token, peak_flops


class Throughput(Callback):
    """Logs `tokens_per_sec`, `tokens_per_sec_per_device`, `step_seconds` and, where the device's
    peak is known, `mfu` (0–1) after every optimizer step.

    A module-level class: NeMo writes the trainer's callbacks into the checkpoint's context and
    imports them back from there.
    """

    def __init__(self, *, tokens: int, flops: float, devices: int, peak: float | None, gpu: bool) -> None:
        self.tokens, self.flops, self.devices, self.peak, self.gpu = tokens, flops, devices, peak, gpu
        self.last: float | None = None

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.gpu:
            import torch

            torch.cuda.synchronize()
        now = time.perf_counter()
        if self.last is not None:
            seconds = now - self.last
            metrics = {"step_seconds": seconds, "tokens_per_sec": self.tokens / seconds,
                       "tokens_per_sec_per_device": self.tokens / seconds / self.devices}
            if self.peak:
                metrics["mfu"] = self.flops / seconds / (self.peak * self.devices)
            for key, value in metrics.items():
                pl_module.log(key, value, batch_size=1)
        self.last = now

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self.last = None  # the next step's time would include the validation

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.last = None


def callback(model: ModelArgs, *, seq_length: int, global_batch_size: int, devices: int, gpu: bool) -> Throughput:
    """The `Throughput` callback for a run of `model` at this batch shape."""
    tokens = seq_length * global_batch_size
    return Throughput(tokens=tokens, flops=flops_per_token(model, seq_length) * tokens, devices=devices,
                      peak=peak_flops(gpu), gpu=gpu)
