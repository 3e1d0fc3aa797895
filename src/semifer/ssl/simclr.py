"""SimCLR (Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
ICML 2020): self-supervised pre-training of any backbone, CNNs included, on unlabelled faces.

MAE (``ssl/mae.py``) needs a ViT; the CPU-hour recipes train a CNN. SimCLR gives that CNN a
self-supervised start on the same unlabelled pool: two random views of each face, encoder f,
projection head g, and the normalised-temperature cross-entropy (NT-Xent) that makes each view
pick its partner out of the batch. The encoder is the classifier's backbone exactly as
``semifer train`` builds it, so ``encoder.safetensors`` loads unchanged (``model.init=RUN``);
g is thrown away, as in the paper.

Symbols: N images, 2N views, h = f(x) [2N, D], z = g(h) [2N, P], tau the temperature.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from semifer.engine.distributed import gather_with_grad


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent of two views [N, P] each (paper eq. 1, averaged over all 2N anchors).

    For anchor i its positive is the other view of the same image; the 2N - 2 other views are
    negatives; similarities are cosines / tau. Returns (loss, share of anchors whose positive
    is their most similar view), the latter a cheap gauge of how separable the batch is."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)                  # [2N, P]
    sim = z @ z.T / tau                                                  # [2N, 2N]
    sim.fill_diagonal_(float("-inf"))                                    # k != i in eq. 1
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # [2N]
    loss = F.cross_entropy(sim, positive)
    accuracy = (sim.argmax(1) == positive).float().mean()
    return loss, accuracy


def global_nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent over the global batch: under torchrun every rank scores all ranks' views, as the
    paper's 2N spans all devices, so a view's negatives include the other ranks' views. Each
    rank's loss is then the same, and DDP's mean of the ranks' gradients is that loss's gradient."""
    return nt_xent(gather_with_grad(z1), gather_with_grad(z2), tau)


class SimCLR(nn.Module):
    """f (``encoder``, timm interface: ``forward_features`` + ``forward_head(pre_logits=True)``)
    followed by g, the paper's two-layer MLP projection head (D -> hidden -> P, ReLU; with
    batch norm after the hidden layer, as SimCLR v2 and most CNN reimplementations use).

    ``forward(x1, x2)`` takes the two views [N, C, H, W] and returns (loss, accuracy)."""

    def __init__(self, encoder: nn.Module, proj_dim: int = 128, hidden_dim: int = 0, temperature: float = 0.2):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"simclr.temperature={temperature}; expected > 0")
        self.encoder = encoder
        d = getattr(encoder, "head_hidden_size", None) or encoder.num_features
        hidden = hidden_dim or d
        self.projector = nn.Sequential(nn.Linear(d, hidden, bias=False), nn.BatchNorm1d(hidden),
                                       nn.ReLU(inplace=True), nn.Linear(hidden, proj_dim))
        self.temperature = temperature

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """h = f(x): the pooled features the classifier's head will see [N, D]."""
        return self.encoder.forward_head(self.encoder.forward_features(x), pre_logits=True)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Both views in one pass: batch norm then normalises over the 2N views together.
        z = self.projector(self.embed(torch.cat([x1, x2])))             # [2N, P]
        z1, z2 = z.chunk(2)
        return global_nt_xent(z1, z2, self.temperature)
