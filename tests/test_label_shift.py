"""semifer.algorithms.label_shift: the online EM of the unlabelled faces' prior and the
logit-adjusted labelled loss, against hand arithmetic and against a prior we chose."""
import math
import types

import pytest
import torch
import torch.nn.functional as F

from semifer.algorithms import create_algorithm
from semifer.algorithms.label_shift import OnlinePrior, make_prior


def close(a, b, tol=1e-5):
    return abs(float(a) - float(b)) < tol


def test_update_is_one_ema_step_of_the_batch_mean_posterior():
    prior = OnlinePrior(2, momentum=0.5)
    prior.update(torch.tensor([[1.0, 0.0], [0.8, 0.2]]))     # batch mean (0.9, 0.1)
    assert torch.allclose(prior.pi, torch.tensor([0.7, 0.3]))  # 0.5 * 0.5 + 0.5 * 0.9


def test_adjust_adds_log_labelled_prior_minus_log_pi():
    prior = OnlinePrior(3)
    prior.set_labelled([0, 0, 1, 2])                        # p_l = (0.5, 0.25, 0.25)
    prior.pi.copy_(torch.tensor([0.2, 0.3, 0.5]))
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    want = torch.tensor([[1 + math.log(0.5 / 0.2), 2 + math.log(0.25 / 0.3), 3 + math.log(0.25 / 0.5)]])
    assert torch.allclose(prior.adjust(logits), want)


def test_online_em_recovers_the_unlabelled_prior():
    """Two Gaussian classes, a posterior under a balanced prior (what 100 labels a class teach),
    unlabelled faces 80 / 20: the online EM, predicting under its own pi, ends near (0.8, 0.2)."""
    g = torch.Generator().manual_seed(0)
    prior = OnlinePrior(2, momentum=0.99)
    for _ in range(2000):
        y = (torch.rand(256, generator=g) < 0.2).long()              # class 1 with probability 0.2
        x = torch.randn(256, generator=g) + 2.0 * y                  # means 0 and 2, unit variance
        balanced = torch.stack([-(x ** 2) / 2, -((x - 2) ** 2) / 2], 1)  # log p(x | y) + const
        q = (balanced + prior.pi.log()).softmax(-1)                  # the teacher under pi
        prior.update(q)
    assert abs(float(prior.pi[0]) - 0.8) < 0.03, prior.pi


def test_make_prior_names_the_options():
    assert make_prior("labelled", 3, 0.999) is None
    with pytest.raises(ValueError, match="labelled, online"):
        make_prior("uniform", 3, 0.999)
    with pytest.raises(ValueError, match="prior_momentum"):
        OnlinePrior(3, momentum=1.0)


class RowLogits(torch.nn.Module):
    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(scale))

    def forward(self, x):
        return x, x * self.scale


def test_ema_teacher_online_prior_adjusts_the_labelled_loss_and_updates_pi():
    algo = create_algorithm("ema_teacher", 3, prior="online", prior_momentum=0.5)
    algo.setup_data(types.SimpleNamespace(labels=[0, 1, 2, -1], labelled=[0, 1, 2]))   # p_l uniform
    algo.prior.pi.copy_(torch.tensor([0.5, 0.25, 0.25]))
    x = torch.tensor([[1.0, 0.0, 0.0]])
    batch = {"x": x, "y": torch.tensor([1]), "u_w": torch.zeros(2, 3), "u_s": torch.zeros(2, 3)}
    out = algo.step(RowLogits(), batch, step=0, teacher=RowLogits())
    adjusted = x + torch.log(torch.full((3,), 1 / 3)) - torch.log(torch.tensor([0.5, 0.25, 0.25]))
    assert close(out.logs["loss_x"], F.cross_entropy(adjusted, torch.tensor([1])))
    # the teacher's posteriors are uniform: pi = 0.5 pi + 0.5 / 3
    assert torch.allclose(algo.prior.pi, torch.tensor([0.5, 0.25, 0.25]) / 2 + 1 / 6)
    assert close(out.logs["prior_max"], 0.25 + 1 / 6)
    assert "prior.pi" in algo.state_dict() and "prior.p_l" in algo.state_dict()


def test_labelled_prior_is_the_default_and_adds_no_state():
    algo = create_algorithm("ema_teacher", 3)
    assert algo.prior is None and not any(k.startswith("prior") for k in algo.state_dict())


def test_noisy_student_online_prior_follows_its_teachers_pseudo_labels():
    teacher = RowLogits(1.0)
    algo = create_algorithm("noisy_student", 2, teacher=teacher, teacher_flip=False, prior="online",
                            prior_momentum=0.0)          # pi = this batch's mean teacher posterior
    algo.setup_data(types.SimpleNamespace(labels=[0, 1], labelled=[0, 1]))
    u = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])   # teacher: (0.75, 0.25)
    batch = {"x": torch.zeros(1, 2), "y": torch.tensor([0]), "u_w": u, "u_s": u}
    algo.step(RowLogits(), batch, step=0)
    assert torch.allclose(algo.prior.pi, torch.tensor([0.75, 0.25]))
    out = algo.step(RowLogits(), batch, step=1)
    # L_l on logits (0, 0) + log(0.5) - log(0.75, 0.25): CE for class 0 = -log(1/3 / (1/3 + 1))
    assert close(out.logs["loss_x"], math.log(4.0))
