"""Cross teaching: two students, each with its own EMA teacher, each learning the *other*
teacher's pseudo-labels (not in the three papers).

Why: SSFER's stage III (``ema_teacher``) teaches a student with the EMA of that same student, so
the teacher's errors come back as targets and stay (confirmation bias). On FER2013 at 100 labels
per class the accuracy of the pseudo-labels it keeps falls from 0.68 to 0.54 over 6,000 steps,
while val accuracy stops rising by step ~3,000 (docs/benchmarks.md, eighth session). Two networks
started from different weights, or seeing different strong views, err on different faces; learning
from the peer's labels breaks the loop. This is Deep Co-Training's cross supervision (Qiao et al.,
ECCV 2018) and Cross Pseudo Supervision (Chen et al., CVPR 2021), with a mean teacher on each side.

Student A is the engine's model and its teacher the engine's EMA. Student B (``peer``) and its
EMA teacher live here and are saved with the algorithm's state. B starts from ``peer_init`` (a run
folder or encoder, loaded as ``model.init`` loads) or, without one, from A's weights, and it always
sees its own strong view u_s'. With y^_A, y^_B the teachers' hard labels on u_w and m_A, m_B their
confidence masks (``tau``, as in ``ema_teacher``):

    L = L_l(A) + mu L_u(A(u_s); y^_B, m_B) + L_l(B) + mu L_u(B(u_s'); y^_A, m_A)

``prior="online"`` estimates the unlabelled prior from the two teachers' mean posterior and adjusts
both labelled losses to it. The run's weights and its evaluation are A's. Each step costs about two
EMA-teacher steps. One process only: B's gradients are not all-reduced across DDP ranks.
"""
from __future__ import annotations

import copy

import torch
import torch.distributed as dist
import torch.nn.functional as F

from semifer.algorithms.base import StepOutput, register_algorithm
from semifer.algorithms.common import forward_views, teacher_probs
from semifer.algorithms.ema_teacher import EMATeacher, teacher_mask


@register_algorithm("cross_teacher")
class CrossTeacher(EMATeacher):
    views = {"u_w": "weak", "u_s": "strong", "u_s2": "strong"}

    def __init__(self, peer_init: str = "", **kw):
        super().__init__(**kw)
        if self.contrast > 0:
            raise ValueError("cross_teacher does not take algorithm.contrast; use ema_teacher for it")
        self.peer_init = peer_init
        self.peer = self.peer_teacher = None  # built from the model in setup()

    def setup(self, model):
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise ValueError("cross_teacher runs on one process: its peer's gradients are not all-reduced "
                             "across DDP ranks")
        self.peer = copy.deepcopy(model)
        if self.peer_init:
            from semifer.models.io import init_from

            init_from(self.peer, self.peer_init)
        self.peer_teacher = copy.deepcopy(self.peer).requires_grad_(False)

    @torch.no_grad()
    def update_peer_teacher(self) -> None:
        """B's teacher <- EMA of B (parameters and float buffers, as the engine's EMA does for A);
        run at the start of a step, so it sees B after the previous optimiser step."""
        m = self.teacher_momentum
        for t, s in zip(self.peer_teacher.parameters(), self.peer.parameters()):
            t.lerp_(s, 1.0 - m)
        for t, s in zip(self.peer_teacher.buffers(), self.peer.buffers()):
            t.lerp_(s, 1.0 - m) if t.is_floating_point() else t.copy_(s)

    def step(self, model, batch, step, teacher=None):
        if self.peer is None:  # a bare step() without the engine's setup()
            self.setup(model)
        self.update_peer_teacher()
        self.peer.train(model.training)
        q_a = teacher_probs(teacher, batch["u_w"], self.teacher_flip)                  # [uB, K]
        q_b = teacher_probs(self.peer_teacher, batch["u_w"], self.teacher_flip)       # [uB, K]
        logits_x, logits_s = forward_views(model, batch["x"], batch["u_s"])
        logits_xb, logits_sb = forward_views(self.peer, batch["x"], batch["u_s2"])
        (conf_a, y_a), (conf_b, y_b) = q_a.max(-1), q_b.max(-1)
        mask_a, mask_b = teacher_mask(conf_a, self.tau), teacher_mask(conf_b, self.tau)
        logs = {}
        if self.prior is not None:  # B's logits by the same pi as A's, before this step's EM update
            logits_xb = self.prior.adjust(logits_xb)
            logits_x = self.prior.adjust(logits_x)
            self.prior.update((q_a + q_b) / 2)
            logs = {"prior_max": float(self.prior.pi.max()), "prior_min": float(self.prior.pi.min())}
        loss_x = F.cross_entropy(logits_x, batch["y"], label_smoothing=self.label_smoothing)
        loss_xb = F.cross_entropy(logits_xb, batch["y"], label_smoothing=self.label_smoothing)
        loss_u = self.unlabelled_loss(logits_s, y_b, mask_b)    # A learns B's teacher's labels
        loss_ub = self.unlabelled_loss(logits_sb, y_a, mask_a)  # and B learns A's
        loss = loss_x + self.mu * loss_u + loss_xb + self.mu * loss_ub
        logs |= {"loss_x": loss_x.detach(), "loss_u": loss_u, "loss_x_peer": loss_xb.detach(),
                 "loss_u_peer": loss_ub, "tau_mean": self.tau, "teachers_agree": (y_a == y_b).float().mean()}
        return StepOutput(loss, logs, y_b, mask_b, levels={"own": (y_a, mask_a)})

    def peer_weights(self) -> dict[str, torch.Tensor]:
        """B's teacher as a model state dict: what a second ensemble member is built from."""
        return {k: v.detach().clone() for k, v in self.peer_teacher.state_dict().items()}
