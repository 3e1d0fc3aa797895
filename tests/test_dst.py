"""semifer.algorithms.dst (Debiased Self-Training on the EMA teacher): the loss against hand
arithmetic, the reversed gradient of the worst-case head, the main head kept out of the
pseudo-labels' gradient, and the extra heads' gradients averaged over DDP ranks."""
import math

import pytest
import torch
import torch.nn as nn

from semifer.algorithms import create_algorithm
from semifer.algorithms.dst import warm_start_coeff, worst_case_loss

from test_algorithms import K, RowLogits, TinyNet, ce, rows, softmax


def _identity_heads(algo):
    """Heads that pass the feature through, so every logit is written in the test."""
    algo.pseudo_head, algo.worst_head = nn.Identity(), nn.Identity()


BATCH = {"x": rows([2, 0, 0], [0, 1, 0]), "y": torch.tensor([0, 2]),
         "u_w": rows([3, 0, 0], [0, 0.2, 0]),        # the teacher: class 0 at 0.91, class 1 at 0.38
         "u_s": rows([1, 0, 0], [0, 0, 1])}


def test_dst_loss_by_hand():
    algo = create_algorithm("dst", K, tau=0.7, mu=5.0, worst=0.3, eta_prime=2.0, teacher_momentum=0.9)
    _identity_heads(algo)
    out = algo.step(RowLogits(), BATCH, step=0, teacher=RowLogits())
    assert out.pseudo_labels.tolist() == [0, 1] and out.mask.tolist() == [1.0, 0.0]
    loss_x = (ce([2, 0, 0], 0) + ce([0, 1, 0], 2)) / 2
    loss_u = ce([1, 0, 0], 0) / 2                         # the pseudo head on u_s, masked, over the whole batch
    # h_worst agrees with argmax h on x (0 and 1) and disagrees with y^ on u_s (0 and 1, unmasked)
    loss_w = 2.0 * (ce([2, 0, 0], 0) + ce([0, 1, 0], 1)) / 2 \
        - (math.log(1 - softmax([1, 0, 0])[0]) + math.log(1 - softmax([0, 0, 1])[1])) / 2
    assert abs(float(out.logs["loss_u"]) - loss_u) < 1e-5
    assert abs(float(out.logs["loss_worst"]) - loss_w) < 1e-5
    assert abs(float(out.loss.detach()) - (loss_x + 5.0 * loss_u + 0.3 * loss_w)) < 1e-5


def test_worst_case_loss_terms():
    adv = rows([0, 0, 0])
    assert abs(float(worst_case_loss(adv, torch.tensor([1]), adv, torch.tensor([2]), 3.0))
               - (3.0 * math.log(3) - math.log(2 / 3))) < 1e-5
    # a head certain of the pseudo-label: the 1e-6 shift keeps the log finite
    assert math.isfinite(float(worst_case_loss(adv, torch.tensor([0]), rows([100, 0, 0]), torch.tensor([0]), 1.0)))


def test_the_backbone_gets_the_worst_case_gradient_reversed():
    step = 500
    coeff = warm_start_coeff(step, 0.1, 1000)
    assert warm_start_coeff(0, 0.1, 1000) == 0.0 and abs(coeff - (0.2 / (1 + math.exp(-0.5)) - 0.1)) < 1e-12
    algo = create_algorithm("dst", K, tau=0.7, mu=5.0, worst=0.3, eta_prime=2.0)
    _identity_heads(algo)
    u_s = BATCH["u_s"].clone().requires_grad_(True)
    out = algo.step(RowLogits(), {**BATCH, "u_s": u_s}, step=step, teacher=RowLogits())
    (grad,) = torch.autograd.grad(out.loss, u_s)
    # the same terms without the reversal layer: + mu dL_u/du_s - worst * coeff * dL_w/du_s
    u = BATCH["u_s"].clone().requires_grad_(True)
    loss_u = nn.functional.cross_entropy(u, torch.tensor([0, 1]), reduction="none") * torch.tensor([1.0, 0.0])
    loss_w = worst_case_loss(BATCH["x"], torch.tensor([0, 1]), u, torch.tensor([0, 1]), 2.0)
    g_u, = torch.autograd.grad(loss_u.mean(), u)
    g_w, = torch.autograd.grad(loss_w, u)
    assert torch.allclose(grad, 5.0 * g_u - 0.3 * coeff * g_w, atol=1e-6)


def test_the_main_head_learns_from_the_labels_only():
    torch.manual_seed(0)
    model, teacher = TinyNet(), TinyNet()
    algo = create_algorithm("dst", K, tau=0.0)
    g = torch.Generator().manual_seed(1)
    batch = {"x": torch.randn(4, 3, 8, 8, generator=g), "y": torch.tensor([0, 1, 2, 0]),
             "u_w": torch.randn(8, 3, 8, 8, generator=g), "u_s": torch.randn(8, 3, 8, 8, generator=g)}
    model.eval()                                          # the same network in both forwards below
    out = algo.step(model, batch, step=100, teacher=teacher)
    head, conv, pseudo = torch.autograd.grad(out.logs["loss_u"], [model.head.weight, model.conv.weight,
                                                                   algo.pseudo_head[0].weight], allow_unused=True)
    assert head is None and conv.abs().sum() > 0 and pseudo.abs().sum() > 0
    # the whole loss moves h exactly as the labelled cross-entropy alone does: L_w reaches psi, not h
    (head_all,) = torch.autograd.grad(out.loss, model.head.weight)
    (head_x,) = torch.autograd.grad(nn.functional.cross_entropy(model(batch["x"])[1], batch["y"]), model.head.weight)
    assert torch.allclose(head_all, head_x, atol=1e-6)
    assert {k.split(".")[0] for k in algo.state_dict()} >= {"pseudo_head", "worst_head"}   # resumed with the run


def test_dst_options_are_checked():
    with pytest.raises(ValueError, match="contrast"):
        create_algorithm("dst", K, contrast=1.0)
    with pytest.raises(ValueError, match="worst"):
        create_algorithm("dst", K, worst=-1.0)
    with pytest.raises(ValueError, match="head_width"):
        create_algorithm("dst", K, head_width=0)


def _rank_head_grad(rank: int) -> torch.Tensor:
    import torch.distributed as dist

    from semifer.engine.distributed import average_grads_over_ranks

    head = nn.Linear(2, 1, bias=False)
    nn.init.ones_(head.weight)
    average_grads_over_ranks(head)
    head(torch.tensor([[1.0, 2.0]]) * (rank + 1)).sum().backward()   # rank 0: (1, 2), rank 1: (2, 4)
    assert dist.get_world_size() == 2
    return head.weight.grad.clone()


def test_extra_heads_average_their_gradients_over_ranks(on_ranks):
    r0, r1 = on_ranks(_rank_head_grad)
    assert torch.equal(r0, r1) and torch.allclose(r0, torch.tensor([[1.5, 3.0]]))
