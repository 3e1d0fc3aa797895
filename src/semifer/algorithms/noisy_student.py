"""Noisy Student (Xie, Luong, Hovy & Le, "Self-training with Noisy Student improves ImageNet
classification", CVPR 2020): a trained, fixed teacher T labels the unlabelled images without
noise; a student S, trained from scratch and at least as large, learns the labelled images and
the teacher's soft pseudo-labels under noise (the strong view, dropout).

    q = softmax(T(u_w))                        soft pseudo-labels, T fixed, clean view (eq. 2)
    L = (B L_l + lambda_u uB L_u) / (B + lambda_u uB)      every image weighs the same
    L_l = CE(S(x), y),  L_u = (1/uB) sum_b 1[max q_b >= tau] H(q_b, S(u_s,b))

The paper's student learns labelled and pseudo-labelled images in one stream, so each image has
one weight (``lambda_u`` scales the unlabelled ones); ``tau`` is its confidence filter (0.3 on
ImageNet; 0 keeps every image); ``hard`` uses argmax q instead (the paper's soft labels did
better in-domain). The teacher is a semifer checkpoint (a run folder or ``.safetensors``), e.g.
an EMA-teacher run: its stored temperature and class prior (``semifer calibrate``,
``semifer adapt-prior``) apply, so the pseudo-labels follow the prior of the unlabelled faces.
Iterating (the student becomes the next teacher) is a new run with ``algorithm.teacher`` set to
this one. A list of teachers (``algorithm.teacher=[runA,runB]``) labels with the mean of their
probabilities: an ensemble distilled into one student, not in the paper. ``prior="online"``
logit-adjusts L_l to the class prior of the teachers' pseudo-labels (``semifer.algorithms.label_shift``),
so the 100-a-class labels do not pull the student back to a uniform prior.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from semifer.algorithms.base import Algorithm, StepOutput, register_algorithm
from semifer.algorithms.common import forward_views, masked_ce, teacher_probs
from semifer.algorithms.label_shift import labelled_prior_from, make_prior, shift_labelled_logits


@register_algorithm("noisy_student")
class NoisyStudent(Algorithm):
    views = {"u_w": "weak", "u_s": "strong"}

    def __init__(self, teacher: str | list | nn.Module = "", lambda_u: float = 1.0, tau: float = 0.0,
                 hard: bool = False, teacher_flip: bool = True, prior: str = "labelled",
                 prior_momentum: float = 0.999, **kw):
        super().__init__(**kw)
        teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
        if not teachers or any(not isinstance(t, nn.Module) and not t for t in teachers):
            raise ValueError("noisy_student needs algorithm.teacher: the run folder or .safetensors of a "
                             "trained model (e.g. an ema_teacher run) that labels the unlabelled faces, "
                             f"or a list of them; got {teacher!r}")
        self.lambda_u, self.tau, self.hard, self.teacher_flip = lambda_u, tau, hard, teacher_flip
        self.teacher_sources = [t for t in teachers if isinstance(t, str)]   # a module here would register
        # a plain list: the fixed teachers are neither parameters to optimise nor state to checkpoint
        self._teachers: list[nn.Module] = [t.requires_grad_(False) for t in teachers if isinstance(t, nn.Module)]
        self.prior = make_prior(prior, self.num_classes, prior_momentum)

    def setup_data(self, data):
        if self.prior is not None:
            self.prior.set_labelled(labelled_prior_from(data))

    def teachers(self, device: torch.device) -> list[nn.Module]:
        if not self._teachers:
            from semifer.models.io import load_model

            for source in self.teacher_sources:
                model, meta = load_model(source, device=device)
                if len(meta["classes"]) != self.num_classes:
                    raise ValueError(f"algorithm.teacher={source}: {len(meta['classes'])} classes "
                                     f"{meta['classes']}, the student has {self.num_classes}")
                self._teachers.append(model.requires_grad_(False))
        return [t.to(device) for t in self._teachers]

    def step(self, model, batch, step, teacher=None):
        u_w = batch["u_w"]
        q = torch.stack([teacher_probs(t, u_w, self.teacher_flip) for t in self.teachers(u_w.device)]).mean(0)  # [uB, K]
        conf, pseudo = q.max(-1)
        mask = (conf >= self.tau).float()
        logits_x, logits_s = forward_views(model, batch["x"], batch["u_s"])
        logits_x, logs = shift_labelled_logits(self.prior, logits_x, q)
        loss_x = F.cross_entropy(logits_x.float(), batch["y"])
        loss_u = masked_ce(logits_s, pseudo if self.hard else q, mask)
        b, ub = len(logits_x), self.lambda_u * len(logits_s)
        loss = (b * loss_x + ub * loss_u) / (b + ub)
        return StepOutput(loss, {"loss_x": loss_x.detach(), "loss_u": loss_u} | logs, pseudo, mask)
