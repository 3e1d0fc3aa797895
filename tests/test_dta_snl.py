"""DTA + SNL and the backbone add-ons: thresholds, complementary labels and the negative loss
against hand arithmetic; a property of the complementary labels; add-on shapes and train/eval
behaviour on CNN maps and ViT tokens; gradients of the negative term; state round trip; DDP
thresholds identical on every rank; a short engine run that reloads."""
import json
import math

import pytest
import torch
import torch.nn as nn

from semifer.algorithms import create_algorithm
from semifer.algorithms.dta_snl import (complementary_mask, correct_class_confidence, labelled_confidence_thresholds,
                                        negative_loss, self_adaptive_thresholds)
from semifer.engine.diagnostics import step_scores
from semifer.models import create_model
from semifer.models.addons import (FeatureMapDropout, LocalAttention, attach_addons, region_index,
                                   split_addon_options)

torch.set_num_threads(1)
E = math.e
K = 3


class RowLogits(nn.Module):
    """Logits = input rows x ``scale``: every number in a test is written by hand."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale))

    def forward(self, x):
        return x, x * self.scale


def rows(*r):
    return torch.tensor(r, dtype=torch.float32)


def softmax(row):
    z = sum(math.exp(v) for v in row)
    return [math.exp(v) / z for v in row]


def close(a, b, tol=1e-5):
    return abs(float(torch.as_tensor(a).detach()) - float(b)) < tol


# ---- pure functions ------------------------------------------------------------------------

def test_self_adaptive_thresholds_maxnorm_and_clip():
    got = self_adaptive_thresholds(torch.tensor(0.8), torch.tensor([0.5, 0.25, 0.25]))
    assert torch.allclose(got, torch.tensor([0.8, 0.4, 0.4]))
    got = self_adaptive_thresholds(torch.tensor(0.8), torch.tensor([0.5, 0.25, 0.25]), tau_min=0.5, tau_max=0.7)
    assert torch.allclose(got, torch.tensor([0.7, 0.5, 0.5]))


def test_labelled_confidence_statistics_and_ema():
    probs = rows([0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.4, 0.1, 0.5])
    labels = torch.tensor([0, 0, 1, 1])           # the last is wrong (predicted 2)
    conf_sum, count = correct_class_confidence(probs, labels)
    assert torch.allclose(conf_sum, torch.tensor([1.3, 0.5, 0.0])) and count.tolist() == [2.0, 1.0, 0.0]
    new = labelled_confidence_thresholds(torch.tensor([0.5, 0.5, 0.5]), conf_sum, count, momentum=0.9)
    # class 2 had no correct sample: it keeps its threshold
    assert torch.allclose(new, torch.tensor([0.9 * 0.5 + 0.1 * 0.65, 0.9 * 0.5 + 0.1 * 0.5, 0.5]))


def test_complementary_mask_threshold_and_topk():
    q = rows([0.90, 0.06, 0.04], [0.50, 0.30, 0.20], [0.02, 0.01, 0.97])
    assert complementary_mask(q, 0.05).tolist() == [[False, False, True], [False, False, False], [True, True, False]]
    assert complementary_mask(q, mode="topk", k=1).tolist() == [[False, False, True], [False, False, True],
                                                                [False, True, False]]
    assert complementary_mask(q, mode="topk", k=2).tolist() == [[False, True, True], [False, True, True],
                                                                [True, True, False]]


def test_negative_loss_by_hand():
    p = rows([0.7, 0.2, 0.1], [0.1, 0.1, 0.8])
    mask = torch.tensor([[False, True, True], [False, False, False]])
    assert close(negative_loss(p, mask), (-math.log(0.8) - math.log(0.9)) / 2)
    mask = torch.tensor([[False, True, False], [False, False, True]])
    assert close(negative_loss(p, mask), (-math.log(0.8) - math.log(0.2)) / 2)
    assert float(negative_loss(p, torch.zeros(2, 3, dtype=torch.bool))) == 0.0
    assert close(negative_loss(rows([1.0, 0.0]), torch.tensor([[True, False]])), -math.log(1e-5), tol=1e-3)


def test_complementary_labels_never_hold_a_confident_true_class():
    """threshold mode: p_true >= tau_neg => the true class is never complementary; topk mode: if
    at least k classes have q_c < q_true, the true class is not among the k least likely."""
    g = torch.Generator().manual_seed(0)
    for trial in range(300):
        b, k_cls = 16, int(torch.randint(2, 9, (1,), generator=g))
        temp = float(torch.rand(1, generator=g)) * 8 + 0.1
        q = (torch.randn(b, k_cls, generator=g) * temp).softmax(-1)
        truth = torch.randint(0, k_cls, (b,), generator=g)
        q_true = q.gather(1, truth[:, None]).squeeze(1)
        tau_neg = float(torch.rand(1, generator=g)) * 0.2
        picked = complementary_mask(q, tau_neg).gather(1, truth[:, None]).squeeze(1)
        assert not picked[q_true >= tau_neg].any(), trial
        k = int(torch.randint(1, k_cls, (1,), generator=g))
        picked = complementary_mask(q, mode="topk", k=k).gather(1, truth[:, None]).squeeze(1)
        lower = (q < q_true[:, None]).sum(1)
        assert not picked[lower >= k].any(), trial


# ---- the algorithm on hand-made batches ------------------------------------------------------

def _batch():
    return {"x": rows([1, 0, 0]), "y": torch.tensor([0]),
            "u_w": rows([6, 0, 0], [0.5, 0, 0]),     # teacher confidences 0.995 and 0.452
            "u_s": rows([1, 0, 0], [0, 0, 1])}


TRUTH = torch.tensor([0, 2])  # of the unlabelled batch: the engine's, never in the batch


def test_self_adaptive_step_by_hand():
    algo = create_algorithm("dta_snl", K, momentum=0.5, tau_neg=0.3)
    assert algo.uses_teacher and algo.teacher_momentum == 0.999
    out = algo.step(RowLogits(), _batch(), step=0, teacher=RowLogits())
    q1, q2 = softmax([6, 0, 0]), softmax([0.5, 0, 0])
    tau_g = 0.5 / 3 + 0.5 * (q1[0] + q2[0]) / 2
    p = [0.5 / 3 + 0.5 * (q1[c] + q2[c]) / 2 for c in range(K)]
    thresholds = [pc / max(p) * tau_g for pc in p]
    assert close(algo.tau_global, tau_g) and torch.allclose(algo.p_model, torch.tensor(p))
    assert torch.allclose(algo.thresholds, torch.tensor(thresholds))
    assert all(close(out.logs[f"tau/{c}"], thresholds[c]) for c in range(K))
    assert q1[0] >= thresholds[0] > q2[0] and out.mask.tolist() == [1.0, 0.0]
    # the second image is below its threshold: classes 1 and 2 (q = 0.274 < 0.3) are negative
    assert out.negatives.tolist() == [[False, False, False], [False, True, True]]
    assert (out.logs["snl_samples"], out.logs["snl_labels"]) == (1, 2)
    scores = step_scores(out, TRUTH)               # the engine scores them against the truth
    assert scores["snl_wrong"] == 1 and close(scores["snl_precision"], 0.5)   # class 2 is its true class
    loss_x = -math.log(E / (E + 2))
    loss_pos = -math.log(E / (E + 2)) / 2
    loss_neg = (-math.log(1 - 1 / (E + 2)) - math.log(1 - E / (E + 2))) / 2
    assert close(out.logs["loss_u"], loss_pos) and close(out.logs["loss_neg"], loss_neg)
    assert close(out.loss, loss_x + loss_pos + loss_neg)

    weighted = create_algorithm("dta_snl", K, momentum=0.5, tau_neg=0.3, lambda_u=2.0, lambda_n=0.5,
                                tau_min=0.6, tau_max=0.9)
    out = weighted.step(RowLogits(), _batch(), step=0, teacher=RowLogits())
    assert torch.allclose(weighted.thresholds, torch.tensor(thresholds).clamp(0.6, 0.9))
    assert close(out.loss, loss_x + 2.0 * loss_pos + 0.5 * loss_neg)


def test_labelled_step_by_hand():
    algo = create_algorithm("dta_snl", K, dta="labelled", momentum=0.5)
    batch = dict(_batch(), x=rows([2, 0, 0], [0, 1, 0], [1, 0, 0]), y=torch.tensor([0, 1, 1]))
    out = algo.step(RowLogits(), batch, step=0, teacher=RowLogits())
    c0, c1 = E**2 / (E**2 + 2), E / (E + 2)        # correct: image 0 (class 0), image 1 (class 1)
    expected = [0.5 / 3 + 0.5 * c0, 0.5 / 3 + 0.5 * c1, 1 / 3]   # class 2: no correct sample, stays 1/K
    assert torch.allclose(algo.class_conf, torch.tensor(expected))
    assert torch.allclose(algo.thresholds, torch.tensor(expected))
    assert out.mask.tolist() == [1.0, 0.0]         # 0.452 < tau(0) = 0.560
    assert out.logs["snl_labels"] == 0                                    # no teacher prob < 0.05
    assert step_scores(out, TRUTH)["snl_precision"] == 1                  # no label: precision 1

    fixed = create_algorithm("dta_snl", K, dta="fixed", tau=0.5, snl=False)
    out = fixed.step(RowLogits(), _batch(), step=0, teacher=RowLogits())
    assert fixed.thresholds.tolist() == [0.5] * K and out.mask.tolist() == [1.0, 0.0]
    assert "loss_neg" not in out.logs and out.negatives is None
    assert close(out.loss, -math.log(E / (E + 2)) * 1.5)


def test_bad_options_are_errors():
    for opts, word in [({"dta": "flex"}, "dta"), ({"snl_mode": "random"}, "snl_mode"), ({"snl_k": 3}, "snl_k"),
                       ({"tau_negative": 0.1}, "tau_negative")]:
        with pytest.raises(ValueError, match=word):
            create_algorithm("dta_snl", K, **opts)
    with pytest.raises(ValueError, match="teacher"):
        create_algorithm("dta_snl", K).step(RowLogits(), _batch(), step=0, teacher=None)


@pytest.mark.parametrize("dta", ["self_adaptive", "labelled", "fixed"])
def test_threshold_state_round_trip(dta):
    algo = create_algorithm("dta_snl", K, dta=dta, momentum=0.5)
    batch = dict(_batch(), x=rows([2, 0, 0], [0, 1, 0]), y=torch.tensor([0, 1]))
    algo.step(RowLogits(), batch, step=0, teacher=RowLogits())
    state = algo.state_dict()
    assert "thresholds" in state
    copy = create_algorithm("dta_snl", K, dta=dta, momentum=0.5)
    copy.load_state_dict(state)
    for key, value in state.items():
        assert torch.equal(copy.state_dict()[key], value), key
    a = algo.step(RowLogits(), batch, step=1, teacher=RowLogits())
    b = copy.step(RowLogits(), batch, step=1, teacher=RowLogits())
    assert torch.allclose(a.loss, b.loss) and torch.equal(algo.thresholds, copy.thresholds)


# ---- add-ons -------------------------------------------------------------------------------

def test_region_index_partitions_any_map():
    assert region_index(3, 3, (2, 2)).view(3, 3).tolist() == [[0, 0, 1], [0, 0, 1], [2, 2, 3]]
    assert region_index(2, 4, (2, 2)).view(2, 4).tolist() == [[0, 0, 1, 1], [2, 2, 3, 3]]


def test_addon_shapes_on_cnn_map_and_vit_tokens():
    x = torch.randn(2, 16, 6, 6)
    assert LocalAttention(16, (2, 2), reduction=4)(x).shape == x.shape
    tokens = torch.randn(2, 1 + 16, 16)            # class token + a 4x4 patch grid
    att = LocalAttention(16, (2, 2), reduction=4, num_prefix_tokens=1)
    out = att(tokens)
    assert out.shape == tokens.shape and torch.equal(out[:, 0], tokens[:, 0])
    drop = FeatureMapDropout(0.5, "channel", num_prefix_tokens=1).train()
    out = drop(tokens)
    assert out.shape == tokens.shape and torch.equal(out[:, 0], tokens[:, 0])
    with pytest.raises(ValueError, match="square"):
        att(torch.randn(2, 1 + 15, 16))


def test_local_attention_reweights_regions():
    att = LocalAttention(4, (2, 2), reduction=1)
    x = torch.rand(1, 4, 4, 4) + 0.1
    with torch.no_grad():
        ratio = att(x) / x                          # 1 + w_r, constant within each region
    for r0, c0 in [(0, 0), (0, 2), (2, 0), (2, 2)]:
        block = ratio[0, :, r0:r0 + 2, c0:c0 + 2]
        assert torch.allclose(block, block.flatten()[0].expand_as(block))
        assert 1.0 < float(block.flatten()[0]) < 2.0


@pytest.mark.parametrize("mode", ["region", "channel"])
def test_feature_dropout_active_in_train_only(mode):
    drop = FeatureMapDropout(0.5, mode, (2, 2))
    x = torch.ones(64, 8, 4, 4)
    assert torch.equal(drop.eval()(x), x)
    out = drop.train()(x)
    assert set(out.unique().tolist()) == {0.0, 2.0}           # dropped, or kept and scaled by 1 / (1 - p)
    if mode == "region":   # one decision per region: each 2x2 block is uniform across channels
        assert torch.equal(out[:, :, :2, :2].amin((1, 2, 3)), out[:, :, :2, :2].amax((1, 2, 3)))
    else:                  # one decision per channel
        assert torch.equal(out.amin((2, 3)), out.amax((2, 3)))
    assert 0.3 < float((out == 0).float().mean()) < 0.7
    with pytest.raises(ValueError, match="mode"):
        FeatureMapDropout(0.1, "pixel")


@pytest.mark.parametrize("name,opts", [("cnn_small", {}), ("vit_small_p8", {"img_size": 32, "global_pool": "avg"})])
def test_full_model_with_addons_forward_backward(name, opts):
    addon, rest = split_addon_options({"local_attention": True, "feature_dropout": 0.1, "addon_grid": [2, 2], **opts})
    assert rest == opts and addon["grid"] == [2, 2]
    model = attach_addons(create_model(name, 7, **rest), **addon).train()
    assert [type(m) for m in model.neck] == [LocalAttention, FeatureMapDropout]
    feat, logits = model(torch.randn(2, 1, 32, 32))
    assert feat.shape == (2, model.num_features) and logits.shape == (2, 7)
    logits.sum().backward()
    assert model.neck[0].mlp[0].weight.grad.abs().sum() > 0
    assert next(model.backbone.parameters()).grad is not None


def test_addons_refuse_a_class_token_pooled_vit():
    with pytest.raises(ValueError, match="global_pool=avg"):
        attach_addons(create_model("vit_small_p8", 7, img_size=32), local_attention=True)
    model = create_model("vit_small_p8", 7, img_size=32)
    assert isinstance(attach_addons(model).neck, nn.Identity)    # nothing asked: nothing changes


# ---- on a real model -----------------------------------------------------------------------

def test_negative_term_alone_has_gradient():
    from timm.utils import ModelEmaV3

    torch.manual_seed(0)
    model = attach_addons(create_model("cnn_small", 7), local_attention=True, feature_dropout=0.1)
    teacher = ModelEmaV3(model, decay=0.99).module
    algo = create_algorithm("dta_snl", 7, dta="fixed", tau=1.0, snl_mode="topk", snl_k=2)
    g = torch.Generator().manual_seed(1)
    batch = {"x": torch.randn(4, 1, 32, 32, generator=g), "y": torch.tensor([0, 1, 2, 3]),
             "u_w": torch.randn(6, 1, 32, 32, generator=g), "u_s": torch.randn(6, 1, 32, 32, generator=g)}
    out = algo.step(model, batch, 0, teacher=teacher)
    assert out.mask.sum() == 0 and out.logs["snl_samples"] == 6 and out.logs["snl_labels"] == 12
    assert "snl_precision" not in out.logs                    # the algorithm has no truth to score against
    grads = torch.autograd.grad(out.logs["loss_neg"], list(model.parameters()), allow_unused=True)
    assert any(gr is not None and gr.abs().sum() > 0 for gr in grads)


def test_engine_trains_and_reloads(tiny, tmp_path):
    from semifer.config import load_config
    from semifer.models.io import load_model
    from semifer.engine.train import train

    summary = train(load_config(None, tiny + [
        "algorithm.name=dta_snl", "algorithm.teacher_momentum=0.99", "data.sampler=balanced",
        "model.options.local_attention=true", "model.options.feature_dropout=0.1"]))
    assert 0.0 <= summary["accuracy"] <= 1.0
    run = tmp_path / "run"
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_logs = [rec for rec in logged if "loss" in rec]
    assert all(k in train_logs[-1] for k in ("tau_mean", "tau/0", "snl_labels", "snl_precision", "loss_neg"))
    model, meta = load_model(str(run))
    assert meta["model_options"]["local_attention"] is True
    assert [type(m) for m in model.neck] == [LocalAttention, FeatureMapDropout]
    with torch.no_grad():
        _, logits = model(torch.zeros(2, meta["in_chans"], meta["size"], meta["size"]))
    assert logits.shape == (2, 7)


# ---- DDP: thresholds identical on every rank -------------------------------------------------

def _rank_batches(rank: int) -> list[dict]:
    out = []
    for step in range(2):
        g = torch.Generator().manual_seed(10 * rank + step)
        out.append({"x": torch.randn(4, K, generator=g) * 2, "y": torch.randint(0, K, (4,), generator=g),
                    "u_w": torch.randn(4, K, generator=g) * 3, "u_s": torch.randn(4, K, generator=g)})
    return out


def _run(dta: str, batches: list[dict]) -> dict:
    algo = create_algorithm("dta_snl", K, dta=dta, momentum=0.5)
    for step, batch in enumerate(batches):
        algo.step(RowLogits(), batch, step, teacher=RowLogits())
        algo.sync()
    return {k: v.clone() for k, v in algo.state_dict().items()}


def _rank_states(rank: int) -> dict:
    return {dta: _run(dta, _rank_batches(rank)) for dta in ("self_adaptive", "labelled")}


def test_ddp_thresholds_identical_across_ranks(on_ranks):
    r0, r1 = on_ranks(_rank_states)
    joint = [{k: torch.cat([a[k], b[k]]) for k in a} for a, b in zip(_rank_batches(0), _rank_batches(1))]
    for dta in ("self_adaptive", "labelled"):
        single = _run(dta, joint)   # one process seeing both ranks' batches
        for key in r0[dta]:
            assert torch.allclose(r0[dta][key], r1[dta][key]), (dta, key)
            # means of equal-size rank means, and ratios of mean sums to mean counts, are joint
            assert torch.allclose(r0[dta][key], single[key], atol=1e-6), (dta, key)
