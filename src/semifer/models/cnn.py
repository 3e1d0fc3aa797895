"""``cnn_small``: a VGG-style CNN for 32-64 px grayscale faces, cheap enough to train on a CPU.

Four stages of ``depths[i]`` x (conv-BN-ReLU) and 2x2 max-pooling, widths 32-64-128-256, then
global average pooling; about 1.2 M parameters and 0.1 GMAC at 48 px with the default two convs
per stage. It is the model of the test suite and of the CPU demo.

``cnn_fer`` is the backbone of the CPU-hour recipe (``recipes/fer2013_cpu_hour.yaml``). At
48 px a 3x3 conv costs the same at every stage when the width doubles as the side halves, so
the extra depth goes where it is cheapest per parameter: the 12x12 and 6x6 stages, which see
whole-face structure (mouth and brow shapes together). ``benchmarks/throughput.py`` measures
its images/s and FLOPs beside the other backbones.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from semifer.models.backbones import refuse_pretrained, register_model


def _stage(cin: int, cout: int, depth: int = 2) -> nn.Sequential:
    layers = []
    for i in range(depth):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False),
                   nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


class SmallCNN(nn.Module):
    """timm-style interface: ``forward_features`` -> [B, C, h, w], ``forward_head(pre_logits=True)`` -> [B, C].

    ``depths``: convs per stage (default two each; one int or one per stage)."""

    def __init__(self, in_chans: int = 1, widths: Sequence[int] = (32, 64, 128, 256),
                 depths: int | Sequence[int] = 2, drop_rate: float = 0.0):
        super().__init__()
        depths = [depths] * len(widths) if isinstance(depths, int) else list(depths)
        if len(depths) != len(widths) or min(depths) < 1:
            raise ValueError(f"cnn depths {depths} must give one count >= 1 per stage of widths {list(widths)}")
        chans = (in_chans, *widths)
        self.stages = nn.Sequential(*[_stage(a, b, n) for a, b, n in zip(chans[:-1], chans[1:], depths)])
        self.drop = nn.Dropout(drop_rate)
        self.num_features = widths[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)  # [B, C, H/2^S, W/2^S]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        return self.drop(x.mean((2, 3)))  # [B, C]


@register_model("cnn_small")
def cnn_small(in_chans: int = 1, pretrained: bool = False, drop_rate: float = 0.0, **kwargs) -> nn.Module:
    refuse_pretrained("cnn_small", pretrained)
    return SmallCNN(in_chans=in_chans, drop_rate=drop_rate, **kwargs)


@register_model("cnn_fer")
def cnn_fer(in_chans: int = 1, pretrained: bool = False, drop_rate: float = 0.0, **kwargs) -> nn.Module:
    """VGG-style, widths 32-64-128-256 with 1-2-3-3 convs per stage (the CPU-hour backbone)."""
    refuse_pretrained("cnn_fer", pretrained)
    kwargs = {**dict(widths=(32, 64, 128, 256), depths=(1, 2, 3, 3)), **kwargs}
    return SmallCNN(in_chans=in_chans, drop_rate=drop_rate, **kwargs)
