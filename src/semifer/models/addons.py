"""Backbone add-ons for DTA+SNL (Cai et al., arXiv 2601.05556; docs/methods.md section 3): local
attention over regions of the feature map, and feature-map dropout of whole regions or channels.

Both act on the unpooled backbone output that ``FERClassifier.neck`` sees: a CNN map
[B, C, h, w] or ViT tokens [B, N, D], whose ``num_prefix_tokens`` class/register tokens pass
through untouched while the patch tokens are reshaped to their square grid [B, D, s, s].

Regions: a ``grid`` (gh, gw) partitions the h x w map; position (i, j) belongs to region
(floor(i gh / h), floor(j gw / w)), an exact partition for any map size (at 48 px a ResNet-18
gives 2x2, ``cnn_small`` 3x3), so pooling a region and broadcasting its weight back agree.

The paper's formulas are not public; the forms chosen (see docs/dta_snl.md):
- ``LocalAttention``: CBAM-style attention (Woo et al., ECCV 2018) at region level. Each region
  is described by its average- and max-pooled features; a shared two-layer MLP (reduction r, as
  CBAM's channel attention) scores each descriptor, the two scores are summed and a sigmoid
  gives the region weight w in (0, 1). Output x (1 + w), the residual form of Residual Attention
  Networks (Wang et al., CVPR 2017): a region is emphasised, never erased, so the identity path
  and its gradient survive an untrained attention.
- ``FeatureMapDropout``: inverted dropout of whole regions (a coarse DropBlock, Ghiasi et al.,
  NeurIPS 2018) or whole channels (SpatialDropout / ``nn.Dropout2d``, Tompson et al., CVPR 2015),
  drawn per sample, kept values scaled by 1 / (1 - p); the identity in eval mode.
"""
from __future__ import annotations

import abc
import math

import torch
import torch.nn as nn

DROPOUT_MODES = ("region", "channel")
# model option -> attach_addons argument; build_model pops these before create_model
ADDON_OPTIONS = {"local_attention": "local_attention", "feature_dropout": "feature_dropout",
                 "dropout_mode": "dropout_mode", "addon_grid": "grid", "attention_reduction": "reduction"}


def region_index(h: int, w: int, grid: tuple[int, int], device=None) -> torch.Tensor:
    """Region id of every position, row-major: r(i, j) = floor(i gh / h) gw + floor(j gw / w); [h w]."""
    rows = torch.arange(h, device=device) * grid[0] // h      # [h]
    cols = torch.arange(w, device=device) * grid[1] // w      # [w]
    return (rows[:, None] * grid[1] + cols[None, :]).flatten()


def region_pool(x: torch.Tensor, index: torch.Tensor, num_regions: int, reduce: str) -> torch.Tensor:
    """Per-region ``reduce`` ("mean" or "amax") of a map [B, C, h, w] -> [B, C, R]; an empty
    region (map smaller than the grid) gives 0 and is never broadcast back."""
    flat = x.flatten(2)                                       # [B, C, h w]
    out = flat.new_zeros(*flat.shape[:2], num_regions)
    return out.scatter_reduce(2, index.expand_as(flat), flat, reduce=reduce, include_self=False)


