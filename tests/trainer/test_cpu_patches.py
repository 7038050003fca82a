"""The CPU patches' own logic; the real NeMo runs in test_pretrain.py exercise `apply()` itself,
which is process-wide and therefore never called inside the test process."""

from __future__ import annotations

import torch

from trainer.cpu_patches import CudaToCpu, clip_grad_by_total_norm_cpu


def test_cuda_device_arguments_land_on_the_cpu() -> None:
    with CudaToCpu():
        made = [torch.zeros(2, device="cuda"), torch.ones(1, device=torch.device("cuda", 0)),
                torch.empty(3, device=0), torch.tensor([1.0], pin_memory=True),
                torch.arange(3).cuda(), torch.arange(3).to("cuda:0", non_blocking=True),
                torch.arange(3).to(device="cuda"), torch.arange(3).pin_memory()]
        still_typed = torch.arange(3).to(torch.float64)
    assert all(t.device.type == "cpu" for t in made)
    assert still_typed.dtype == torch.float64


def test_cpu_gradient_clipping_scales_only_above_the_norm() -> None:
    params = [torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(2))]
    for p in params:
        p.grad = torch.full_like(p, 2.0)
    clip_grad_by_total_norm_cpu(params, max_norm=1.0, total_norm=4.0)
    assert all(torch.allclose(p.grad, torch.full_like(p, 2.0 / (4.0 + 1e-6))) for p in params)
    clip_grad_by_total_norm_cpu(params, max_norm=1.0, total_norm=0.5)
    assert all(torch.allclose(p.grad, torch.full_like(p, 2.0 / (4.0 + 1e-6))) for p in params)
