"""SSFER: MAE (stage I), FaceMix / Mixup (stage II), and the three-stage pipeline."""
import json
import math
import os
import subprocess
import sys
import types

import pytest
import yaml
import torch
import torch.nn.functional as F

from semifer.algorithms import create_algorithm
from semifer.algorithms.facemix import box_iou, facemix_loss, image_kappa
from semifer.algorithms.mixup import mix_pairs, sample_lam, soft_ce
from semifer import checkpoint as ckpt
from semifer.models.io import init_from
from semifer.models import create_model
from semifer.ssl import pretrain as pre
from semifer.ssl.mae import MaskedAutoencoder, blank_removed, decoder_shape, patchify, random_masking, unpatchify

TINY_VIT = dict(depth=2, embed_dim=32, num_heads=2)


def _pretrain_cfg(tmp_path, out="pre", **train):
    overrides = [f"out={tmp_path / out}", "data.sources=synthetic:?n=240", "data.size=32",
                 f"data.cache_dir={tmp_path / 'cache'}", "model.name=vit_tiny_p8",
                 "model.options={depth: 2, embed_dim: 32, num_heads: 2}", "mae.decoder_dim=16",
                 "mae.decoder_depth=1", "mae.decoder_heads=2", "train.batch_size=8", "train.iterations=4",
                 "train.warmup=1", "train.log_every=2", "train.ckpt_every=2", "train.vis_every=2",
                 "train.threads=1"] + [f"train.{k}={v}" for k, v in train.items()]
    return pre.load_pretrain_config(None, overrides)


# ---------------------------------------------------------------------------- stage I


def test_patchify_roundtrip_and_masking():
    x = torch.randn(2, 3, 16, 24)
    assert patchify(x, 8).shape == (2, 6, 8 * 8 * 3)
    assert torch.equal(unpatchify(patchify(x, 8), 8, 3, 16, 24), x)
    tokens = torch.randn(3, 16, 5)
    visible, mask, restore = random_masking(tokens, 0.75)
    assert visible.shape == (3, 4, 5) and mask.shape == (3, 16)
    assert torch.equal(mask.sum(1), torch.full((3,), 12.0))
    for n in range(3):  # the visible tokens are exactly the unmasked ones, in shuffled order
        kept = tokens[n][mask[n] == 0]
        assert torch.equal(torch.sort(kept, 0).values, torch.sort(visible[n], 0).values)
    assert torch.equal(restore.argsort(1).argsort(1), restore)


def test_mae_loss_counts_masked_patches_only():
    enc = create_model("vit_tiny_p8", 7, 1, img_size=32, **TINY_VIT).backbone
    mae = MaskedAutoencoder(enc, decoder_dim=16, decoder_depth=1, decoder_heads=2, norm_pix_loss=True)
    imgs = torch.randn(2, 1, 32, 32)
    loss, pred, mask = mae(imgs)
    assert pred.shape == (2, 16, 64) and mask.sum() == 2 * 12 and torch.isfinite(loss)
    target = patchify(imgs, 8)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    perfect = target * mask[:, :, None] + 100 * (1 - mask[:, :, None])   # wrong only where visible
    assert mae.forward_loss(imgs, perfect, mask).item() == pytest.approx(0.0, abs=1e-6)
    off = target + 2 * mask[:, :, None]                                  # off by 2 where masked
    assert mae.forward_loss(imgs, off, mask).item() == pytest.approx(4.0, rel=1e-5)
    loss.backward()
    assert enc.patch_embed.proj.weight.grad.abs().sum() > 0


def test_conv_stem_vit_keeps_the_patch_grid():
    model = create_model("vit_tiny_c8", 7, 1, img_size=48, **TINY_VIT)
    stem = model.backbone.patch_embed.proj
    convs = [m for m in stem if isinstance(m, torch.nn.Conv2d)]
    # 8 px patches: three 3x3 stride-2 convolutions doubling 4 -> 8 -> 16, then 1x1 to the width 32
    assert [(c.kernel_size, c.stride, c.out_channels) for c in convs] == [
        ((3, 3), (2, 2), 4), ((3, 3), (2, 2), 8), ((3, 3), (2, 2), 16), ((1, 1), (1, 1), 32)]
    assert model.forward_features(torch.randn(2, 1, 48, 48)).shape == (2, 1 + 36, 32)
    with pytest.raises(ValueError, match="power-of-two"):
        create_model("vit_tiny_c8", 7, 1, img_size=48, patch_size=6, **TINY_VIT)


