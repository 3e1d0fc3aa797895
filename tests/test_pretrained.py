"""Published encoders: an MAE / SSFER ViT checkpoint and an open_clip image tower, each saved with
random weights in exactly the format its authors publish, then loaded as a semifer backbone."""
import argparse

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from semifer.models import create_model

TINY = dict(embed_dim=32, depth=2, num_heads=2)


def mae_checkpoint(path, img_size=32, in_chans=3):
    """MAE's ``misc.save_model`` layout: {"model", "optimizer", "epoch", "scaler", "args"}; the
    encoder keys are timm's, then the decoder and the mask token of the pre-training model."""
    torch.manual_seed(0)
    enc = VisionTransformer(img_size=img_size, patch_size=16, in_chans=in_chans, num_classes=0, **TINY)
    state = dict(enc.state_dict())
    grid = (img_size // 16) ** 2
    state.update({
        "mask_token": torch.randn(1, 1, 16),
        "decoder_embed.weight": torch.randn(16, 32), "decoder_embed.bias": torch.randn(16),
        "decoder_pos_embed": torch.randn(1, grid + 1, 16),
        "decoder_blocks.0.norm1.weight": torch.randn(16), "decoder_norm.weight": torch.randn(16),
        "decoder_pred.weight": torch.randn(16 * 16 * in_chans, 16),
    })
    torch.save({"model": state, "optimizer": {}, "epoch": 799, "scaler": {},
                "args": argparse.Namespace(model="mae_vit_base_patch16", norm_pix_loss=True)}, path)
    return enc.eval()


def test_mae_checkpoint_loads_and_reports(tmp_path, capsys):
    path = tmp_path / "mae_pretrain_vit_base.pth"
    enc = mae_checkpoint(path)
    model = create_model("vit_base_patch16_224", 7, in_chans=3, checkpoint_path=path, img_size=32, **TINY).eval()
    report = model.checkpoint_report
    assert report["missing"] == [] and report["unexpected"] == []
    assert sorted(report["dropped"]) == sorted(["mask_token", "decoder_embed.weight", "decoder_embed.bias",
                                                "decoder_pos_embed", "decoder_blocks.0.norm1.weight",
                                                "decoder_norm.weight", "decoder_pred.weight"])
    assert len(report["loaded"]) == len(enc.state_dict())
    out = capsys.readouterr().out
    assert f"{len(report['loaded'])} tensors loaded" in out and "7 dropped: " in out
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():                                 # the same encoder, weight for weight
        assert torch.allclose(model.backbone.forward_features(x), enc.forward_features(x), atol=1e-6)


def test_mae_checkpoint_interpolates_position_embeddings(tmp_path, capsys):
    path = tmp_path / "mae.pth"
    enc = mae_checkpoint(path, img_size=32)               # 2 x 2 patch grid + the class token
    state = torch.load(path, weights_only=False)
    pos = state["model"]["pos_embed"]
    pos[0, 1:] = torch.arange(32.0)                       # each channel constant over the grid
    torch.save(state, path)
    model = create_model("vit_base_patch16_224", 7, in_chans=1, checkpoint_path=path, img_size=48, **TINY)
    assert "resampled from a 2x2 grid to 3x3" in capsys.readouterr().out
    new = model.backbone.pos_embed.detach()
    assert new.shape == (1, 1 + 9, 32)
    assert torch.equal(new[0, 0], pos[0, 0])              # class token position kept
    assert torch.allclose(new[0, 1:], torch.arange(32.0).expand(9, 32), atol=1e-4)  # constant stays constant
    # gray model: the RGB patch projection summed over its input channels
    w = enc.patch_embed.proj.weight
    assert torch.allclose(model.backbone.patch_embed.proj.weight, w.sum(1, keepdim=True))
    assert model.checkpoint_report["missing"] == []


def test_mae_shape_mismatch_still_raises(tmp_path):
    path = tmp_path / "mae.pth"
    mae_checkpoint(path)
    with pytest.raises(ValueError, match="'cls_token' has shape .1, 1, 32. but the model expects .1, 1, 48."):
        create_model("vit_base_patch16_224", 7, in_chans=3, checkpoint_path=path, img_size=32,
                     embed_dim=48, depth=2, num_heads=2)


# ---------------------------------------------------------------- open_clip

VISION = dict(layers=2, width=64, patch_size=16, head_width=32)


def clip_checkpoint(path, safetensors=False):
    """A whole tiny CLIP state dict, as ``open_clip_pytorch_model.bin`` (torch.save of the state
    dict) or ``open_clip_model.safetensors`` hold it; the image tower's keys start with visual."""
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    clip = open_clip.model.CLIP(embed_dim=32, vision_cfg=dict(image_size=32, **VISION),
                                text_cfg=dict(context_length=8, vocab_size=100, width=32, heads=2, layers=1))
    if safetensors:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    else:
        torch.save(clip.state_dict(), path)
    return clip.eval()


@pytest.mark.parametrize("name", ["open_clip_pytorch_model.bin", "open_clip_model.safetensors"])
def test_openclip_image_tower_loads(tmp_path, name, capsys):
    path = tmp_path / name
    clip = clip_checkpoint(path, safetensors=name.endswith("safetensors"))
    model = create_model("openclip_vit_b16", 7, in_chans=3, checkpoint_path=path, img_size=32,
                         embed_dim=32, **VISION).eval()
    report = model.checkpoint_report
    assert report["missing"] == [] and report["unexpected"] == []
    assert len(report["loaded"]) == len(clip.visual.state_dict())
    assert "token_embedding.weight" in report["dropped"] and "logit_scale" in report["dropped"]
    assert "dropped" in capsys.readouterr().out
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feat, logits = model(x)
        assert torch.allclose(feat, clip.encode_image(x), atol=1e-5)  # CLIP's image embedding
    assert feat.shape == (2, 32) and logits.shape == (2, 7) and model.num_features == 32


def test_openclip_resizes_positions_and_takes_gray(tmp_path, capsys):
    path = tmp_path / "open_clip_pytorch_model.bin"
    clip_checkpoint(path)
    model = create_model("openclip_vit_b16", 3, in_chans=1, checkpoint_path=path, img_size=48,
                         embed_dim=32, **VISION, project=False)
    assert "resized from (5, 64) to (10, 64)" in capsys.readouterr().out
    assert "visual.proj" in model.checkpoint_report["dropped"] and model.num_features == 64
    feat, logits = model(torch.randn(2, 1, 48, 48))
    assert feat.shape == (2, 64) and logits.shape == (2, 3)


def test_sitfer_step_on_an_openclip_backbone(tmp_path):
    from types import SimpleNamespace

    from semifer.algorithms import create_algorithm

    pytest.importorskip("open_clip")
    model = create_model("openclip_vit_b16", 3, in_chans=3, img_size=32, embed_dim=32, **VISION)
    algo = create_algorithm("sitfer", 3, total_steps=4, text_encoder="random", text_dim=8)
    algo.setup(model)
    algo.setup_data(SimpleNamespace(classes=("neutral", "happy", "sad"), labelled=[0, 1, 2, 3]))
    batch = {"x": torch.randn(4, 3, 32, 32), "y": torch.tensor([0, 1, 2, 0]), "x_idx": torch.arange(4),
             "u_w": torch.randn(4, 3, 32, 32), "u_s": torch.randn(4, 3, 32, 32)}
    out = algo.step(model, batch, 0)
    out.loss.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert torch.isfinite(out.loss) and grads and sum(g.abs().sum() for g in grads) > 0


def test_sitfer_rafdb_recipe_uses_the_pretrained_tower():
    from semifer.config import load_config

    cfg = load_config("recipes/sitfer_rafdb.yaml")
    assert cfg.model.name == "openclip_vit_b16" and cfg.algorithm["name"] == "sitfer"
    assert cfg.algorithm["text_model"] == "ViT-B-16" and len(cfg.data.mean) == 3 == cfg.data.channels


def test_sitfer_trains_on_a_loaded_openclip_tower(tiny, tmp_path):
    """A tiny synthetic run end to end: the tower from an open_clip file, per-channel
    normalisation, the FixMatch strong preset; the saved run reloads for prediction."""
    from semifer.config import load_config
    from semifer.models.io import load_model
    from semifer.engine.train import train

    path = tmp_path / "open_clip_pytorch_model.bin"
    clip_checkpoint(path)
    cfg = load_config(None, tiny + [
        "data.channels=3", "data.mean=[0.48, 0.46, 0.41]", "data.std=[0.27, 0.26, 0.28]", "data.strong=fixmatch",
        "model.name=openclip_vit_b16", "model.options={layers: 2, width: 64, patch_size: 16, head_width: 32, "
        "embed_dim: 32}", f"model.checkpoint_path={path}", "train.iterations=2",
        "train.eval_every=2", "train.ckpt_every=2", "algorithm.name=sitfer", "algorithm.text_encoder=random",
        "algorithm.text_dim=8"])
    s = train(cfg)
    assert s["iterations"] == 2 and 0 <= s["accuracy"] <= 1
    model, meta = load_model(str(tmp_path / "run"))
    assert meta["mean"] == [0.48, 0.46, 0.41] and model.num_features == 32


def test_facemix_run_logs_kappa_of_the_views(tiny, tmp_path):
    import json

    from semifer.config import load_config
    from semifer.engine.train import train

    train(load_config(None, tiny + ["algorithm.name=facemix", "algorithm.detector=none", "data.weak=rrc",
                                     "train.iterations=2", "train.log_every=1"]))
    logs = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    steps = [r for r in logs if "kappa" in r]
    assert len(steps) == 2
    # default boxes everywhere: 0 on the stored boxes, > 0 once each view's crop / flip moves them
    assert all(r["kappa_stored"] == 0 and r["kappa"] > 0 for r in steps)
