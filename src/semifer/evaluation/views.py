"""Test-time views: a model's probabilities averaged over a face, its mirror image and copies
moved by a few pixels (``train.eval_flip`` / ``train.eval_shift``), shared by evaluation and
prediction; and the autocast both run under."""
from __future__ import annotations

import contextlib

import torch

from semifer.data.transforms import shifted_views


def autocast(device: torch.device, amp: str):
    """bf16 autocast on CPU and CUDA ("auto" = bf16), fp16 on CUDA, or nothing."""
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


def view_probs(model, xn: torch.Tensor, flip: bool = False, shift: float = 0.0, temperature: float = 1.0,
               amp: str = "none") -> torch.Tensor:
    """Softmax probabilities [N, K] of normalised images [N, C, H, W], averaged over test-time views.
    ``flip``: each image and its mirror image (faces are near-symmetric, so the mirror is a second,
    nearly independent look at the same expression). ``shift``: also the 8 copies moved by this
    share of the side (rounded to pixels) along the axes and diagonals, the weak view's random
    crop at test time (``shifted_views``); with ``flip`` that is 18 views, 18x the compute."""
    views = shifted_views(xn, round(shift * min(xn.shape[-2:])))
    views += [v.flip(3) for v in views] if flip else []
    probs = 0
    for v in views:
        with autocast(xn.device, amp):
            _, logits = model(v)
        probs = probs + torch.softmax(logits.float() / temperature, 1)
    return probs / len(views)