def test_mae_on_a_conv_stem_never_sees_the_removed_patches():
    # The stem's 3x3 convolutions cross patch borders; MAE blanks the removed patches' pixels
    # first, so the visible tokens' latents do not depend on what the removed patches hold.
    enc = create_model("vit_tiny_c8", 7, 1, img_size=32, **TINY_VIT).backbone
    mae = MaskedAutoencoder(enc, decoder_dim=16, decoder_depth=1, decoder_heads=2).eval()
    imgs = torch.randn(3, 1, 32, 32)
    torch.manual_seed(0)
    latent, mask, _ = mae.forward_encoder(imgs)
    assert latent.shape == (3, 1 + 4, 32) and torch.equal(mask.sum(1), torch.full((3,), 12.0))
    other = imgs + blank_removed(10 * torch.randn_like(imgs), 1 - mask, mae.grid)  # removed patches only
    assert not torch.equal(other, imgs)
    torch.manual_seed(0)
    assert torch.equal(mae.forward_encoder(other)[0], latent)
    torch.manual_seed(0)   # the patchify ViT's own path masks tokens after the embedding, as before
    loss, pred, _ = mae.train()(imgs)
    loss.backward()
    assert pred.shape == (3, 16, 64) and enc.patch_embed.proj[0].weight.grad.abs().sum() > 0


def test_blank_removed_zeroes_whole_patches():
    imgs = torch.ones(1, 1, 4, 6)
    mask = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0, 1.0]])       # a 2 x 3 grid of 2 px patches
    out = blank_removed(imgs, mask, (2, 3))
    assert out[0, 0].tolist() == [[1, 1, 0, 0, 1, 1], [1, 1, 0, 0, 1, 1],
                                  [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0]]


def test_encoder_loads_into_classifier_and_shape_mismatch_fails(tmp_path, capsys):
    # (resuming a pre-training run is tested with training's resume in test_resume.py)
    assert pre.pretrain(_pretrain_cfg(tmp_path, "enc", iterations=1, vis_every=1))["iterations"] == 1
    assert (tmp_path / "enc" / "vis" / "step_0000001.png").exists()
    err = capsys.readouterr().err  # the progress bar, as training has
    assert "pretrain: 100%" in err and "1/1" in err
    path = str(tmp_path / "enc" / "encoder.safetensors")
    assert ckpt.load_weights(path)[1]["kind"] == "mae_encoder"
    model = create_model("vit_tiny_p8", 7, 1, img_size=32, **TINY_VIT)
    head = model.head.weight.clone()
    report = init_from(model, path)
    assert report["loaded"] == sorted(model.backbone.state_dict()) and not report["missing"]
    weights, _ = ckpt.load_weights(path)
    assert torch.equal(model.backbone.pos_embed, weights["encoder.pos_embed"])
    assert torch.equal(model.head.weight, head)  # the head stays new
    # the run folder works too (its last.safetensors also holds the decoder, which is ignored)
    assert init_from(create_model("vit_tiny_p8", 7, 1, img_size=32, **TINY_VIT), str(tmp_path / "enc"))["loaded"]
    bigger = create_model("vit_tiny_p8", 7, 1, img_size=48, **TINY_VIT)  # 36 positions, not 16
    with pytest.raises(ckpt.CheckpointError, match="pos_embed"):
        init_from(bigger, path)
    # model.checkpoint_path takes the same file (it once loaded 0 of its tensors, with a warning)
    via_path = create_model("vit_tiny_p8", 7, 1, img_size=32, checkpoint_path=path, **TINY_VIT)
    assert torch.equal(via_path.backbone.pos_embed, weights["encoder.pos_embed"])
    assert len(via_path.checkpoint_report["loaded"]) == len(model.backbone.state_dict())
    with pytest.raises(ValueError, match="none of its .* tensors matches"):   # a CNN's file for a ViT
        cnn = tmp_path / "cnn.safetensors"
        from safetensors.torch import save_file
        save_file(create_model("cnn_small", 7).backbone.state_dict(), str(cnn))
        create_model("vit_tiny_p8", 7, 1, img_size=32, checkpoint_path=str(cnn), **TINY_VIT)