class FeatureMapModule(nn.Module, abc.ABC):
    """Applies ``forward_map`` to a CNN map [B, C, h, w] or to the patch-token grid of ViT
    tokens [B, N, D] (the first ``num_prefix_tokens`` tokens pass through unchanged)."""

    def __init__(self, num_prefix_tokens: int = 0):
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens

    @abc.abstractmethod
    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """The add-on on a map [B, C, h, w] -> [B, C, h, w]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            return self.forward_map(x)
        prefix, patches = x[:, :self.num_prefix_tokens], x[:, self.num_prefix_tokens:]   # [B, P, D], [B, n, D]
        b, n, d = patches.shape
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"{n} patch tokens do not form a square grid (num_prefix_tokens="
                             f"{self.num_prefix_tokens}); add-ons need square token grids")
        grid = patches.transpose(1, 2).reshape(b, d, side, side)         # [B, D, s, s]
        out = self.forward_map(grid).flatten(2).transpose(1, 2)          # [B, n, D]
        return torch.cat([prefix, out], 1)


class LocalAttention(FeatureMapModule):
    """x' = x (1 + w_r(x)), w_r = sigmoid(MLP(avgpool_r x) + MLP(maxpool_r x)) for the region r
    holding each position (CBAM's shared-MLP scoring, one weight per region; module docstring)."""

    def __init__(self, channels: int, grid: tuple[int, int] = (2, 2), reduction: int = 16,
                 num_prefix_tokens: int = 0):
        super().__init__(num_prefix_tokens)
        self.grid = tuple(grid)
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def region_weights(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """w [B, R] in (0, 1): one weight per region of the map [B, C, h, w]."""
        r = self.grid[0] * self.grid[1]
        avg = region_pool(x, index, r, "mean").transpose(1, 2)           # [B, R, C]
        mx = region_pool(x, index, r, "amax").transpose(1, 2)            # [B, R, C]
        return torch.sigmoid(self.mlp(avg) + self.mlp(mx)).squeeze(-1)  # [B, R]

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        index = region_index(h, w, self.grid, x.device)                  # [h w]
        weights = self.region_weights(x, index)[:, index]                # [B, h w]
        return x * (1 + weights.view(b, 1, h, w).to(x.dtype))


class FeatureMapDropout(FeatureMapModule):
    """Training: zero each region (``mode="region"``) or channel (``"channel"``) of every sample
    with probability p and scale the rest by 1 / (1 - p); eval: the identity."""

    def __init__(self, p: float = 0.1, mode: str = "region", grid: tuple[int, int] = (2, 2),
                 num_prefix_tokens: int = 0):
        super().__init__(num_prefix_tokens)
        if mode not in DROPOUT_MODES:
            raise ValueError(f"feature-map dropout mode={mode!r}; expected one of {', '.join(DROPOUT_MODES)}")
        if not 0.0 <= p < 1.0:
            raise ValueError(f"feature-map dropout p={p} must lie in [0, 1)")
        self.p, self.mode, self.grid = p, mode, tuple(grid)

    def keep_mask(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled keep mask broadcastable to x [B, C, h, w]: [B, 1, h, w] or [B, C, 1, 1]."""
        b, c, h, w = x.shape
        if self.mode == "channel":
            return x.new_empty(b, c, 1, 1).bernoulli_(1 - self.p) / (1 - self.p)
        index = region_index(h, w, self.grid, x.device)
        keep = x.new_empty(b, self.grid[0] * self.grid[1]).bernoulli_(1 - self.p) / (1 - self.p)   # [B, R]
        return keep[:, index].view(b, 1, h, w)

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * self.keep_mask(x)

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode!r}, grid={self.grid}"


def split_addon_options(options: dict) -> tuple[dict, dict]:
    """Model options -> (``attach_addons`` keyword arguments, the rest for ``create_model``)."""
    addon = {ADDON_OPTIONS[k]: v for k, v in options.items() if k in ADDON_OPTIONS}
    return addon, {k: v for k, v in options.items() if k not in ADDON_OPTIONS}


def attach_addons(model: nn.Module, local_attention: bool = False, feature_dropout: float = 0.0,
                  dropout_mode: str = "region", grid: tuple[int, int] = (2, 2), reduction: int = 16) -> nn.Module:
    """Set ``model.neck`` to [LocalAttention][, FeatureMapDropout] on a ``FERClassifier``; a
    no-op when both are off. Attention comes first so it scores the whole map; dropout then acts
    on what the pooling sees. Returns ``model``.

    A ViT pooled from its class token alone (timm ``global_pool="token"``) never sees the patch
    tokens after its last block, so the add-ons would change nothing: that is an error (use
    ``global_pool="avg"``). Channel-last (NHWC) backbones are refused for the same reason."""
    if not local_attention and feature_dropout == 0:
        return model
    backbone = model.backbone
    if getattr(backbone, "global_pool", None) == "token" and getattr(backbone, "attn_pool", None) is None:
        raise ValueError("feature-map add-ons act on patch tokens, but this ViT pools its class token only; "
                         "set model.options.global_pool=avg")
    if str(getattr(backbone, "output_fmt", "NCHW")) in ("NHWC", "Format.NHWC"):
        raise ValueError("feature-map add-ons expect [B, C, h, w] maps or [B, N, D] tokens, not NHWC maps")
    prefix = getattr(backbone, "num_prefix_tokens", 0)
    layers = []
    if local_attention:
        layers.append(LocalAttention(backbone.num_features, grid, reduction, num_prefix_tokens=prefix))
    if feature_dropout > 0:
        layers.append(FeatureMapDropout(feature_dropout, dropout_mode, grid, num_prefix_tokens=prefix))
    model.neck = nn.Sequential(*layers)
    return model
