"""Backbones for small face crops (48-112 px) and the model registry.

Every backbone follows timm's interface so ``FERClassifier`` treats them and any timm model
alike: ``forward_features(x)`` gives the unpooled output (CNN map [B, C, h, w] or ViT tokens
[B, N, D]), ``forward_head(x, pre_logits=True)`` pools it to [B, D], ``num_features`` is D.
A registered factory is called as ``factory(in_chans=..., pretrained=..., drop_rate=..., **kwargs)``;
one registered with ``takes_img_size=True`` also takes ``img_size``, the single input size it is
built for (a learned position grid), which a run sets to its data size.
"""
from __future__ import annotations

from typing import Callable

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from semifer.models.conv_stem import ConvStemPatchEmbed
from semifer.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
register_model = MODELS.register


def list_models() -> list[str]:
    """Names registered by semifer; any ``timm.list_models()`` name works as well."""
    return MODELS.names()


def takes_img_size(name: str) -> bool:
    """Whether model ``name`` is built for one input size given as ``img_size``: registered
    models say so (``register_model(name, takes_img_size=True)``); timm names are ViTs by timm's
    naming, "vit" in the name."""
    if name in MODELS:
        return bool(MODELS.info(name).get("takes_img_size", False))
    return "vit" in name


def refuse_pretrained(name: str, pretrained: bool) -> None:
    # Failing loudly beats silently training from scratch when weights were asked for.
    if pretrained:
        raise ValueError(f"no published pretrained weights for {name!r}; "
                         "pass checkpoint_path= to load a local state dict instead")


