"""semifer.algorithms: losses, masks and thresholds against hand arithmetic, every registered
algorithm on a tiny net (parameters move, the unsupervised term alone has gradient, state
round-trips), threshold state kept identical across 2 CPU DDP processes, and no algorithm able
to reach the true labels of the unlabelled images or the test set."""
import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from semifer.algorithms import ALGORITHMS, create_algorithm
from semifer.algorithms.flexmatch import last_write
from semifer.algorithms.freematch import fairness_loss

E = math.e
K = 3


class RowLogits(nn.Module):
    """A 'model' whose logits are its input rows times ``scale``, so every number is written
    in the test; ``scale`` is the parameter gradients flow into."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale))

    def forward(self, x):
        return x, x * self.scale


class TinyNet(nn.Module):
    """Conv + BatchNorm + dropout + linear head returning (feat, logits), like FERClassifier."""

    def __init__(self, num_classes: int = K):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(8, num_classes)
        self.num_features = 8

    def forward(self, x):
        feat = F.adaptive_avg_pool2d(F.relu(self.bn(self.conv(x))), 1).flatten(1)   # [B, 8]
        return feat, self.head(self.drop(feat))


def rows(*r):
    return torch.tensor(r, dtype=torch.float32)


def ce(row, y):
    """Cross-entropy of one logit row against class y, by hand."""
    return -math.log(math.exp(row[y]) / sum(math.exp(v) for v in row))


def softmax(row):
    z = sum(math.exp(v) for v in row)
    return [math.exp(v) / z for v in row]


def close(a, b):
    return abs(float(torch.as_tensor(a).detach()) - float(b)) < 1e-5


# ---- hand-computed losses, masks and thresholds ---------------------------------------------

def test_fixmatch_loss_and_mask():
    algo = create_algorithm("fixmatch", K)
    batch = {"x": rows([2, 0, 0]), "y": torch.tensor([0]),
             "u_w": rows([3, 0, 0], [5, 0, 0]),       # confidences 0.909 (< 0.95) and 0.987
             "u_s": rows([0, 1, 0], [1, 0, 0])}
    out = algo.step(RowLogits(), batch, step=0)
    loss_x = -math.log(E**2 / (E**2 + 2))
    loss_u = (0 + -math.log(E / (E + 2))) / 2       # only the second image passes; mean over uB
    assert out.mask.tolist() == [0.0, 1.0] and out.pseudo_labels.tolist() == [0, 0]
    assert close(out.logs["loss_x"], loss_x) and close(out.logs["loss_u"], loss_u)
    assert close(out.loss, loss_x + 1.0 * loss_u)

    # threshold warm-up: halfway through 10 iterations from 0.5 to 0.95 -> 0.725, both pass
    algo = create_algorithm("fixmatch", K, tau_start=0.5, tau_warmup=10)
    out = algo.step(RowLogits(), batch, step=5)
    assert close(out.logs["tau_mean"], 0.5 + (0.95 - 0.5) * 5 / 10)
    assert out.mask.tolist() == [1.0, 1.0]
    assert close(out.logs["loss_u"], (-math.log(1 / (E + 2)) - math.log(E / (E + 2))) / 2)

    # soft targets: -sum_c q_c log p_c with q the weak probabilities of the passing image
    out = create_algorithm("fixmatch", K, soft=True).step(RowLogits(), batch, step=0)
    q = [E**5 / (E**5 + 2), 1 / (E**5 + 2), 1 / (E**5 + 2)]
    soft_ce = -(q[0] * math.log(E / (E + 2)) + (q[1] + q[2]) * math.log(1 / (E + 2)))
    assert close(out.logs["loss_u"], soft_ce / 2)


def test_ema_teacher_uses_teacher_prediction():
    algo = create_algorithm("ema_teacher", K)
    assert algo.uses_teacher and algo.teacher_momentum == 0.999
    teacher = RowLogits(2.0).train()
    batch = {"x": rows([1, 0, 0]), "y": torch.tensor([0]),
             "u_w": rows([0.5, 0, 0], [0, 1, 0]),     # teacher logits x2: conf 0.576 (< 0.7), 0.787
             "u_s": rows([0, 0, 1], [0, 1, 0])}
    out = algo.step(RowLogits(), batch, step=0, teacher=teacher)
    # the student alone would give the second image 0.576 < 0.7: the mask comes from the teacher
    assert out.mask.tolist() == [0.0, 1.0] and out.pseudo_labels.tolist() == [0, 1]
    loss_x = -math.log(E / (E + 2))
    loss_u = (0 + -math.log(E / (E + 2))) / 2
    assert close(out.loss, loss_x + 5.0 * loss_u)
    assert teacher.training and teacher.scale.grad is None
    with pytest.raises(ValueError, match="teacher"):
        algo.step(RowLogits(), batch, step=0, teacher=None)


def test_ema_teacher_generalised_cross_entropy_on_the_unlabelled_loss():
    teacher = RowLogits(2.0)
    batch = {"x": rows([1, 0, 0]), "y": torch.tensor([0]),
             "u_w": rows([0.5, 0, 0], [0, 1, 0]),     # as above: the second image passes, label 1
             "u_s": rows([0, 0, 1], [0, 1, 0])}
    out = create_algorithm("ema_teacher", K, gce_q=0.7).step(RowLogits(), batch, step=0, teacher=teacher)
    p = E / (E + 2)                                   # the student's p of label 1 on the second u_s
    assert close(out.logs["loss_u"], (1 - p ** 0.7) / 0.7 / 2)
    assert close(out.loss, -math.log(p) + 5.0 * (1 - p ** 0.7) / 0.7 / 2)   # L_l stays CE
    # q -> 0 is the cross-entropy
    from semifer.algorithms.common import masked_ce, masked_gce
    logits, y, m = torch.randn(4, K), torch.tensor([0, 1, 2, 1]), torch.tensor([1.0, 0.0, 1.0, 1.0])
    assert abs(float(masked_gce(logits, y, m, 1e-3)) - float(masked_ce(logits, y, m))) < 5e-3
    with pytest.raises(ValueError, match="gce_q"):
        create_algorithm("ema_teacher", K, gce_q=1.5)


def test_ema_teacher_label_smoothing_on_the_labelled_loss_only():
    teacher = RowLogits(2.0)
    batch = {"x": rows([1, 0, 0]), "y": torch.tensor([0]), "u_w": rows([0, 1, 0]), "u_s": rows([0, 1, 0])}
    out = create_algorithm("ema_teacher", K, label_smoothing=0.3).step(RowLogits(), batch, step=0, teacher=teacher)
    # targets (1 - 0.3) one-hot + 0.3 / K: -(0.8 log p_0 + 0.1 log p_1 + 0.1 log p_2), p = softmax(1, 0, 0)
    loss_x = -(0.8 * math.log(E / (E + 2)) + 0.2 * math.log(1 / (E + 2)))
    assert close(out.logs["loss_x"], loss_x)
    assert close(out.logs["loss_u"], -math.log(E / (E + 2)) / 1)     # pseudo-labels stay hard
    assert close(out.loss, loss_x + 5.0 * out.logs["loss_u"])


def test_cross_teacher_students_learn_each_others_teachers_labels():
    algo = create_algorithm("cross_teacher", K, tau=0.5)
    model, teacher = RowLogits(1.0), RowLogits(2.0)   # the peer and its teacher start as copies of the model
    batch = {"x": rows([1, 0, 0]), "y": torch.tensor([0]),
             "u_w": rows([0.5, 0, 0], [0, 1, 0]),     # A's teacher (x2): conf 0.576, 0.787; B's (x1): 0.452, 0.576
             "u_s": rows([0, 0, 1], [0, 1, 0]), "u_s2": rows([1, 0, 0], [0, 0, 1])}
    out = algo.step(model, batch, step=0, teacher=teacher)
    assert out.mask.tolist() == [0.0, 1.0] and out.pseudo_labels.tolist() == [0, 1]   # B's teacher's, for A
    assert out.levels["own"][1].tolist() == [1.0, 1.0]                                 # A's teacher's, for B
    loss_x = -math.log(E / (E + 2))
    loss_u = -math.log(E / (E + 2)) / 2                            # A on u_s row 2, labelled 1 by B's teacher
    loss_ub = (-math.log(E / (E + 2)) - math.log(1 / (E + 2))) / 2  # B on u_s2, labelled 0 and 1 by A's
    assert close(out.logs["loss_u"], loss_u) and close(out.logs["loss_u_peer"], loss_ub)
    assert close(out.loss, 2 * loss_x + 5.0 * (loss_u + loss_ub))
    # B's teacher follows B by EMA at the next step: 0.999 * 1 + 0.001 * 3
    with torch.no_grad():
        algo.peer.scale.fill_(3.0)
    algo.step(model, batch, step=1, teacher=teacher)
    assert close(algo.peer_teacher.scale, 0.999 + 0.003) and not algo.peer_teacher.scale.requires_grad
    assert close(algo.peer_weights()["scale"], 1.002)
    with pytest.raises(ValueError, match="does not take algorithm.contrast"):
        create_algorithm("cross_teacher", K, contrast=1.0)


NS_BATCH = {"x": rows([1, 0, 0]), "y": torch.tensor([0]),
         "u_w": rows([1, 0, 0], [0, 0, 0]),      # teacher (x2): softmax(2, 0, 0) and uniform
         "u_s": rows([0, 1, 0], [0, 0, 0])}      # student: softmax(0, 1, 0) and uniform


def test_noisy_student_soft_pseudo_labels_and_one_weight_per_image():
    teacher = RowLogits(2.0)
    algo = create_algorithm("noisy_student", 3, teacher=teacher, teacher_flip=False)
    out = algo.step(RowLogits(), NS_BATCH, step=0)
    q1 = 1 / (E**2 + 2)                                    # teacher's class-1 probability, image 1
    h1 = math.log(E + 2) - q1                              # H(q, softmax(0, 1, 0)) = log(e + 2) - q_1
    loss_u = (h1 + math.log(3)) / 2
    loss_x = math.log(E + 2) - 1
    assert abs(float(out.logs["loss_u"]) - loss_u) < 1e-5
    assert abs(float(out.loss) - (1 * loss_x + 2 * loss_u) / 3) < 1e-5     # B = 1, uB = 2
    assert out.pseudo_labels.tolist()[0] == 0 and out.mask.tolist() == [1.0, 1.0]
    # tau drops the uniform image; lambda_u weighs the unlabelled images
    out = create_algorithm("noisy_student", 3, teacher=teacher, teacher_flip=False, tau=0.5, lambda_u=2.0).step(
        RowLogits(), NS_BATCH, step=0)
    assert out.mask.tolist() == [1.0, 0.0]
    assert abs(float(out.loss) - (loss_x + 4 * h1 / 2) / 5) < 1e-5
    assert teacher.scale.grad is None


def test_noisy_student_teacher_is_neither_optimised_nor_checkpointed():
    algo = create_algorithm("noisy_student", 3, teacher=RowLogits(2.0))
    assert list(algo.parameters()) == [] and algo.state_dict() == {}
    with pytest.raises(ValueError, match="algorithm.teacher"):
        create_algorithm("noisy_student", 3)


def test_mean_teacher_consistency_and_rampup():
    algo = create_algorithm("mean_teacher", K, total_steps=10, rampup=0.5)
    student, teacher = RowLogits(), RowLogits(2.0)
    batch = {"x": rows([1, 0, 0]), "y": torch.tensor([0]), "u_w": rows([1, 0, 0]), "u_s": rows([0, 1, 0])}
    out = algo.step(student, batch, step=2, teacher=teacher)
    q = [E**2 / (E**2 + 2), 1 / (E**2 + 2), 1 / (E**2 + 2)]      # teacher on u_w
    p = [1 / (E + 2), E / (E + 2), 1 / (E + 2)]                  # student on u_s
    loss_u = sum((pi - qi) ** 2 for pi, qi in zip(p, q)) / 3
    w = 10.0 * math.exp(-5 * (1 - 2 / 5) ** 2)                   # 2 of 5 ramp-up iterations
    assert close(out.logs["w_u"], w) and close(out.logs["loss_u"], loss_u)
    assert close(out.loss, -math.log(E / (E + 2)) + w * loss_u)
    (g,) = torch.autograd.grad(out.logs["loss_u"], [student.scale])
    assert g.abs() > 0 and teacher.scale.grad is None           # the student side carries gradient


def test_pi_model_consistency():
    algo = create_algorithm("pi_model", K, total_steps=10)
    batch = {"x": rows([1, 0, 0]), "y": torch.tensor([0]), "u_w": rows([1, 0, 0]), "u_s": rows([0, 1, 0])}
    out = algo.step(RowLogits(), batch, step=0)
    loss_u = 2 * ((1 - E) / (E + 2)) ** 2 / 3   # softmax [e,1,1]/(e+2) vs [1,e,1]/(e+2)
    w = 10.0 * math.exp(-5)                     # ramp-up at t = 0
    assert close(out.logs["loss_u"], loss_u)
    assert close(out.loss, -math.log(E / (E + 2)) + w * loss_u)


def test_pseudo_label_loss_and_linear_rampup():
    algo = create_algorithm("pseudo_label", K, total_steps=10)
    batch = {"x": rows([1, 0, 0]), "y": torch.tensor([0]), "u_w": rows([3, 0, 0], [0, 5, 0])}
    out = algo.step(RowLogits(), batch, step=2)
    assert out.mask.tolist() == [0.0, 1.0] and out.pseudo_labels.tolist() == [0, 1]
    loss_u = (0 + -math.log(E**5 / (E**5 + 2))) / 2
    w = 2 / (0.4 * 10)                          # linear over the first 40 % of 10 iterations
    assert close(out.logs["loss_u"], loss_u)
    assert close(out.loss, -math.log(E / (E + 2)) + w * loss_u)


def test_flexmatch_thresholds_after_update():
    batch = {"x": rows([1, 0, 0]), "y": torch.tensor([0]),
             "u_w": rows([5, 0, 0], [3, 0, 0]),       # conf 0.987 (> 0.95) and 0.909
             "u_s": rows([1, 0, 0], [0, 1, 0]), "u_idx": torch.tensor([0, 2])}
    algo = create_algorithm("flexmatch", K, num_unlabelled=4)
    out = algo.step(RowLogits(), batch, step=0)
    # nothing selected yet: every learning effect is 0, every threshold 0, everything passes
    assert out.mask.tolist() == [1.0, 1.0]
    assert close(out.loss, -math.log(E / (E + 2)) + (-math.log(E / (E + 2)) - math.log(1 / (E + 2))) / 2)
    assert algo.selected_label.tolist() == [-1, -1, -1, -1]     # updated only in sync()
    algo.sync()
    assert algo.selected_label.tolist() == [0, -1, -1, -1]

    # warm-up: beta(0) = 1 / max(1, 3 unused); convex M(x) = x / (2 - x)
    beta = 1 / 3
    assert torch.allclose(algo.class_thresholds(), torch.tensor([0.95 * beta / (2 - beta), 0.0, 0.0]))
    nxt = dict(batch, u_w=rows([3, 0, 0], [0, 3, 0]))
    assert algo.step(RowLogits(), nxt, step=1).mask.tolist() == [1.0, 1.0]   # 0.909 >= 0.19

    # no warm-up: beta(0) = 1 / max_c sigma = 1 -> T(0) = 0.95, and 0.909 no longer passes
    plain = create_algorithm("flexmatch", K, num_unlabelled=4, threshold_warmup=False)
    plain.load_state_dict(algo.state_dict())
    assert torch.allclose(plain.class_thresholds(), torch.tensor([0.95, 0.0, 0.0]))
    assert plain.step(RowLogits(), nxt, step=1).mask.tolist() == [0.0, 1.0]

    linear = create_algorithm("flexmatch", K, num_unlabelled=4, mapping="linear")
    linear.load_state_dict(algo.state_dict())
    assert torch.allclose(linear.class_thresholds(), torch.tensor([0.95 / 3, 0.0, 0.0]))
    with pytest.raises(ValueError, match="mapping"):
        create_algorithm("flexmatch", K, num_unlabelled=4, mapping="concave")

    # tau_min floors every T(c): 0.19 -> 0.5 and 0 -> 0.5, so the 0.909 sample still passes and
    # a fresh state (all thresholds 0) no longer lets a 0.42-confident sample through
    floored = create_algorithm("flexmatch", K, num_unlabelled=4, tau_min=0.5)
    fresh = floored.step(RowLogits(), dict(batch, u_w=rows([0.5, 0, 0], [3, 0, 0])), step=0)
    assert fresh.mask.tolist() == [0.0, 1.0]
    floored.load_state_dict(algo.state_dict())
    assert torch.allclose(floored.class_thresholds(), torch.tensor([0.5, 0.5, 0.5]))


def test_flexmatch_floored_is_fixmatch_until_a_class_threshold_passes_the_floor():
    # Why FlexMatch with tau_min=0.7 and FixMatch with tau=0.7 gave the same predictions on every
    # FER2013 val image at 2,400 steps (docs/benchmarks.md, section 1c): while every curriculum
    # threshold T(c) is below the floor, the floor is the threshold of every class.
    batch = {"x": rows([1, 0, 0]), "y": torch.tensor([0]),
             "u_w": rows([5, 0, 0], [2, 0, 0], [0, 0.5, 0]),     # conf 0.987, 0.787, 0.45
             "u_s": rows([1, 0, 0], [0, 1, 0], [0, 0, 1]), "u_idx": torch.tensor([0, 1, 2])}
    fix = create_algorithm("fixmatch", K, tau=0.7)
    flex = create_algorithm("flexmatch", K, num_unlabelled=4, tau_min=0.7)
    for step in range(2):                     # fresh state, then after one sync (beta(0) = 1/3)
        a, b = fix.step(RowLogits(), batch, step), flex.step(RowLogits(), batch, step)
        flex.sync()
        assert a.mask.tolist() == b.mask.tolist() == [1.0, 1.0, 0.0]
        assert close(a.loss, b.loss.detach())
    assert flex.selected_label.tolist() == [0, -1, -1, -1]
    assert (flex.class_thresholds() == 0.7).all()     # T(0) = 0.95 * M(1/3) = 0.19 < 0.7
    # once class 0 dominates the confident images, T(0) = 0.95 * M(1) = 0.95 > 0.787: they part
    flex.selected_label.copy_(torch.tensor([0, 0, 0, 0]))
    assert flex.step(RowLogits(), batch, 2).mask.tolist() == [1.0, 0.0, 0.0]


def test_flexmatch_last_write_wins():
    idx, values = last_write(torch.tensor([3, 1, 3, 2]), torch.tensor([10, 11, 12, 13]))
    assert idx.tolist() == [1, 2, 3] and values.tolist() == [11, 13, 12]


def test_freematch_ema_thresholds_and_loss():
    algo = create_algorithm("freematch", K, momentum=0.5)
    batch = {"x": rows([1, 0, 0]), "y": torch.tensor([0]),
             "u_w": rows([6, 0, 0], [0.5, 0, 0]), "u_s": rows([1, 0, 0], [0, 0, 1])}
    out = algo.step(RowLogits(), batch, step=0)
    q1, q2 = softmax([6, 0, 0]), softmax([0.5, 0, 0])
    tau = 0.5 * (1 / 3) + 0.5 * (q1[0] + q2[0]) / 2                    # from tau_0 = 1/K
    p = [0.5 * (1 / 3) + 0.5 * (q1[c] + q2[c]) / 2 for c in range(K)]  # from p~_0 = 1/K
    h = [0.5 * (1 / 3) + 0.5 * v for v in (1.0, 0.0, 0.0)]             # both pseudo-labels are 0
    assert close(algo.tau_global, tau)
    assert torch.allclose(algo.p_model, torch.tensor(p)) and torch.allclose(algo.label_hist, torch.tensor(h))
    thresholds = [pc / max(p) * tau for pc in p]
    assert close(out.logs["tau_mean"], sum(thresholds) / 3)
    assert q1[0] >= thresholds[0] > q2[0] and out.mask.tolist() == [1.0, 0.0]
    loss_u = -math.log(E / (E + 2)) / 2
    assert close(out.logs["loss_u"], loss_u)
    assert close(out.loss, -math.log(E / (E + 2)) + loss_u + 0.01 * out.logs["loss_f"])


def test_freematch_tau_min_floors_thresholds():
    batch = {"x": rows([1, 0, 0]), "y": torch.tensor([0]),
             "u_w": rows([6, 0, 0], [0.5, 0, 0]), "u_s": rows([1, 0, 0], [0, 0, 1])}
    algo = create_algorithm("freematch", K, momentum=0.5, tau_min=0.95)
    out = algo.step(RowLogits(), batch, step=0)
    assert close(out.logs["tau_mean"], 0.95)            # every self-adaptive threshold is below 0.95
    q1 = softmax([6, 0, 0])[0]                          # 0.995 passes, 0.45 does not
    assert q1 >= 0.95 and out.mask.tolist() == [1.0, 0.0]


def test_freematch_fairness_loss():
    logits = rows([1, 0, 0], [0, 2, 0], [0, 0, 3])    # one strong prediction per class: h_bar = 1/3 each
    p_model, label_hist = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.6, 0.2, 0.2])
    got = fairness_loss(logits, torch.ones(3), p_model, label_hist)
    a = [0.5 / 0.6, 0.3 / 0.2, 0.2 / 0.2]
    a = [v / sum(a) for v in a]                                           # SumNorm(p~ / h~)
    probs = [softmax([1, 0, 0]), softmax([0, 2, 0]), softmax([0, 0, 3])]
    b = [sum(pr[c] for pr in probs) / 3 for c in range(K)]                # p_bar / (1/3), SumNorm'd
    assert close(got, sum(ac * math.log(bc + 1e-12) for ac, bc in zip(a, b)))
    assert float(fairness_loss(logits, torch.zeros(3), p_model, label_hist)) == 0.0


# ---- every registered algorithm on a tiny net -----------------------------------------------

# options that let every unlabelled image pass its threshold, so the unsupervised term is live
OPEN = {"fixmatch": {"tau": 0.0}, "pseudo_label": {"tau": 0.0}, "ema_teacher": {"tau": 0.0}, "cross_teacher": {"tau": 0.0},
        "dst": {"tau": 0.0},
        "flexmatch": {"tau": 0.0}, "sitfer": {"tau": 0.0, "text_encoder": "random", "text_dim": 16}}
SEMI = [n for n in ALGORITHMS.names() if ALGORITHMS.get(n).views]


def open_options(name: str, model: nn.Module) -> dict:
    """OPEN, plus a fixed teacher for the algorithms that take one (a copy of the net in the test)."""
    return {**OPEN.get(name, {}), **({"teacher": copy.deepcopy(model).eval()} if name == "noisy_student" else {})}


def _batch(views: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = {"x": torch.randn(4, 3, 8, 8, generator=g), "y": torch.tensor([0, 1, 2, 0]),
             "u_idx": torch.randperm(16, generator=g)[:8]}
    batch.update({key: torch.randn(8, 3, 8, 8, generator=g) for key in views})
    return batch


def _setup(name: str):
    from timm.utils import ModelEmaV3   # here, not at the top: keeps the DDP workers' import light

    torch.manual_seed(0)
    model = TinyNet()
    algo = create_algorithm(name, K, total_steps=3, num_unlabelled=16, **open_options(name, model))
    ema = ModelEmaV3(model, decay=algo.teacher_momentum or 0.99) if algo.uses_teacher else None
    return model, algo, ema


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_three_steps_change_parameters(name):
    model, algo, ema = _setup(name)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        out = algo.step(model, _batch(algo.views, step), step, teacher=ema.module if ema else None)
        assert torch.isfinite(out.loss)
        assert all(math.isfinite(float(torch.as_tensor(v).detach())) for v in out.logs.values())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if ema:
            ema.update(model)
        algo.sync()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("name", SEMI)
def test_unsupervised_term_alone_has_gradient(name):
    model, algo, ema = _setup(name)
    out = algo.step(model, _batch(algo.views, 0), 0, teacher=ema.module if ema else None)
    if out.mask is not None:
        assert out.mask.sum() > 0
    loss_u = out.logs["loss_u"]
    assert loss_u.requires_grad, f"{name}: logs['loss_u'] must keep its graph"
    grads = torch.autograd.grad(loss_u, list(model.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name}: unsupervised term has no gradient"


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_state_round_trip_gives_the_same_step(name):
    model, algo, ema = _setup(name)
    teacher = ema.module if ema else None
    algo.step(model, _batch(algo.views, 0), 0, teacher=teacher)
    algo.sync()
    twin = create_algorithm(name, K, total_steps=3, num_unlabelled=16,
                            **{**open_options(name, model), **({"teacher": algo._teachers[0]} if name == "noisy_student" else {})})
    if name in ("cross_teacher", "dst"):  # peer / heads built from the model, as the engine's setup() does before a resume
        twin.setup(model)
    twin.load_state_dict(algo.state_dict())
    for net in (model, algo, twin):
        net.eval()   # no dropout / batch statistics: the two steps see the same network and heads
    a = algo.step(model, _batch(algo.views, 1), 1, teacher=teacher)
    b = twin.step(model, _batch(algo.views, 1), 1, teacher=teacher)
    assert torch.allclose(a.loss, b.loss)


# ---- DDP: threshold state identical on every rank --------------------------------------------

def _rank_batches(rank: int) -> list[dict]:
    """Two steps of different data per rank; the ranks share images 2 and 3 with other labels."""
    out = []
    for step in range(2):
        cls = torch.tensor([(rank + step + i) % K for i in range(4)])
        u_w = F.one_hot(cls, K).float() * 6 - rank * torch.tensor([0.0, 4.0, 0.0])   # conf ~0.995
        out.append({"x": rows([1, 0, 0]), "y": torch.tensor([0]), "u_w": u_w, "u_s": u_w.flip(1),
                    "u_idx": torch.arange(4) + 2 * rank})
    return out


def _run(name: str, batches: list[dict]) -> dict:
    algo = create_algorithm(name, K, num_unlabelled=8)
    for step, batch in enumerate(batches):
        algo.step(RowLogits(), batch, step)
        algo.sync()
    return {k: v.clone() for k, v in algo.state_dict().items()}


def _rank_states(rank: int) -> dict:
    return {name: _run(name, _rank_batches(rank)) for name in ("flexmatch", "freematch")}


def test_ddp_threshold_state_is_identical_across_ranks(on_ranks):
    r0, r1 = on_ranks(_rank_states)
    # the same steps on one process with both ranks' batches concatenated (rank order)
    joint = [{k: torch.cat([a[k], b[k]]) for k in a} for a, b in zip(_rank_batches(0), _rank_batches(1))]
    for name in ("flexmatch", "freematch"):
        alone = _run(name, _rank_batches(0))
        single = _run(name, joint)
        for key in r0[name]:
            assert torch.allclose(r0[name][key].float(), r1[name][key].float()), (name, key)
            assert torch.allclose(r0[name][key].float(), single[key].float(), atol=1e-6), (name, key)
        assert any(not torch.allclose(alone[k].float(), r0[name][k].float()) for k in alone), name


# ---- the hidden truth stays in the engine ---------------------------------------------------

POISON = -7  # the "true class" of every unlabelled image and every test label: no pixel, index or label is -7


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory):
    """Prepared synthetic data whose true labels of the unlabelled images (which equal their
    train labels without label noise) and test labels are all ``POISON``."""
    from semifer.config import DataConfig
    from semifer.data.prepare import prepare

    dc = DataConfig(train="synthetic:?n=120", size=32, labels_per_class=4,
                    cache_dir=str(tmp_path_factory.mktemp("cache")))
    data = prepare(dc)
    for name in ("true_labels", "train_labels"):
        labels = getattr(data, name).copy()
        labels[data.unlabelled] = POISON
        setattr(data, name, labels)
    data.test_labels = np.full_like(data.test_labels, POISON)
    return data, dc


def _values(obj):
    """Every tensor and array reachable from a view, a batch or a state dict."""
    if isinstance(obj, dict):
        return [v for x in obj.values() for v in _values(x)]
    if isinstance(obj, (list, tuple)):
        return [v for x in obj for v in _values(x)]
    if dataclasses.is_dataclass(obj):
        return _values(dataclasses.asdict(obj))
    return [obj] if isinstance(obj, (np.ndarray, torch.Tensor)) else []


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_no_algorithm_can_reach_the_truth_of_unlabelled_images_or_the_test_set(name, poisoned):
    from semifer.engine.train import make_batch
    from semifer.models import create_model

    data, dc = poisoned
    view = data.train_view()
    for hidden in ("true_labels", "train_labels", "test_images", "test_labels", "train_ids", "test_ids"):
        assert not hasattr(view, hidden), hidden
    labels = np.full(len(data.train_labels), -1)
    labels[data.labelled] = data.train_labels[data.labelled]
    assert np.array_equal(view.labels, labels)   # the labelled items keep their labels, nothing else has one

    torch.manual_seed(0)
    model = create_model("cnn_small", 7)
    opts = {**open_options(name, model), **({"detector": "none"} if name == "facemix" else {})}
    algo = create_algorithm(name, 7, total_steps=2, num_unlabelled=len(view.images), **opts)
    algo.setup(model)
    algo.setup_data(view)
    teacher = copy.deepcopy(model) if algo.uses_teacher else None
    ui = data.unlabelled[:8] if algo.views else None
    batch = make_batch(view, data.labelled[:4], ui, algo, torch.Generator().manual_seed(0), dc, "cpu")
    assert "u_true" not in batch and batch["y"].tolist() == data.train_labels[data.labelled[:4]].tolist()
    for _ in range(2):
        algo.step(model, batch, 0, teacher=teacher)
    for value in _values(view) + _values(batch) + _values(algo.state_dict()):
        t = value.detach().cpu() if torch.is_tensor(value) else torch.from_numpy(np.array(value))
        assert not bool((t.double() == POISON).any())   # in float64: a uint8 pixel cannot wrap to -7


def test_the_engine_hands_algorithms_only_the_view(tiny, monkeypatch):
    """A real run: setup_data gets a TrainView, no batch carries a true label, and the engine
    still logs the pseudo-label accuracy it scores itself."""
    import json

    from semifer.config import load_config
    from semifer.data.prepare import TrainView
    from semifer.engine.train import train

    cls = ALGORITHMS.get("fixmatch")
    seen = {"views": [], "keys": set()}
    setup_data, step = cls.setup_data, cls.step

    def spy_setup(self, data):
        seen["views"].append(type(data))
        return setup_data(self, data)

    def spy_step(self, model, batch, step_, teacher=None):
        seen["keys"] |= set(batch)
        return step(self, model, batch, step_, teacher)

    monkeypatch.setattr(cls, "setup_data", spy_setup)
    monkeypatch.setattr(cls, "step", spy_step)
    cfg = load_config(None, tiny + ["algorithm.name=fixmatch", "algorithm.tau=0.0", "train.iterations=2"])
    train(cfg)
    assert seen["views"] == [TrainView]
    assert seen["keys"] == {"x", "y", "x_idx", "u_w", "u_s", "u_idx"}
    logged = [json.loads(line) for line in open(f"{cfg.out}/metrics.jsonl")]
    assert {"mask", "pl_acc", "pl_acc_all", "pl_count"} <= set(logged[0])


def test_engine_scores_by_hand():
    from semifer.algorithms.base import StepOutput
    from semifer.engine.diagnostics import step_scores

    truth = torch.tensor([0, 0, 2, 1])
    out = StepOutput(torch.tensor(0.0), pseudo_labels=torch.tensor([0, 1, 2, 1]), mask=torch.tensor([1.0, 0, 1, 0]),
                     levels={"text": (torch.tensor([1, 0, 2, 2]), torch.tensor([True, True, False, False]))},
                     negatives=torch.tensor([[0, 1, 1], [0, 1, 0], [0, 0, 0], [1, 1, 0]], dtype=torch.bool))
    scores = step_scores(out, truth)
    # pseudo-labels right on 0, 2, 3 of 4; used (mask) on 0 and 2, both right
    assert scores["pl_acc_all"] == 0.75 and scores["pl_acc"] == 1.0 and scores["mask"] == 0.5
    # the text level is right on 1 and 2; masked on 0 and 1, of which 1 is right
    assert scores["pl_acc_text"] == 0.5 and scores["pl_acc_text_masked"] == 0.5 and scores["mask_text"] == 0.5
    # 5 complementary labels, of which one is a true class (image 3: class 1)
    assert scores["snl_wrong"] == 1 and scores["snl_precision"] == pytest.approx(0.8)
    assert list(scores) == ["pl_acc_text", "pl_acc_text_masked", "mask_text", "snl_wrong", "snl_precision",
                            "mask", "pl_acc_all", "pl_acc"]   # the order they are logged in


def test_teacher_flip_averages_the_pseudo_label_probabilities_of_image_and_mirror():
    from semifer.algorithms.common import teacher_probs

    class LeftRight(nn.Module):  # logits (left mean - right mean, 0): the mirror flips the sign
        def forward(self, x):
            w = x.shape[-1]
            d = x[..., : w // 2].mean((1, 2, 3)) - x[..., w // 2:].mean((1, 2, 3))
            return None, torch.stack([d, torch.zeros_like(d)], 1)

    x = torch.zeros(1, 1, 2, 2)
    x[..., 0] = 1.0                                         # left mean 1, right mean 0
    plain = teacher_probs(LeftRight(), x)
    assert plain[0, 0].item() == pytest.approx(math.exp(1) / (math.exp(1) + 1))
    both = teacher_probs(LeftRight(), x, flip=True)         # (softmax(1, 0) + softmax(-1, 0)) / 2
    assert both[0].tolist() == pytest.approx([0.5, 0.5])
    batch = {"x": x, "y": torch.tensor([0]), "u_w": x, "u_s": x}
    masks = [create_algorithm("ema_teacher", 2, 10, 4, teacher_flip=flip, tau=0.6)
             .step(LeftRight(), batch, 0, teacher=LeftRight()).mask.tolist() for flip in (False, True)]
    assert masks == [[1.0], [0.0]]                          # 0.73 > 0.6, the mirrored 0.5 is not