# ---------------------------------------------------------------------------- stage II


def test_box_iou_and_kappa_by_hand():
    a = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.2, 0.2]])
    b = torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 1.0, 1.0]])
    # overlap 0.25^2 = 0.0625, union 0.25 + 0.25 - 0.0625 = 0.4375 -> 1/7; identical -> 1; apart -> 0
    assert torch.allclose(box_iou(a, b), torch.tensor([1 / 7, 1.0, 0.0]))
    assert torch.allclose(1 - box_iou(a, b), torch.tensor([6 / 7, 0.0, 1.0]))


def test_image_kappas_by_hand():
    x_i = torch.zeros(1, 1, 4, 4)
    x_i[0, 0, 0, 0] = 1.0                     # range 1, MSE 1/16 -> PSNR 10 log10(16) = 12.04 dB
    x_j = torch.zeros(1, 1, 4, 4)
    assert image_kappa(x_i, x_j, "psnr", psnr_max=40).item() == pytest.approx(1 - 10 * math.log10(16) / 40, rel=1e-5)
    assert image_kappa(x_j + 0.5, x_j + 0.5 + 1e-9, "psnr").item() == pytest.approx(0.0, abs=1e-6)
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 1, 32, 32, generator=g)
    b = (a + 0.3 * torch.rand(2, 1, 32, 32, generator=g)).clamp(0, 1)
    a[0, 0, 0, 0], b[0, 0, 0, 0] = 0.0, 1.0  # batch range exactly [0, 1]
    ref = [structural_similarity(a[n, 0].numpy(), b[n, 0].numpy(), data_range=1.0, gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=False) for n in range(2)]
    got = 1 - image_kappa(a, b, "ssim")
    assert got.tolist() == pytest.approx(ref, abs=0.02)
    k = image_kappa(a, b, "fsim")
    assert ((k > 0) & (k < 1)).all() and image_kappa(a, a, "fsim").abs().max() < 1e-4


def test_facemix_loss_variants_by_hand():
    l_v, l_i, k = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 1.5]), torch.tensor([0.2, 0.2])
    l_j = l_i.flip(0)  # [1.5, 0.5]: L_i + L_j = 2 for both pairs
    assert facemix_loss(l_v, l_i, l_j, k, "L4").item() == pytest.approx((1.4 + 2.4) / 2)
    assert facemix_loss(l_v, l_i, l_j, k, "L1").item() == pytest.approx((2.8 + 3.6) / 2)
    assert facemix_loss(l_v, l_i, l_j, k, "L2").item() == pytest.approx((2.6 + 3.6) / 2)
    assert facemix_loss(l_v, l_i, l_j, k, "L3").item() == pytest.approx((2.2 + 2.4) / 2)
    with pytest.raises(ValueError, match="L5"):
        facemix_loss(l_v, l_i, l_j, k, "L5")


def test_mix_pairs_and_soft_ce_by_hand():
    x = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1)
    x_orig = x.clone()
    x_mix, y_mix = mix_pairs(x, torch.tensor([0, 1]), 0.25, 2, smoothing=0.1)
    assert x_mix.flatten().tolist() == pytest.approx([0.75, 0.25])
    assert torch.equal(x, x_orig)  # the originals are not mixed in place
    assert y_mix.tolist() == [pytest.approx([0.275, 0.725]), pytest.approx([0.725, 0.275])]
    assert soft_ce(torch.zeros(2, 2), y_mix).tolist() == pytest.approx([math.log(2)] * 2)


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return None, self.fc(x.flatten(1))


