"""semifer.models: every registered model (as timm's tests run every registered one) for shapes,
gradients, a learning step and pretrained weights; checkpoint loading and name errors."""
import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from semifer.models import FERClassifier, create_model, list_models, takes_img_size

REGISTERED = list_models()
NAMES = REGISTERED + ["resnet18", "convnext_atto"]  # the last two go through timm.create_model
NUM_CLASSES = 7
# Options that shrink a registered model for CPU tests (same code, fewer and narrower blocks).
SMALL = {"openclip_vit_b16": dict(layers=2, width=64, head_width=32, patch_size=16, embed_dim=32)}


def _batch(n=4, in_chans=1, size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, in_chans, size, size, generator=g), torch.arange(n) % NUM_CLASSES


def _build(name, size=48, **kw):
    """``name`` built for ``size`` px inputs; a model whose optional package is missing skips."""
    if takes_img_size(name):
        kw.setdefault("img_size", size)
    try:
        return create_model(name, NUM_CLASSES, **SMALL.get(name, {}), **kw)
    except ImportError as e:
        pytest.skip(f"{name}: {e}")


def _small(name):
    """Build for 32 px inputs: the learning tests need a few backward passes, kept cheap on CPU."""
    return _build(name, size=32)


def _first_conv_weight(model: nn.Module) -> torch.Tensor:
    # Registration order puts the stem (conv1 / patch_embed.proj / stem.0) first among 4-D weights.
    return next(p for p in model.parameters() if p.ndim == 4)


def test_the_documented_models_are_registered():
    assert {"cnn_small", "cnn_fer", "resnet18_small", "wrn28_2", "vit_tiny_p8", "vit_tiny_c8", "vit_small_p8"} <= set(REGISTERED)


@pytest.mark.parametrize("name", REGISTERED)
def test_img_size_is_taken_exactly_by_the_models_registered_so(name):
    if takes_img_size(name):
        model = _build(name, size=32)
        with torch.no_grad():
            assert model(_batch(1, model.in_chans, size=32)[0])[1].shape == (1, NUM_CLASSES)
    else:
        with pytest.raises(TypeError, match="img_size"):
            create_model(name, NUM_CLASSES, img_size=32)


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_shapes(name, in_chans):
    model = _build(name, in_chans=in_chans).eval()
    assert isinstance(model, FERClassifier)
    assert (model.num_classes, model.in_chans, model.input_info["in_chans"]) == (NUM_CLASSES, in_chans, in_chans)
    x, _ = _batch(2, in_chans)
    with torch.no_grad():
        feat, logits = model(x)
        fmap = model.forward_features(x)
        assert torch.equal(model.pool(fmap), feat)
    assert feat.shape == (2, model.num_features)
    assert logits.shape == (2, NUM_CLASSES)
    # CNNs keep the map [B, C, h, w]; ViTs give tokens [B, N, D] (open_clip's tower its pooled [B, D])
    assert fmap.ndim in ((2, 3) if takes_img_size(name) else (4,))


def test_small_stem_keeps_resolution_at_112():
    model = create_model("resnet18_small", NUM_CLASSES).eval()
    with torch.no_grad():
        assert model.forward_features(torch.zeros(1, 1, 112, 112)).shape == (1, 512, 14, 14)
        assert model.forward_features(torch.zeros(1, 1, 48, 48)).shape == (1, 512, 6, 6)
    assert model.input_info["img_size"] is None


def test_vit_img_size_passes_through():
    model = create_model("vit_small_p8", NUM_CLASSES, img_size=112).eval()
    assert model.input_info == dict(in_chans=1, img_size=(112, 112))
    with torch.no_grad():
        feat, logits = model(torch.zeros(2, 1, 112, 112))
        assert model.forward_features(torch.zeros(1, 1, 112, 112)).shape == (1, 14 * 14 + 1, 384)
    assert feat.shape == (2, 384) and logits.shape == (2, NUM_CLASSES)


def test_timm_vit_pools_tokens():
    model = create_model("vit_tiny_patch16_224", NUM_CLASSES, in_chans=3, img_size=48).eval()
    assert model.input_info == dict(in_chans=3, img_size=(48, 48))
    with torch.no_grad():
        tokens = model.forward_features(torch.zeros(2, 3, 48, 48))
        feat, logits = model(torch.zeros(2, 3, 48, 48))
    assert tokens.shape == (2, 9 + 1, 192)
    assert feat.shape == (2, 192) and logits.shape == (2, NUM_CLASSES)


