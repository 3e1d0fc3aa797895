"""Label shift inside training: the unlabelled faces' class prior, estimated online.

A labelled set drawn per class (100 faces of each) has a uniform prior p_l, while the unlabelled
faces follow the dataset's own (FER2013: 25 % happy, 1.5 % disgust). A model trained on the labels
predicts under p_l, so its pseudo-labels lean to the rare classes, and the student learns that
lean back. ``semifer adapt-prior`` corrects it after training; this corrects it while training:

- pi, the unlabelled prior, is estimated by the EM of Saerens et al. (Neural Computation 2002),
  one online step per batch: pi <- m pi + (1 - m) mean_b q_b, where q_b is the teacher's posterior,
  which already predicts under pi (next point). Its fixed point is EM's maximum-likelihood prior.
- L_l is logit-adjusted (Menon et al., ICLR 2021): CE(f(x) + log p_l - log pi, y). Then
  softmax(f(x)) = p(y | x) under pi, so the teacher's pseudo-labels, the student and the test-time
  predictions all follow the unlabelled faces' prior, and no post-hoc adaptation is needed.

This is the idea of ACR (Wei & Gan, CVPR 2023) and SimPro (Du et al., ICML 2024) for unknown
unlabelled class distributions, reduced to its EM core.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from semifer.algorithms.common import all_reduce_mean_

PRIORS = ("labelled", "online")
PI_MIN = 1e-4   # keeps log pi finite for a class the teacher never predicts


class OnlinePrior(nn.Module):
    """pi (the unlabelled prior, from uniform) and p_l (the labelled prior, from the labels'
    counts in ``setup_data``; uniform until then), both saved with the algorithm's state."""

    def __init__(self, num_classes: int, momentum: float = 0.999):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"prior_momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("pi", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("p_l", torch.full((num_classes,), 1.0 / num_classes))

    def set_labelled(self, labels) -> None:
        """p_l from the labelled items' labels (any int sequence; classes absent get a floor)."""
        counts = torch.bincount(torch.as_tensor(labels, dtype=torch.long), minlength=len(self.p_l)).float()
        self.p_l.copy_((counts / counts.sum()).clamp_min(PI_MIN))

    def adjust(self, logits: torch.Tensor) -> torch.Tensor:
        """f(x) + log p_l - log pi: the logits the labelled cross-entropy sees."""
        return logits.float() + (self.p_l.log() - self.pi.log())

    @torch.no_grad()
    def update(self, probs: torch.Tensor) -> None:
        """One online EM step from the teacher's posteriors q [uB, K] (averaged over ranks)."""
        batch_mean = all_reduce_mean_(probs.float().mean(0))
        self.pi.mul_(self.momentum).add_(batch_mean, alpha=1 - self.momentum)
        self.pi.clamp_(min=PI_MIN).div_(self.pi.sum())


def make_prior(prior: str, num_classes: int, momentum: float) -> OnlinePrior | None:
    """The ``prior`` option of an algorithm: None for "labelled" (train under the labels' prior)."""
    if prior not in PRIORS:
        raise ValueError(f"prior must be one of {', '.join(PRIORS)}, got {prior!r}")
    return OnlinePrior(num_classes, momentum) if prior == "online" else None


def shift_labelled_logits(prior: OnlinePrior | None, logits_x: torch.Tensor, probs: torch.Tensor):
    """One step of an algorithm's ``prior`` option: (the logits L_l sees, logs). ``probs`` [uB, K]:
    the posteriors its pseudo-labels come from, which update pi. Unchanged logits when prior is None."""
    if prior is None:
        return logits_x, {}
    adjusted = prior.adjust(logits_x)    # by the pi the teacher predicted under, then one EM step
    prior.update(probs)
    return adjusted, {"prior_max": float(prior.pi.max()), "prior_min": float(prior.pi.min())}


def labelled_prior_from(data) -> list[int]:
    """The labels of a TrainView's labelled items (``Algorithm.setup_data``)."""
    return [int(data.labels[i]) for i in data.labelled]
