"""Grad-CAM maps of a ``FERClassifier`` (CNN or ViT), computed with pytorch-grad-cam.

Grad-CAM (Selvaraju et al. 2017): with activations A^k of a target layer and the class score
y^c, weights alpha_k^c = mean_ij dy^c/dA^k_ij and the map is ReLU(sum_k alpha_k^c A^k),
upsampled to the input and scaled to [0, 1] per image (so SSFER's "focused" region is cam > 0.3).

Target layer by default:
- CNN: ``model.neck``, whose output is the backbone's last unpooled map [B, C, h, w]
  (an identity unless a neck add-on replaced it);
- ViT (a backbone with ``blocks``): the input norm of the last block, ``blocks[-1].norm1``.
  With a class-token head only the class token of the last block's *output* is read, so the
  output patch tokens get zero gradient; the block's input tokens still feed the class token
  through attention (and an average-pooled head sees them too). Tokens
  [B, N, D] are turned into a grid [B, D, h, w] after dropping the class/register tokens.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn as nn

from semifer.data.transforms import normalize


class LogitsOnly(nn.Module):
    """pytorch-grad-cam calls ``model(x)`` and expects logits; semifer models return (feat, logits)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[1]


def is_vit(model: nn.Module) -> bool:
    return hasattr(model.backbone, "blocks") and hasattr(model.backbone, "patch_embed")


def target_layer(model: nn.Module, name: str = "") -> nn.Module:
    """The module whose output Grad-CAM weighs: ``name`` (dotted, e.g. ``backbone.stages.2``) or
    the default above."""
    if name:
        try:
            return model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"Grad-CAM layer {name!r} is not a submodule of {type(model.backbone).__name__}; "
                             f"e.g. {[n for n, _ in model.named_modules()][1:8]}") from None
    if is_vit(model):
        return model.backbone.blocks[-1].norm1
    return model.neck


def tokens_to_grid(model: nn.Module):
    """reshape_transform for ViTs: [B, N, D] tokens -> [B, D, h, w], without the prefix tokens
    (class token and registers: timm's ``num_prefix_tokens``). 4-D maps pass through."""
    bb = model.backbone
    prefix = getattr(bb, "num_prefix_tokens", 1 if getattr(bb, "cls_token", None) is not None else 0)
    grid = tuple(getattr(bb.patch_embed, "grid_size", ()) or ())

    def reshape(t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 4:
            return t
        t = t[:, prefix:]                                    # [B, h*w, D]
        h, w = grid if grid and grid[0] * grid[1] == t.shape[1] else (math.isqrt(t.shape[1]),) * 2
        if h * w != t.shape[1]:
            raise ValueError(f"cannot lay {t.shape[1]} patch tokens on a square grid")
        return t.reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)  # [B, D, h, w]

    return reshape


def grad_cam(model: nn.Module, images: np.ndarray, mean=0.5, std=0.5, targets: np.ndarray | None = None,
             layer: str = "", batch_size: int = 64,
             device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM of uint8 images [N, H, W, C] -> (cams [N, H, W] in [0, 1], logits [N, K]).

    ``targets``: the class explained per image; None explains the predicted class."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    was_training = model.training
    wrapped = LogitsOnly(model).to(device).eval()
    reshape = tokens_to_grid(model) if is_vit(model) else None
    cams, logits = [], []
    with torch.enable_grad(), GradCAM(wrapped, [target_layer(model, layer)], reshape_transform=reshape) as cam:
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).permute(0, 3, 1, 2).to(device)
            x = normalize(x, mean, std)                                       # [B, C, H, W]
            tgt = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets[i:i + batch_size]]
            cams.append(cam(x, tgt))                                          # [B, H, W]
            logits.append(cam.outputs.detach().float().cpu())
    model.train(was_training)
    return np.concatenate(cams).astype(np.float32), torch.cat(logits).numpy()


def overlay(image: np.ndarray, cam: np.ndarray, size: int = 192, alpha: float = 0.5) -> np.ndarray:
    """Image (uint8 [H, W, C]) and its map side by side, the map as a JET heatmap over the image,
    both enlarged to ``size`` px -> RGB uint8 [size, 2 * size, 3]."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    heat = cv2.resize(cam, (size, size), interpolation=cv2.INTER_LINEAR)
    over = show_cam_on_image(rgb, np.clip(heat, 0, 1), use_rgb=True, image_weight=1 - alpha)
    return np.concatenate([(rgb * 255).round().astype(np.uint8), over], axis=1)