def test_facemix_step_equals_formula():
    torch.manual_seed(0)
    model = _Linear()
    algo = create_algorithm("facemix", 3, detector="none", label_smoothing=0.1)
    algo.boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75], [0.1, 0.1, 0.9, 0.9]])
    batch = {"x": torch.randn(3, 1, 2, 2), "y": torch.tensor([0, 2, 1]), "x_idx": torch.tensor([0, 2, 1])}
    x0 = batch["x"].clone()
    out = algo.step(model, batch, 0)
    lam = sample_lam(1.0, torch.Generator().manual_seed(0))  # the algorithm's own generator, seed 0
    assert out.logs["lam"] == pytest.approx(lam)
    x, y = x0, batch["y"]
    logits = lambda t: model.fc(t.flatten(1))  # noqa: E731
    y_t = lam * F.one_hot(y, 3).float() + (1 - lam) * F.one_hot(y.flip(0), 3).float()
    y_t = y_t * 0.9 + 0.1 / 3
    l_v = -(y_t * logits(lam * x + (1 - lam) * x.flip(0)).log_softmax(-1)).sum(-1)
    l_i = F.cross_entropy(logits(x), y, reduction="none")
    # pairs (0, 1) -> boxes 0 and 1 (IoU 1/7), (2, 2) with itself (IoU 1)
    kappa = torch.tensor([6 / 7, 0.0, 6 / 7])
    expected = (l_v + kappa * (l_i + l_i.flip(0))).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.equal(batch["x"], x0)
    out.loss.backward()
    assert model.fc.weight.grad.abs().sum() > 0


def test_facemix_kappa_on_the_boxes_of_the_views():
    # Aligned crops: every stored box is the same, so kappa on stored boxes is 0 (FaceMix = Mixup).
    # Image 1's view is shifted: x_in = x_out + 0.25 normalized, i.e. its box moves left by 0.125.
    algo = create_algorithm("facemix", 3, detector="none")
    algo.boxes = torch.tensor([[0.25, 0.25, 0.75, 0.75]]).repeat(2, 1)
    theta = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]], [[1.0, 0, 0.25], [0, 1.0, 0]]])
    idx = torch.tensor([0, 1])
    assert algo.pair_kappa(torch.zeros(2, 1, 2, 2), idx).tolist() == [0.0, 0.0]
    # box 1 in its view: (0.125, 0.25, 0.625, 0.75); intersection 0.375 x 0.5 = 0.1875,
    # union 0.25 + 0.25 - 0.1875 = 0.3125, IoU 0.6, kappa 0.4 for the pair (0, 1)
    assert algo.pair_kappa(torch.zeros(2, 1, 2, 2), idx, theta).tolist() == pytest.approx([0.4, 0.4])
    out = algo.step(_Linear(), {"x": torch.randn(2, 1, 2, 2), "y": torch.tensor([0, 1]), "x_idx": idx,
                                "x_theta": theta}, 0)
    assert out.logs["kappa"].item() == pytest.approx(0.4) and out.logs["kappa_stored"].item() == 0.0
    assert algo.view_params  # the engine is asked for x_theta


def test_facemix_engine_passes_the_view_parameters():
    import numpy as np

    from semifer.config import DataConfig
    from semifer.engine.train import _views
    from semifer.data.transforms import weak_view

    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 1), dtype=np.uint8)
    idx = np.arange(6)
    dc = DataConfig(weak="rrc")
    with_params = _views(images, idx, {"x": "weak"}, torch.Generator().manual_seed(1), dc, "cpu", params=True)
    plain = _views(images, idx, {"x": "weak"}, torch.Generator().manual_seed(1), dc, "cpu")
    assert torch.equal(with_params["x"], plain["x"]) and "x_theta" not in plain
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    _, theta = weak_view(x, torch.Generator().manual_seed(1), mode="rrc", return_params=True)
    assert torch.equal(with_params["x_theta"], theta)


