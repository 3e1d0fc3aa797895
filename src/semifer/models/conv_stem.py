"""A convolutional stem for ViTs (Xiao et al., "Early Convolutions Help Transformers See
Better", NeurIPS 2021): a few 3x3 stride-2 convolutions with BatchNorm and ReLU, then a 1x1
convolution to the token width, in place of the single p x p "patchify" convolution.

On 700 FER2013 faces a ViT-Tiny with 8 px patchify embedding sits at chance loss (1.86 after 200
steps, 1.93 on the whole 2,000-step stage II), while the same ViT with this stem memorises them
(0.17 after 500 steps; docs/benchmarks.md, SSFER stage I on a ViT).

The stem's receptive field crosses patch borders, so MAE must not mask its output tokens only:
``masks_pixels`` tells ``semifer.ssl.mae`` to blank the removed patches' pixels before the stem
(as ConvMAE masks its convolutional stages), so no visible token can read a removed patch.
"""
from __future__ import annotations

import torch.nn as nn
from timm.layers import PatchEmbed


class ConvStemPatchEmbed(PatchEmbed):
    """timm ``PatchEmbed`` whose ``proj`` is a conv stem; same grid, same [N, L, D] output.

    For a patch size p = 2^k the stem has k stride-2 3x3 convolutions of widths D/2^k ... D/2
    (Xiao et al.'s doubling), each followed by BatchNorm and ReLU, then a 1x1 convolution to D.
    Takes timm's ``embed_layer`` keywords, so ``VisionTransformer(embed_layer=ConvStemPatchEmbed)``
    builds it."""

    masks_pixels = True

    def __init__(self, img_size=48, patch_size: int = 8, in_chans: int = 1, embed_dim: int = 192,
                 bias: bool = True, **kwargs):
        super().__init__(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                         bias=bias, **kwargs)
        p = self.patch_size[0]
        if self.patch_size[0] != self.patch_size[1] or p < 2 or p & (p - 1):
            raise ValueError(f"a conv stem needs a square power-of-two patch size; got {self.patch_size}")
        steps = p.bit_length() - 1
        if embed_dim % 2 ** steps:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by 2^{steps} for a {p} px conv stem")
        layers, width = [], in_chans
        for i in range(steps):
            out = embed_dim // 2 ** (steps - i)
            layers += [nn.Conv2d(width, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True)]
            width = out
        layers.append(nn.Conv2d(width, embed_dim, 1, bias=bias))
        self.proj = nn.Sequential(*layers)
        self.in_chans = in_chans
