"""Graph-contrastive regulariser for the teacher-student algorithms (CoMatch: Li, Xiong & Hoi,
"CoMatch: Semi-supervised Learning with Contrastive Graph Regularization", ICCV 2021, eqs. 6-8).

A hard pseudo-label says only "this face is class c". When the teacher is right on ~55 % of the
faces it passes (FER2013 at 100 labels per class), the student learns the teacher's mistakes back
and the teacher stops improving. The contrastive term adds what the labels do not say: every face
must stay recognisable among the batch by its embedding, and faces whose pseudo-label
distributions agree are pulled together.

Symbols (per unlabelled batch of B faces):
- z_i = g(h_S(u_s,i)) / ||.||, the student's embedding of the strong view (with gradient);
- k_j = g_T(h_T(u_w,j)) / ||.||, the teacher's embedding of the weak view (no gradient), where
  g_T is an EMA of the projection head g, as the teacher is of the student (MoCo's key encoder);
- W^q_ij = q_i . q_j for the teacher's class posteriors q, set to 0 below ``graph_tau`` and to 1
  on the diagonal, rows normalised (CoMatch eq. 6): the pseudo-label graph;
- L_c = -(1/B) sum_i sum_j W^q_ij log softmax_j(z_i . k_j / t) (CoMatch eq. 8, its cross-view
  form: the strong view of i must find the weak views of i and of its graph neighbours).

``graph_tau`` >= 1 keeps the diagonal alone: plain instance discrimination, MoCo/SimCLR style.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F


def pseudo_label_graph(q: torch.Tensor, graph_tau: float) -> torch.Tensor:
    """W^q [B, B]: q_i . q_j, zeroed below graph_tau, ones on the diagonal, rows summing to 1."""
    w = q.float() @ q.float().T
    w = w * (w >= graph_tau)
    w.fill_diagonal_(1.0)
    return w / w.sum(1, keepdim=True)


def graph_contrastive_loss(z: torch.Tensor, k: torch.Tensor, w: torch.Tensor, temperature: float) -> torch.Tensor:
    """L_c = -(1/B) sum_i sum_j w_ij log softmax_j(z_i . k_j / t) for unit z, k [B, P]."""
    logits = z.float() @ k.float().T / temperature
    return -(w * logits.log_softmax(1)).sum(1).mean()


class GraphContrast(nn.Module):
    """The projection head g (D -> D -> P, as SimCLR's), its EMA copy g_T, and L_c."""

    def __init__(self, in_dim: int, proj_dim: int = 64, temperature: float = 0.2, graph_tau: float = 0.8,
                 momentum: float = 0.99):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"contrast_temperature={temperature}; expected > 0")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"the key head's momentum must be in [0, 1), got {momentum}")
        self.temperature, self.graph_tau, self.momentum = temperature, graph_tau, momentum
        self.head = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, proj_dim))
        self.key_head = copy.deepcopy(self.head).requires_grad_(False)  # follows g by EMA, never by gradient

    @torch.no_grad()
    def update_key_head(self) -> None:
        """g_T <- m g_T + (1 - m) g, once a step (before the loss, as MoCo updates its key encoder)."""
        for pk, p in zip(self.key_head.parameters(), self.head.parameters()):
            pk.lerp_(p, 1.0 - self.momentum)

    def forward(self, h_student: torch.Tensor, h_teacher: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(L_c, logs) from the student's strong-view features, the teacher's weak-view features and
        the teacher's posteriors q [B, K]."""
        self.update_key_head()
        z = F.normalize(self.head(h_student.float()), dim=1)
        with torch.no_grad():
            k = F.normalize(self.key_head(h_teacher.float()), dim=1)
            w = pseudo_label_graph(q, self.graph_tau)
        loss = graph_contrastive_loss(z, k, w, self.temperature)
        with torch.no_grad():  # does each strong view find its own weak view first?
            own = ((z @ k.T).argmax(1) == torch.arange(len(z), device=z.device)).float().mean()
            degree = (w > 0).float().sum(1).mean()
        return loss, {"loss_c": loss.detach(), "contrast_own": own, "graph_degree": degree}