def test_layer_decay_scales_each_vit_block_and_keeps_the_head_at_full_lr():
    from semifer.engine.run import layer_decay_scales, make_optimizer, make_scheduler, param_groups

    model = create_model("vit_tiny_p8", 7, 1, img_size=32, **TINY_VIT)   # 2 blocks: layers 0 (stem), 1, 2
    b, d = model.backbone, 0.5
    scales = layer_decay_scales(model, d)
    assert scales[b.pos_embed] == scales[b.patch_embed.proj.weight] == d ** 3
    assert scales[b.blocks[0].attn.qkv.weight] == d ** 2 and scales[b.blocks[1].mlp.fc1.weight] == d
    assert model.head.weight not in scales                                # outside the backbone: lr x 1
    opt = make_optimizer("adamw", param_groups([model], 0.05, lr_scales=scales), 1e-3)
    lr = {p: g["lr"] for g in opt.param_groups for p in g["params"]}
    wd = {p: g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert lr[b.pos_embed] == pytest.approx(1.25e-4) and lr[b.blocks[1].mlp.fc1.weight] == pytest.approx(5e-4)
    assert lr[model.head.weight] == 1e-3 and wd[model.head.bias] == 0 and wd[b.blocks[0].attn.qkv.weight] == 0.05
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    sched = make_scheduler(opt, iterations=10, warmup=2, lr=1e-3)         # the schedule scales every layer alike
    for _ in range(3):
        opt.step()
        sched.step()
    now = {p: g["lr"] for g in opt.param_groups for p in g["params"]}
    assert now[b.pos_embed] / now[model.head.weight] == pytest.approx(d ** 3)
    with pytest.raises(ValueError, match="group_matcher"):
        layer_decay_scales(create_model("cnn_small", 7), 0.75)


def test_mixup_trains():
    """Five Mixup steps on one fixed batch move the weights and lower the Mixup loss. lam is drawn
    anew every step, so the loss is compared at one lam: the algorithm's generator is rewound."""
    torch.manual_seed(0)
    model, algo = _Linear(), create_algorithm("mixup", 3, seed=0)
    batch = {"x": torch.randn(6, 1, 2, 2), "y": torch.tensor([0, 1, 2, 0, 1, 2])}
    w0, lam_state = model.fc.weight.detach().clone(), algo.gen.get_state()
    before = algo.step(model, batch, 0).loss.item()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(5):
        out = algo.step(model, batch, step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    algo.gen.set_state(lam_state)
    after = algo.step(model, batch, 0).loss.item()
    assert not torch.equal(model.fc.weight, w0)
    assert after < 0.8 * before  # 1.25 -> 0.85 with this seed


# ---------------------------------------------------------------------------- pipeline


def test_pipeline_end_to_end_and_resumable(tmp_path, capsys):
    from semifer.cli import main

    args = ["pipeline", "ssfer", "--data", "synthetic:?n=240&size=32", "--out", str(tmp_path / "run"),
            "data.size=32", "data.labels_per_class=6", "model.name=vit_tiny_p8",
            "model.options={depth: 2, embed_dim: 32, num_heads: 2}", f"data.cache_dir={tmp_path / 'cache'}",
            "train.threads=1", "train.batch_size=8", "train.iterations=3", "train.eval_every=3",
            "train.ckpt_every=3", "train.log_every=3", "pretrain.train.iterations=3",
            "pretrain.train.batch_size=8", "pretrain.train.vis_every=3", "pretrain.train.threads=1",
            "pretrain.mae.decoder_dim=16", "pretrain.mae.decoder_depth=1", "pretrain.mae.decoder_heads=2",
            "finetune.algorithm.detector=lbp", "semi.train.uratio=1"]
    assert main(args) == 0
    rows = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [r["stage"] for r in rows] == ["I", "II", "III"]
    assert [r["what"] for r in rows[1:]] == ["facemix", "ema_teacher"]
    assert all(0 <= r["accuracy"] <= 1 for r in rows[1:])
    out = capsys.readouterr().out
    assert "init from" in out and "II " in out
    assert list((tmp_path / "cache").glob("*.boxes-lbp.npy"))
    assert main(args) == 0  # everything finished: every stage is skipped
    assert capsys.readouterr().out.count("skipped") == 3


def test_sources_mix_specs_and_image_folders(tmp_path):
    import numpy as np
    from PIL import Image

    (tmp_path / "faces" / "sub").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((40, 50), 60 * i, np.uint8)).save(tmp_path / "faces" / "sub" / f"{i}.png")
    (tmp_path / "faces" / "notes.txt").write_text("not an image")
    dc = pre.PretrainDataConfig(sources=f"synthetic:?n=20,images:{tmp_path / 'faces'}", size=32, channels=1,
                                cache_dir=str(tmp_path / "cache"))
    arrays, report, channels = pre.open_sources(dc)
    assert channels == 1 and [r["images"] for r in report] == [20, 3]
    offsets = np.array([0, 20])
    batch = pre.gather(arrays, np.array([21, 0, 22]), offsets)
    assert batch.shape == (3, 32, 32, 1) and batch[0].max() == 60 and batch[2].min() == 120
    with pytest.raises(ValueError, match="no image files"):
        pre.open_sources(pre.PretrainDataConfig(sources=f"images:{tmp_path / 'cache'}", cache_dir=str(tmp_path)))


@pytest.mark.parametrize("recipe", ["rafdb", "ferplus", "affectnet7", "affectnet8"])
def test_ssfer_recipes_resolve_to_the_papers_settings(tmp_path, recipe):
    from semifer.ssl import pretrain as pre_module
    from semifer.ssl.pipeline import load_recipe, stage_configs

    pre, finetune, semi = stage_configs(load_recipe(f"recipes/ssfer_{recipe}.yaml", None, []), str(tmp_path))
    assert "drop_path_rate" not in pre.model.options                    # MAE pre-trains without drop path
    assert finetune.model.options["drop_path_rate"] == 0.1
    face_mean, face_std = [0.588, 0.459, 0.402], [0.228, 0.202, 0.190]  # the paper's face statistics
    for cfg in (pre, finetune, semi):
        assert cfg.data.mean == face_mean and cfg.data.std == face_std
    assert finetune.train.warmup_lr == 5e-5 and finetune.train.lr == 1e-4  # warm-up from 5e-5
    assert semi.data.strong == "timm_m9_mstd05"                         # rand-m9-mstd0.5(-inc1)
    with torch.device("meta"):                                          # ViT-B/16 shapes, no memory
        mae = pre_module.build_objective(pre, channels=3)
    assert mae.encoder.embed_dim == 768 and len(mae.encoder.blocks) == 12
    assert _decoder_of(mae) == (512, 8, 16)                             # the paper's, not the auto 512 x 6


def _decoder_of(mae) -> tuple[int, int, int]:
    return mae.decoder_embed.out_features, len(mae.decoder_blocks), mae.decoder_blocks[0].attn.num_heads


def test_mae_decoder_scales_to_the_encoder_by_default():
    """MAE's 512 x 8 decoder behind the 2.7 M ViT-Tiny held 25.4 M weights (a 332 MB checkpoint)."""
    cfg = pre.load_pretrain_config(None, ["model.name=vit_tiny_p8", "data.size=48"])  # 192 wide, 6 blocks, 3 heads
    mae = pre.build_objective(cfg, channels=1)
    assert _decoder_of(mae) == (192, 3, 3)            # its width and heads, ceil(6 / 2) blocks
    count = lambda m: sum(p.numel() for p in m.parameters())
    encoder, decoder = count(mae.encoder), count(mae) - count(mae.encoder)
    assert encoder == pytest.approx(2.69e6, rel=0.01) and 0.4 < decoder / encoder < 0.6

    def fake(width, blocks, heads):  # what decoder_shape reads of a timm ViT
        block = types.SimpleNamespace(attn=types.SimpleNamespace(num_heads=heads))
        return types.SimpleNamespace(embed_dim=width, blocks=[block] * blocks)

    assert decoder_shape(fake(1024, 24, 16)) == (512, 8, 16)  # ViT-L: MAE's own decoder
    assert decoder_shape(fake(768, 12, 12)) == (512, 6, 16)   # ViT-B: capped width, MAE's 32 per head
    assert decoder_shape(fake(384, 5, 6)) == (384, 3, 6)
    assert decoder_shape(fake(192, 6, 3), 128, 2, 4) == (128, 2, 4)  # explicit values win
    with pytest.raises(ValueError, match="width 100 is not divisible by its 16 heads"):
        decoder_shape(fake(768, 12, 12), dim=100)


def test_pipeline_keeps_an_explicit_pretrain_drop_path(tmp_path):
    from semifer.ssl.pipeline import load_recipe, stage_configs

    recipe = load_recipe(None, None, ["model.options={drop_path_rate: 0.1}",
                                      "pretrain.model.options={drop_path_rate: 0.05}"])
    pre, finetune, _ = stage_configs(recipe, str(tmp_path))
    assert pre.model.options == {"drop_path_rate": 0.05} and finetune.model.options == {"drop_path_rate": 0.1}


def test_pipeline_stage_one_follows_the_shared_run_settings(tmp_path):
    from semifer.ssl.pipeline import load_recipe, stage_configs

    recipe = tmp_path / "r.yaml"
    recipe.write_text("shared:\n  train: {amp: fast, threads: 1, seed: 3}\npretrain:\n  train: {threads: 2}\n")
    pre, finetune, semi = stage_configs(load_recipe(str(recipe), None, []), str(tmp_path))
    assert (pre.train.amp, pre.train.seed) == ("fast", 3) == (finetune.train.amp, semi.train.seed)
    assert pre.train.threads == 2 and finetune.train.threads == 1   # stage I's own setting wins
    pre, _, _ = stage_configs(load_recipe("recipes/ssfer_fer2013_cpu_hour.yaml", None, []), str(tmp_path))
    assert pre.train.amp == "fast" and pre.model.name == "vit_tiny_c8"


def test_pipeline_overrides_reach_every_stage(tmp_path):
    from semifer.config import ConfigError
    from semifer.ssl.pipeline import load_recipe, stage_configs

    recipe = "recipes/ssfer_fer2013_cpu.yaml"  # per-stage iterations 600 / 600 / 500
    pre, finetune, semi = stage_configs(load_recipe(recipe, None, ["train.iterations=30", "train.threads=2"]),
                                        str(tmp_path))
    assert [c.train.iterations for c in (pre, finetune, semi)] == [30, 30, 30]
    assert [c.train.threads for c in (pre, finetune, semi)] == [2, 2, 2]
    assert finetune.train.lr == 5e-4 and semi.train.warmup == 20  # the rest of each stage's recipe stays
    # a stage's own override wins over a plain one, whatever the order on the command line
    pre, finetune, semi = stage_configs(load_recipe(recipe, None, ["semi.train.iterations=7", "train.iterations=30",
                                                                   "pretrain.train.iterations=5"]), str(tmp_path))
    assert [c.train.iterations for c in (pre, finetune, semi)] == [5, 30, 7]
    with pytest.raises(ConfigError, match="finetune.algorithm.tau"):
        load_recipe(recipe, None, ["algorithm.tau=0.9"])


def test_pipeline_says_when_a_stage_resumes_with_other_iterations(tmp_path):
    from semifer.config import Config, save_config
    from semifer.ssl.pipeline import iterations_note

    cfg = Config()
    cfg.train.iterations = 600
    save_config(cfg, tmp_path / "config.yaml")
    assert iterations_note(str(tmp_path), 600) is None
    assert "started with train.iterations=600; it now continues to 30" in iterations_note(str(tmp_path), 30)
    (tmp_path / "summary.json").write_text("{}")
    assert "finished with train.iterations=600" in iterations_note(str(tmp_path), 30)
    assert iterations_note(str(tmp_path / "missing"), 30) is None


def _simclr_pipeline(tmp_path) -> list[str]:
    """``semifer pipeline ssfer`` arguments for a seconds-long run of all four stages, stage I by
    SimCLR on a CNN, into ``tmp_path/run``."""
    return ["pipeline", "ssfer", "--data", "synthetic:?n=240&size=32", "--out", str(tmp_path / "run"),
            "data.size=32", "data.labels_per_class=6", "model.name=cnn_small", "model.options={widths: [8, 16]}",
            f"data.cache_dir={tmp_path / 'cache'}", "train.threads=1", "train.batch_size=8",
            "train.iterations=3", "train.eval_every=3", "train.ckpt_every=3", "train.log_every=3",
            "pretrain.method=simclr", "pretrain.train.iterations=2", "pretrain.train.batch_size=16",
            "finetune.algorithm.detector=lbp", "semi.train.uratio=1", "adapt.prior=true"]


def test_pipeline_with_simclr_and_the_prior_step(tmp_path, capsys):
    """Stage I by SimCLR on a CNN, then II, III and IV: the prior is stored beside stage III's
    weights, and IV's score is the adapted model's on the test split."""
    import csv

    from semifer.cli import main

    run = tmp_path / "run"
    args = _simclr_pipeline(tmp_path) + ["semi.model.init_head=false"]
    assert main(args) == 0
    rows = json.loads((run / "summary.json").read_text())
    assert [r["stage"] for r in rows] == ["I", "II", "III", "IV"]
    assert rows[0]["what"] == "simclr cnn_small" and rows[3]["what"] == "adapt_prior"
    stored = json.loads((run / "3_ema_teacher" / "ckpt" / "last.prior.json").read_text())
    assert sum(stored["prior"]) == pytest.approx(1, abs=1e-4) and stored["num_images"] == 240 - 42
    with open(run / "4_adapt_prior" / "test_predictions.csv") as f:
        preds = list(csv.DictReader(f))
    assert rows[3]["accuracy"] == pytest.approx(sum(p["label"] == p["pred"] for p in preds) / len(preds))
    capsys.readouterr()
    assert main(["compare", str(run / "3_ema_teacher"), str(run / "4_adapt_prior")]) == 0
    out = capsys.readouterr().out
    assert "adapt_prior" in out and "4_adapt_prior: " in out and "p = " in out   # paired image by image
    semi_cfg = yaml.safe_load((run / "3_ema_teacher" / "config.yaml").read_text())
    assert semi_cfg["model"]["init_head"] is False  # the recipe's own choice wins over the default
    capsys.readouterr()
    assert main(args) == 0
    assert capsys.readouterr().out.count("skipped") == 4


def test_pipeline_adapt_section_is_checked(tmp_path):
    from semifer.config import ConfigError
    from semifer.ssl.pipeline import load_recipe, stage_configs

    assert load_recipe(None, None, [])["adapt"] == {"prior": False}
    with pytest.raises(ConfigError, match="adapt.prir: unknown key; expected one of prior"):
        load_recipe(None, None, ["adapt.prir=true"])
    with pytest.raises(ConfigError, match="adapt.prior='yes'; expected true or false"):
        load_recipe(None, None, ["adapt.prior='yes'"])
    _, _, semi = stage_configs(load_recipe(None, None, []), str(tmp_path))
    assert semi.model.init_head is True   # stage III continues stage II's classifier unless told


def test_cpu_hour_pipeline_recipe_is_the_measured_recipe(tmp_path):
    """recipes/simclr_ssfer_fer2013_cpu_hour.yaml resolves to the benchmark rows' settings (row K: SimCLR 3,000
    steps, H's stage III, at 1,500 steps since the fourteenth session)."""
    from semifer.ssl.pipeline import load_recipe, stage_configs

    recipe = load_recipe("recipes/simclr_ssfer_fer2013_cpu_hour.yaml", None, [])
    pre, finetune, semi = stage_configs(recipe, str(tmp_path))
    assert (pre.method, pre.model.name, pre.train.iterations, pre.train.batch_size) == ("simclr", "cnn_fer", 3000, 256)
    assert pre.model.options == finetune.model.options == {"widths": [24, 48, 96, 192]}
    assert pre.train.channels_last and pre.train.amp == "fast"      # the shared machine settings reach stage I
    assert finetune.algorithm == {"name": "facemix"} and finetune.train.iterations == 2000
    assert (semi.train.iterations, semi.train.uratio, semi.model.init_head) == (1500, 4, False)
    assert semi.algorithm == {"name": "ema_teacher", "tau": 0.7, "teacher_momentum": 0.99, "prior": "online"}
    assert recipe["adapt"] == {"prior": True}


def test_pipeline_under_torchrun_two_processes(tmp_path):
    """Stages I-III train on both ranks (SimCLR with the global batch), stage IV and the files are
    rank 0's: the table is printed once and summary.json lists the four stages."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29547",
           "-m", "semifer.cli"] + _simclr_pipeline(tmp_path) + ["pretrain.train.batch_size=8"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((run / "summary.json").read_text())
    assert [r["stage"] for r in rows] == ["I", "II", "III", "IV"]
    assert json.loads((run / "1_pretrain" / "summary.json").read_text())["world_size"] == 2
    assert json.loads((run / "3_ema_teacher" / "summary.json").read_text())["world_size"] == 2
    assert proc.stdout.count("stage IV:") == 1 and proc.stdout.count("adapt_prior ") == 1
