"""Pieces the semi-supervised algorithms share: one forward over concatenated views, teacher
predictions, confidence pseudo-labels, masked losses, ramp-ups and the two collectives that keep
threshold state identical on every rank.

``loss_u`` convention: every algorithm returns its unweighted unsupervised term in
``StepOutput.logs["loss_u"]`` *with its graph*, so a test can check that this term alone sends
gradient into the model (the engine only calls ``float()`` on log values).
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


def forward_views(model: nn.Module, *xs: torch.Tensor, features: bool = False):
    """Logits of each input from ONE forward of ``torch.cat(xs)``; with ``features``, also the
    pooled features of each: (features list, logits list).

    One forward keeps DDP to one gradient pass per step and normalises every view with the
    same BatchNorm batch, as the reference FixMatch/USB implementations do (``use_cat``)."""
    h, logits = model(torch.cat(xs))                   # [sum B_i, D], [sum B_i, K]
    sizes = [len(x) for x in xs]
    if features:
        return list(h.split(sizes)), list(logits.split(sizes))
    return list(logits.split(sizes))


@torch.no_grad()
def teacher_probs(teacher: nn.Module | None, x: torch.Tensor, flip: bool = False,
                  features: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """q = softmax(T(x)) [B, K], teacher in eval mode (its mode is restored afterwards); with
    ``features``, (q, h) where h [B, D] is the teacher's pooled feature of x (not of its mirror).

    Eval mode: a deterministic target (no dropout / drop-path) and no BatchNorm running-stat
    update on the EMA copy, whose buffers the engine's EMA owns. ``flip``: q is the mean of the
    probabilities of x and of its mirror image, the test-time flip applied to pseudo-labels."""
    if teacher is None:
        raise ValueError("this algorithm needs the engine's EMA teacher (uses_teacher=True), got teacher=None")
    was_training = teacher.training
    teacher.eval()
    h, logits = teacher(x)
    q = logits.float().softmax(-1)
    if flip:
        q = (q + teacher(x.flip(-1))[1].float().softmax(-1)) / 2
    teacher.train(was_training)
    return (q, h) if features else q


def probs_of(logits: torch.Tensor) -> torch.Tensor:
    """Detached class probabilities in float32 (pseudo-labels and statistics, never gradient)."""
    return logits.detach().float().softmax(-1)


def confidence_mask(conf: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """mask_b = 1[max(q_b) >= tau] (FixMatch eq. 4); ``tau`` a scalar or per-sample thresholds."""
    return (conf >= tau).float()


def masked_ce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_u = (1/muB) sum_b mask_b * H(target_b, softmax(logits_b)).

    FixMatch (Sohn et al., NeurIPS 2020) eq. 4; averaged over the whole unlabelled batch, not
    over the masked subset, as in the paper. ``targets``: hard labels [B] or probabilities [B, K]."""
    return (F.cross_entropy(logits.float(), targets, reduction="none") * mask).mean()


def masked_gce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, q: float) -> torch.Tensor:
    """L_u with the generalised cross-entropy (Zhang & Sabuncu, NeurIPS 2018, eq. 6) in place of CE:
    (1/muB) sum_b mask_b (1 - p_b[y_b]^q) / q for hard labels y. q -> 0 is CE; q = 1 is MAE, which
    noisy labels cannot pull far: each label's gradient is CE's times p^q, so labels the model
    disagrees with weigh less."""
    p = logits.float().softmax(-1).gather(1, targets[:, None]).squeeze(1)
    return ((1.0 - p.clamp_min(1e-12) ** q) / q * mask).mean()


def softmax_mse(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """(1/(B K)) sum_b ||softmax(logits_b) - q_b||^2: the consistency cost of the Pi-model
    (Laine & Aila, ICLR 2017, Alg. 1) and Mean Teacher (Tarvainen & Valpola, NeurIPS 2017, eq. 1)."""
    return F.mse_loss(logits.float().softmax(-1), target_probs)


def linear_rampup(step: int, length: float) -> float:
    """w(t) = min(1, t / length); 1 when length <= 0."""
    return 1.0 if length <= 0 else min(1.0, step / length)


def sigmoid_rampup(step: int, length: float) -> float:
    """w(t) = exp(-5 (1 - T)^2), T = min(1, t / length) (Laine & Aila, ICLR 2017, App. A)."""
    if length <= 0:
        return 1.0
    t = min(1.0, step / length)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` from every rank along dim 0 in rank order (same shape on each rank);
    ``t`` itself when not distributed."""
    if not distributed():
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def all_reduce_mean_(t: torch.Tensor) -> torch.Tensor:
    """In-place mean over ranks; a no-op when not distributed."""
    if distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t
