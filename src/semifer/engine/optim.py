"""The optimiser step shared by training and MAE pre-training."""
from __future__ import annotations

import torch


def backward_step(loss: torch.Tensor, optimizer, scaler, scheduler, params, clip_grad: float = 0.0) -> None:
    """Zero the gradients, backward (scaled for fp16), clip to ``clip_grad`` when > 0, step the
    optimiser, the scaler and the per-iteration schedule."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip_grad > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, clip_grad)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