def test_none_kwargs_are_dropped():
    vit = create_model("vit_small_p8", NUM_CLASSES, img_size=None, depth=None)
    assert vit.input_info["img_size"] == (48, 48) and len(vit.backbone.blocks) == 6
    assert create_model("resnet18", NUM_CLASSES, img_size=None).num_features == 512


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_head_and_stem(name):
    model = _small(name).train()
    x, y = _batch(size=32)
    F.cross_entropy(model(x)[1], y).backward()
    for p in (model.head.weight, _first_conv_weight(model.backbone)):
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("name", REGISTERED)
def test_train_steps_lower_the_loss(name):
    torch.manual_seed(0)
    model = _small(name).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)  # 1e-3 overshoots on the ViT
    x, y = _batch(8, size=32)
    losses = []
    for _ in range(5):  # a conv-stem ViT's loss may rise at Adam's second step before it falls
        loss = F.cross_entropy(model(x)[1], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_neck_sits_between_features_and_pool():
    model = create_model("wrn28_2", NUM_CLASSES).eval()

    class Zero(nn.Module):
        def forward(self, x):
            return torch.zeros_like(x)

    model.neck = Zero()
    with torch.no_grad():
        feat, logits = model(_batch(2)[0])
    assert torch.equal(feat, torch.zeros_like(feat))
    assert torch.allclose(logits, model.head.bias.expand_as(logits))


def _trained_source(name, **kwargs):
    model = create_model(name, NUM_CLASSES, **kwargs).train()
    with torch.no_grad():  # moves BN running stats off their defaults so buffers are checked too
        model(_batch(8, kwargs.get("in_chans", 1), seed=1)[0])
    return model.eval()


def test_checkpoint_safetensors_restores_outputs(tmp_path):
    src = _trained_source("resnet18_small")
    path = tmp_path / "backbone.safetensors"
    save_file(src.backbone.state_dict(), str(path))
    dst = create_model("resnet18_small", 3, checkpoint_path=path).eval()
    report = dst.checkpoint_report
    assert sorted(report["loaded"]) == sorted(src.backbone.state_dict())
    assert report["missing"] == [] and report["unexpected"] == []
    x = _batch(2)[0]
    with torch.no_grad():
        assert torch.equal(dst(x)[0], src(x)[0])


def test_checkpoint_torch_file_with_whole_classifier(tmp_path):
    src = _trained_source("wrn28_2")
    state = src.state_dict()
    state["backbone.extra.weight"] = torch.zeros(1)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": state, "epoch": 3}, path)
    dst = create_model("wrn28_2", NUM_CLASSES, checkpoint_path=path).eval()
    report = dst.checkpoint_report
    assert report["missing"] == []
    assert sorted(report["unexpected"]) == ["extra.weight", "head.bias", "head.weight"]
    assert len(report["loaded"]) == len(src.backbone.state_dict())
    x = _batch(2)[0]
    with torch.no_grad():
        assert torch.equal(dst(x)[0], src(x)[0])


def test_checkpoint_shape_mismatch_names_key(tmp_path):
    path = tmp_path / "rgb.safetensors"
    save_file(create_model("wrn28_2", NUM_CLASSES, in_chans=3).backbone.state_dict(), str(path))
    with pytest.raises(ValueError, match=r"'conv1.weight' has shape \(16, 3, 3, 3\).*\(16, 1, 3, 3\)"):
        create_model("wrn28_2", NUM_CLASSES, in_chans=1, checkpoint_path=path)


def test_unknown_name_points_to_listings():
    with pytest.raises(ValueError, match="no_such_net") as err:
        create_model("no_such_net", NUM_CLASSES)
    assert "semifer list models" in str(err.value) and "timm.list_models()" in str(err.value)


@pytest.mark.parametrize("name", REGISTERED)
def test_pretrained_is_refused_or_asked_of_timm(name, monkeypatch):
    """``pretrained=True`` never trains from scratch silently: a model without published weights
    refuses it (naming checkpoint_path), one built on a timm architecture asks timm for them. timm
    is stubbed to build without weights, so the test needs no network."""
    asked, create = [], timm.create_model

    def offline(arch, pretrained=False, **kw):
        asked.append((arch, pretrained))
        return create(arch, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    try:
        _build(name, pretrained=True)
    except ValueError as e:
        assert "checkpoint_path" in str(e) and not asked
    else:
        assert asked and all(p for _, p in asked)
