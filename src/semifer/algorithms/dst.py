"""Debiased Self-Training on the EMA teacher (Chen et al., "Debiased Self-Training for
Semi-Supervised Learning", NeurIPS 2022, arXiv 2202.07136). Not part of the three founding papers:
a lever against the confirmation bias that stops SSFER's stage III on FER2013 (docs/benchmarks.md).

In FixMatch-style self-training the head that makes the pseudo-labels also learns from them, so
it fits its own mistakes. DST takes the head out of that loop, in two parts:

- Decoupling (paper section 4.1): the pseudo-labels y^ still come from the main head h, here the
  EMA teacher's main head on the weak view, but they train a separate pseudo head h_pseudo on the
  strong view. h learns only from the labels; the backbone psi learns from both through its heads:
  L = L_l(h) + mu L_u(h_pseudo).
- Worst-case estimation (section 4.2, eq. 8): a head h_worst is trained to agree with h on the
  labelled faces and to disagree with y^ on the unlabelled ones,
  L_w = eta' CE(h_worst(psi(x)), argmax h(psi(x))) - log(1 - softmax(h_worst(psi(u)))[y^]),
  while psi, through a gradient reversal layer, is trained to make that impossible: features on
  which every head that fits the labels also agrees on the unlabelled faces. L += worst L_w.

Symbols and constants are the authors' released FixMatch version: both extra heads are
Linear-ReLU-Dropout(0.5)-Linear on the pooled feature; the reversal's coefficient warms from 0
towards ``grl_max`` as 2 hi / (1 + exp(-t / grl_iters)) - hi; ``worst`` 0.3 and ``eta_prime`` 2 are
their CIFAR setting (their defaults are 0.1 and 1). Two choices are semifer's: the pseudo-labels
come from the EMA teacher (SSFER's stage III), not the student; h_worst sees the strong view of u,
whose features the student's one forward already has, where the authors' student also forwards
the weak view (1.8x this step's cost at uratio 4). The teacher's options (tau, mu, momentum, flip,
smoothing, the online prior) are the EMA teacher's. The main head h predicts at test time; the
two extra heads are dropped.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from semifer.algorithms.base import StepOutput, register_algorithm
from semifer.algorithms.common import forward_views, teacher_probs
from semifer.algorithms.ema_teacher import EMATeacher, teacher_mask
from semifer.algorithms.label_shift import shift_labelled_logits


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coeff: float):
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.coeff * grad, None


def reverse_grad(x: torch.Tensor, coeff: float) -> torch.Tensor:
    """Identity forward; the gradient times -coeff backward (Ganin & Lempitsky 2015)."""
    return _ReverseGrad.apply(x, coeff)


def warm_start_coeff(step: int, hi: float, iters: float) -> float:
    """2 hi / (1 + exp(-step / iters)) - hi: 0 at step 0, 0.46 hi at ``iters``, towards hi."""
    return 2.0 * hi / (1.0 + math.exp(-step / iters)) - hi


def worst_case_loss(adv_x: torch.Tensor, pred_x: torch.Tensor, adv_u: torch.Tensor, pred_u: torch.Tensor,
                    eta_prime: float) -> torch.Tensor:
    """L_w = eta' CE(adv_x, pred_x) + mean_b -log(1 - softmax(adv_u)_b[pred_u_b]) (DST eq. 8); the
    1 - p term is shifted by 1e-6 and capped at 1 so its log stays finite."""
    p = adv_u.float().softmax(-1).gather(1, pred_u[:, None]).squeeze(1)
    disagree = -torch.log(torch.clamp(1.0 - p + 1e-6, max=1.0)).mean()
    return eta_prime * F.cross_entropy(adv_x.float(), pred_x) + disagree


def mlp_head(in_dim: int, width: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, width), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(width, num_classes))


@register_algorithm("dst")
class DebiasedSelfTraining(EMATeacher):
    def __init__(self, worst: float = 0.3, eta_prime: float = 2.0, head_width: int = 1024, grl_max: float = 0.1,
                 grl_iters: float = 1000.0, **kw):
        super().__init__(**kw)
        if self.contrast > 0:
            raise ValueError("dst does not take algorithm.contrast; use ema_teacher for it")
        for name, value in (("worst", worst), ("eta_prime", eta_prime), ("grl_max", grl_max)):
            if value < 0:
                raise ValueError(f"algorithm.{name}={value}; expected >= 0")
        if head_width < 1 or grl_iters <= 0:
            raise ValueError(f"algorithm.head_width={head_width}, grl_iters={grl_iters}; expected >= 1 and > 0")
        self.worst, self.eta_prime, self.head_width = worst, eta_prime, head_width
        self.grl_max, self.grl_iters = grl_max, grl_iters
        self.pseudo_head = self.worst_head = None  # sized to the backbone's features in setup()

    def setup(self, model):
        self.build_heads(model.num_features)

    def build_heads(self, num_features: int) -> None:
        self.pseudo_head = mlp_head(num_features, self.head_width, self.num_classes)
        self.worst_head = mlp_head(num_features, self.head_width, self.num_classes)

    def step(self, model, batch, step, teacher=None):
        probs = teacher_probs(teacher, batch["u_w"], self.teacher_flip)            # [uB, K], main head h
        conf, pseudo = probs.max(-1)
        mask = teacher_mask(conf, self.tau)
        (h_x, h_s), (logits_x, _) = forward_views(model, batch["x"], batch["u_s"], features=True)
        if self.pseudo_head is None:  # a bare step() without the engine's setup()
            self.build_heads(h_x.shape[1])
            self.to(h_x.device)
        shifted_x, logs = shift_labelled_logits(self.prior, logits_x, probs)
        loss_x = F.cross_entropy(shifted_x, batch["y"], label_smoothing=self.label_smoothing)   # h: labels only
        loss_u = self.unlabelled_loss(self.pseudo_head(h_s), pseudo, mask)                     # h_pseudo: y^
        coeff = warm_start_coeff(step, self.grl_max, self.grl_iters)
        adv_x, adv_s = self.worst_head(reverse_grad(torch.cat([h_x, h_s]), coeff)).split([len(h_x), len(h_s)])
        loss_w = worst_case_loss(adv_x, logits_x.detach().argmax(-1), adv_s, pseudo, self.eta_prime)
        loss = loss_x + self.mu * loss_u + self.worst * loss_w
        logs = {"loss_x": loss_x.detach(), "loss_u": loss_u, "loss_worst": loss_w.detach(), "grl": coeff,
                "tau_mean": self.tau} | logs
        return StepOutput(loss, logs, pseudo, mask)
