"""semifer.algorithms.contrast (CoMatch's graph-contrastive term) and the EMA teacher's
``contrast`` option: the graph and the loss against hand arithmetic, gradients, the key head's EMA."""
import math

import pytest
import torch
import torch.nn.functional as F

from semifer.algorithms import create_algorithm
from semifer.algorithms.contrast import GraphContrast, graph_contrastive_loss, pseudo_label_graph


def test_graph_keeps_agreeing_pairs_above_tau_and_normalises_rows():
    q = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    w = pseudo_label_graph(q, graph_tau=0.8)
    # q0.q1 = 0.9 (kept), q0.q2 = 0, q1.q2 = 0.1 (dropped); diagonal 1; rows normalised
    want = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(w, want / want.sum(1, keepdim=True))
    assert torch.allclose(pseudo_label_graph(q, graph_tau=1.01), torch.eye(3))  # instance only


def test_loss_by_hand_on_two_embeddings():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    w = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    t = 0.5
    # row 0: logits (2, 1.2); row 1: logits (0, 1.6)
    lse0, lse1 = math.log(math.exp(2) + math.exp(1.2)), math.log(1 + math.exp(1.6))
    want = (0.5 * (lse0 - 2) + 0.5 * (lse0 - 1.2) + (lse1 - 1.6)) / 2
    assert abs(float(graph_contrastive_loss(z, k, w, t)) - want) < 1e-6
    # with the identity graph it is instance discrimination: cross-entropy to the own key
    assert torch.allclose(graph_contrastive_loss(z, k, torch.eye(2), t), F.cross_entropy(z @ k.T / t, torch.arange(2)))


def test_key_head_follows_the_head_by_ema_and_takes_no_gradient():
    g = GraphContrast(4, proj_dim=3, momentum=0.5)
    assert all(not p.requires_grad for p in g.key_head.parameters())
    with torch.no_grad():
        for p in g.head.parameters():
            p.add_(1.0)
    before = [p.clone() for p in g.key_head.parameters()]
    loss, logs = g(torch.randn(5, 4), torch.randn(5, 4), torch.full((5, 2), 0.5))
    for pk, p0, p in zip(g.key_head.parameters(), before, g.head.parameters()):
        assert torch.allclose(pk, 0.5 * p0 + 0.5 * p)   # one EMA step before the loss
    loss.backward()
    assert g.head[0].weight.grad is not None and g.key_head[0].weight.grad is None
    assert float(logs["graph_degree"]) == 1.0           # q_i . q_j = 0.5 < 0.8: each face its own only


class Features(torch.nn.Module):
    """(h, logits) = (x, x W): a tiny model with the engine's forward contract."""

    def __init__(self, d=4, k=3):
        super().__init__()
        self.num_features = d
        self.fc = torch.nn.Linear(d, k)

    def forward(self, x):
        return x, self.fc(x)


def test_ema_teacher_adds_contrast_times_loss_c_and_trains_the_head():
    torch.manual_seed(0)
    student, teacher = Features(), Features()
    batch = {"x": torch.randn(2, 4), "y": torch.tensor([0, 1]), "u_w": torch.randn(6, 4), "u_s": torch.randn(6, 4)}
    plain = create_algorithm("ema_teacher", 3, teacher_momentum=0.9)
    algo = create_algorithm("ema_teacher", 3, teacher_momentum=0.9, contrast=2.0)
    algo.setup(student)
    a = plain.step(student, batch, step=0, teacher=teacher)
    b = algo.step(student, batch, step=0, teacher=teacher)
    assert abs(float(b.loss.detach() - a.loss.detach()) - 2.0 * float(b.logs["loss_c"])) < 1e-5
    b.loss.backward()
    assert algo.graph.head[0].weight.grad.abs().sum() > 0
    assert algo.graph.momentum == 0.9                     # the key head moves as the teacher does
    assert any(k.startswith("graph.key_head") for k in algo.state_dict())   # resumed with the run
    with pytest.raises(ValueError, match="contrast"):
        create_algorithm("ema_teacher", 3, contrast=-1.0)
