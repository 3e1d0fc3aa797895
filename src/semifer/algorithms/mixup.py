"""Mixup (Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018) as SSFER pairs it
(Song et al., arXiv 2410.17622, stage II; docs/methods.md section 1): each labelled image is mixed
with the image at the mirrored position of the batch (the reversed batch), with one
lam ~ Beta(alpha, alpha) per batch:

    x~ = lam x_i + (1 - lam) x_j,   y~ = lam y_i + (1 - lam) y_j          (SSFER eq. 6)

and trained with soft-target cross-entropy on y~ after label smoothing. This is the plain-Mixup
row of SSFER's Table 13; ``facemix`` adds the face-aware term.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from semifer.algorithms.base import Algorithm, StepOutput, register_algorithm


def sample_lam(alpha: float, generator: torch.Generator | None = None) -> float:
    """lam ~ Beta(alpha, alpha) = G1 / (G1 + G2) with G1, G2 ~ Gamma(alpha, 1), drawn from
    ``generator`` (torch's global CPU generator when None)."""
    if alpha <= 0:
        return 1.0
    g = torch._standard_gamma(torch.full((2,), float(alpha)), generator=generator)
    return float(g[0] / g.sum())


class MixRNG:
    """An algorithm's own generator for lam, saved in its ``state_dict`` (``_extra_state``), so
    a resumed run and a reloaded algorithm draw the same lam sequence."""

    def _init_rng(self, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)

    def get_extra_state(self) -> dict:
        return {"rng": self.gen.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self.gen.set_state(state["rng"])


def mix_pairs(x: torch.Tensor, y: torch.Tensor, lam: float, num_classes: int,
              smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6 with partner j = the reversed batch. x [B, C, H, W], y [B] ->
    (x~ [B, C, H, W], y~ [B, K]); y~ is smoothed as (1 - eps) y~ + eps / K.

    Out of place: x itself stays the un-mixed original (FaceMix needs it for L_i, L_j)."""
    x_mix = lam * x + (1 - lam) * x.flip(0)
    onehot = F.one_hot(y, num_classes).float()
    y_mix = lam * onehot + (1 - lam) * onehot.flip(0)
    return x_mix, y_mix * (1 - smoothing) + smoothing / num_classes


def soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample H(target, softmax(logits)) [B] for probability targets [B, K]."""
    return -(target * logits.float().log_softmax(-1)).sum(-1)


@register_algorithm("mixup")
class Mixup(MixRNG, Algorithm):
    def __init__(self, alpha: float = 1.0, label_smoothing: float = 0.1, seed: int = 0, **kw):
        super().__init__(**kw)
        self.alpha, self.label_smoothing = alpha, label_smoothing
        self._init_rng(seed)

    def step(self, model, batch, step, teacher=None):
        lam = sample_lam(self.alpha, self.gen)
        x_mix, y_mix = mix_pairs(batch["x"], batch["y"], lam, self.num_classes, self.label_smoothing)
        _, logits = model(x_mix)
        loss = soft_ce(logits, y_mix).mean()
        return StepOutput(loss, {"loss_x": loss.detach(), "lam": lam})