@register_model("resnet18_small")
def resnet18_small(in_chans: int = 1, pretrained: bool = False, drop_rate: float = 0.0,
                   **kwargs) -> nn.Module:
    """timm ResNet-18 with a 3x3 stride-1 stem and no max-pool (CIFAR-style).

    The ImageNet stem divides by 4 before layer1, leaving a 48 px face a 2x2 map at layer4;
    this one keeps 6x6. ``pretrained=True`` loads timm's ImageNet weights for everything but
    the new stem conv, which starts from scratch."""
    model = timm.create_model("resnet18", pretrained=pretrained, num_classes=0, in_chans=in_chans,
                              drop_rate=drop_rate, **kwargs)
    model.conv1 = nn.Conv2d(in_chans, model.bn1.num_features, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    model.feature_info = [dict(f, reduction=max(1, f["reduction"] // 4)) for f in model.feature_info]
    return model


class _WRNBlock(nn.Module):
    """Pre-activation basic block as in the FixMatch TF reference: the shortcut takes the raw
    input, except in the very first block (``activate_before_residual``), which shares the
    pre-activation with the residual branch."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, activate_before_residual: bool = False,
                 bn_momentum: float = 0.001, negative_slope: float = 0.1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs, momentum=bn_momentum)
        self.act1 = nn.LeakyReLU(negative_slope, inplace=True)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs, momentum=bn_momentum)
        self.act2 = nn.LeakyReLU(negative_slope, inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False)
        same = in_chs == out_chs and stride == 1
        self.shortcut = nn.Identity() if same else nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)
        self.activate_before_residual = activate_before_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(x))
        if self.activate_before_residual:
            x = out
        out = self.conv2(self.act2(self.bn2(self.conv1(out))))
        return self.shortcut(x) + out


class WideResNet(nn.Module):
    """WideResNet-depth-k as used by FixMatch/FlexMatch/USB (BN momentum 0.001 = TF decay 0.999,
    leaky ReLU 0.1). Three stages of (depth - 4) / 6 blocks, widths 16k, 32k, 64k."""

    def __init__(self, depth: int = 28, widen_factor: int = 2, in_chans: int = 1, drop_rate: float = 0.0,
                 bn_momentum: float = 0.001, negative_slope: float = 0.1):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, stride=1, padding=1, bias=False)
        self.stages = nn.Sequential(*[
            nn.Sequential(*[
                _WRNBlock(widths[s] if b == 0 else widths[s + 1], widths[s + 1],
                          stride=2 if s > 0 and b == 0 else 1, activate_before_residual=s == 0 and b == 0,
                          bn_momentum=bn_momentum, negative_slope=negative_slope)
                for b in range(n)])
            for s in range(3)])
        self.bn = nn.BatchNorm2d(widths[3], momentum=bn_momentum)
        self.act = nn.LeakyReLU(negative_slope, inplace=True)
        self.num_features = widths[3]
        self.drop_rate = drop_rate
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.stages(self.conv1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # There is no classifier inside the backbone, so pooled features are the output either
        # way; ``pre_logits`` is accepted for timm's interface. Dropout sits here as in timm.
        x = x.mean((2, 3))
        return F.dropout(x, p=self.drop_rate, training=self.training) if self.drop_rate else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("wrn28_2")
def wrn28_2(in_chans: int = 1, pretrained: bool = False, drop_rate: float = 0.0, **kwargs) -> nn.Module:
    """WideResNet-28-2 (1.5 M parameters), the standard semi-supervised benchmark backbone."""
    refuse_pretrained("wrn28_2", pretrained)
    return WideResNet(depth=28, widen_factor=2, in_chans=in_chans, drop_rate=drop_rate, **kwargs)


@register_model("vit_small_p8", takes_img_size=True)
def vit_small_p8(in_chans: int = 1, pretrained: bool = False, drop_rate: float = 0.0, img_size: int = 48,
                 **kwargs) -> nn.Module:
    """ViT with 8 px patches for small faces (36 tokens at 48 px, 196 at 112 px), embed 384,
    6 blocks, 6 heads (~11 M parameters); the encoder MAE pretraining uses. ``img_size`` fixes
    the position-embedding grid; ``depth``, ``global_pool`` etc. may be overridden."""
    refuse_pretrained("vit_small_p8", pretrained)
    kwargs = {**dict(embed_dim=384, depth=6, num_heads=6), **kwargs}
    return VisionTransformer(img_size=img_size, patch_size=8, in_chans=in_chans, num_classes=0,
                             drop_rate=drop_rate, **kwargs)


@register_model("vit_tiny_p8", takes_img_size=True)
def vit_tiny_p8(in_chans: int = 1, pretrained: bool = False, drop_rate: float = 0.0, img_size: int = 48,
                patch_size: int = 8, **kwargs) -> nn.Module:
    """ViT-Tiny width (embed 192, 3 heads) with 6 blocks and 8 px patches (~2.7 M parameters):
    the encoder of the one-CPU-thread SSFER recipe, where ``vit_small_p8`` is ~4x slower.
    ``patch_size`` and ``img_size`` set the token grid (48 px / 8 = 6 x 6 tokens)."""
    refuse_pretrained("vit_tiny_p8", pretrained)
    kwargs = {**dict(embed_dim=192, depth=6, num_heads=3), **kwargs}
    return VisionTransformer(img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=0,
                             drop_rate=drop_rate, **kwargs)


@register_model("vit_tiny_c8", takes_img_size=True)
def vit_tiny_c8(in_chans: int = 1, pretrained: bool = False, drop_rate: float = 0.0, img_size: int = 48,
                patch_size: int = 8, **kwargs) -> nn.Module:
    """``vit_tiny_p8`` with a convolutional stem (``ConvStemPatchEmbed``: three 3x3 stride-2
    convolutions of 24, 48 and 96 channels, then 1x1 to 192; Xiao et al. 2021) in place of the
    8 px patchify convolution: the same 6 x 6 tokens at 48 px. The ViT of the SSFER CPU recipe:
    the patchify ViT does not learn 700 faces in its budget, this one does."""
    refuse_pretrained("vit_tiny_c8", pretrained)
    return vit_tiny_p8(in_chans=in_chans, drop_rate=drop_rate, img_size=img_size, patch_size=patch_size,
                       embed_layer=ConvStemPatchEmbed, **kwargs)
