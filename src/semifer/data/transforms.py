"""Batched weak / strong views on uint8 image batches.

The engine gathers a uint8 batch ``x`` [B, C, H, W] (C = 1 or 3, CPU or CUDA) and calls the
views on the whole batch; every sample gets its own random parameters, but the work is done
with a handful of batched tensor ops instead of a per-image PIL loop.

Reproducibility: every random number is drawn on the CPU from the ``generator`` argument
(torch's default CPU generator when None) and only then moved to ``x.device``, and the number
of draws depends on the batch shape and the options only, never on the pixel values or the
device. Saving and restoring the generator state therefore replays a run bit for bit.

RandAugment magnitudes use torchvision's 31-bin scale (0..30; 30 = the maximum strength of
each op, e.g. 30 degrees of rotation). ``strong_view`` draws each sample's magnitude
uniformly from [0, magnitude] per op (FixMatch-style random magnitude) unless
``random_magnitude=False``, which applies exactly ``magnitude`` like torchvision. Signed ops
(geometric ones and the colour blends) flip direction with probability 0.5.

Named strong presets (:data:`STRONG_PRESETS`, ``data.strong`` in the config):

* ``custom``: ``n_ops`` ops, magnitude uniform in [0, ``magnitude``] (default 10 of 30, about
  17 % of each op's range on average), Cutout of half the side on every view. semifer's
  default, kept so earlier benchmark numbers stay reproducible.
* ``fixmatch``: FixMatch (Sohn et al. 2020, section 2.3 and Table 12): 2 ops, each magnitude
  uniform over the op's full range (0..30), then Cutout of a square of side uniform in
  [0, 0.5] of the image side.
* ``timm_m9_mstd05``: timm's ``rand-m9-mstd0.5`` (and ``-inc1``: every op here grows stronger
  with the magnitude): 2 ops, each applied with probability 0.5, magnitude ~ N(9, 0.5) on
  timm's 0..10 scale (N(27, 1.5) on 0..30) clipped to the range, no Cutout. SSFER's stage III
  uses ``rand-m9-mstd0.5-inc1``. Known difference: the op list is FixMatch's 14 ops above,
  while timm's ``inc1`` list has Invert and SolarizeAdd instead of Identity.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as tnf
from torchvision.transforms.v2 import functional as tvf

MAX_BIN = 30  # torchvision RandAugment: num_magnitude_bins=31
# The FixMatch / RandAugment op list. Colour ops come first and geometric ops last, so that
# sorting a batch by op index leaves all geometric samples in one contiguous slice.
OPS = (
    "Identity", "AutoContrast", "Equalize", "Solarize", "Posterize", "Color", "Contrast",
    "Brightness", "Sharpness", "Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY",
)
GEOMETRIC = OPS[9:]


# ---------------------------------------------------------------- helpers


def _check(x: torch.Tensor) -> None:
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(
            f"expected uint8 [B, C, H, W] with C in (1, 3), got {x.dtype} {list(x.shape)}")


def _dev(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Move CPU-drawn parameters to x's device. ``non_blocking`` skips the stream sync a
    blocking host-to-device copy does, so CUDA batches queue without stalls (the driver
    stages pageable memory before returning, so the CPU tensor may be freed at once)."""
    return v.to(x.device, non_blocking=True)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float pixels on the 0..255 scale -> uint8 (rounded, not truncated)."""
    return x.round_().clamp_(0, 255).to(torch.uint8)


def _blend(x: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ImageEnhance: ``degenerate + factor * (x - degenerate)``, factor [N, 1, 1, 1]."""
    d = degenerate.float()
    # Plain arithmetic: torch.lerp with a broadcast weight is far slower on CPU.
    return _to_uint8((x.float() - d).mul_(factor).add_(d))


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Luminance of [..., C, H, W] as float [..., 1, H, W] (ITU-R 601-2, the weights PIL and
    torchvision use)."""
    if x.shape[-3] == 1:
        return x.float()
    w = torch.tensor([0.2989, 0.587, 0.114], device=x.device).view(3, 1, 1)
    return (x.float() * w).sum(-3, keepdim=True)


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Reflect-pad index map (numpy 'reflect', no edge repeat) for indices in [-(n-1), 2n-2]."""
    i = i.abs()
    return torch.where(i > n - 1, 2 * (n - 1) - i, i)


def _affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``affine_grid(theta, [N, C, h, w], align_corners=False)`` [N, H, W, 2] as a single
    [2N, 3] x [3, H*W] matmul: the library's batched matmul is ~10x slower on CPU."""
    xs = (torch.arange(w, device=theta.device) * 2 + 1) / w - 1      # [W] pixel centres
    ys = (torch.arange(h, device=theta.device) * 2 + 1) / h - 1      # [H]
    ones = torch.ones(h, w, device=theta.device)
    base = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), ones]).view(3, h * w)
    grid = theta.reshape(-1, 3) @ base                               # [2N, H*W]
    return grid.view(-1, 2, h, w).permute(0, 2, 3, 1)


def _warp(x: torch.Tensor, theta: torch.Tensor, fill: float | None) -> torch.Tensor:
    """Bilinear ``grid_sample`` of uint8 [N, C, H, W] with per-sample affine ``theta`` [N, 2, 3]
    (CPU; output -> input, normalized coordinates). Outside pixels get ``fill``, or the
    nearest border pixel when ``fill`` is None."""
    grid = _affine_grid(_dev(theta, x), *x.shape[2:])              # [N, H, W, 2]
    xf = x.float()
    if fill is None:
        return _to_uint8(tnf.grid_sample(xf, grid, "bilinear", "border", align_corners=False))
    # Zero padding of (x - fill) is padding with ``fill``, blended correctly at the edges.
    out = tnf.grid_sample(xf - fill, grid, "bilinear", "zeros", align_corners=False)
    return _to_uint8(out.add_(fill))


# ---------------------------------------------------------------- weak view


def _padcrop(x: torch.Tensor, g: torch.Generator | None, pad: float, flip: bool
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reflect-pad + random crop + flip as one gather: the crop offsets, the reflection and the
    mirror are folded into a per-sample pixel index, so no padded copy is materialized.
    Returns the view and its ``theta`` [B, 2, 3] (see :func:`weak_view`)."""
    b, c, h, w = x.shape
    ph, pw = min(round(pad * h), h - 1), min(round(pad * w), w - 1)
    oy_cpu = torch.randint(0, 2 * ph + 1, (b, 1), generator=g)             # [B, 1]
    ox_cpu = torch.randint(0, 2 * pw + 1, (b, 1), generator=g)             # [B, 1]
    mirror = (torch.rand(b, 1, generator=g) < 0.5) if flip else torch.zeros(b, 1, dtype=torch.bool)
    theta = torch.zeros(b, 2, 3)                                          # output -> input
    theta[:, 0, 0] = torch.where(mirror[:, 0], -1.0, 1.0)
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = (ox_cpu[:, 0] - pw) * 2 / w                          # shift, normalized
    theta[:, 1, 2] = (oy_cpu[:, 0] - ph) * 2 / h
    oy, ox, mirror = _dev(oy_cpu, x), _dev(ox_cpu, x), _dev(mirror, x)
    rows = _reflect(oy - ph + torch.arange(h, device=x.device), h)       # [B, H]
    cols = _reflect(ox - pw + torch.arange(w, device=x.device), w)       # [B, W]
    cols = torch.where(mirror, cols.flip(1), cols)
    idx = (rows[:, :, None] * w + cols[:, None, :]).view(b, 1, h * w)    # [B, 1, H*W]
    return x.reshape(b, c, h * w).gather(2, idx.expand(b, c, h * w)).view(b, c, h, w), theta


def _rrc(
    x: torch.Tensor, g: torch.Generator | None, scale: tuple[float, float], flip: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random resized crop (area fraction in ``scale``, aspect 3/4..4/3) + flip as one batched
    affine warp. Instead of torchvision's rejection sampling, crop sides that would exceed the
    image are clamped to it, which keeps the number of random draws fixed."""
    b = x.shape[0]
    area = torch.empty(b).uniform_(scale[0], scale[1], generator=g)             # [B]
    log_r = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g)
    centre = torch.rand(b, 2, generator=g) * 2 - 1                              # [B, 2] in [-1, 1]
    sign = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0) if flip else torch.ones(b)
    cw = (area * log_r.exp()).sqrt().clamp(max=1.0)                             # crop width / W
    ch = (area / log_r.exp()).sqrt().clamp(max=1.0)                             # crop height / H
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = cw * sign
    theta[:, 1, 1] = ch
    theta[:, 0, 2] = centre[:, 0] * (1 - cw)
    theta[:, 1, 2] = centre[:, 1] * (1 - ch)
    return _warp(x, theta, fill=None), theta


def weak_view(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    mode: str = "padcrop",
    pad: float = 0.125,
    flip: bool = True,
    scale: tuple[float, float] = (0.8, 1.0),
    return_params: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Weak augmentation of a uint8 batch [B, C, H, W] -> uint8 [B, C, H, W], same device.

    ``padcrop``: reflect-pad by ``round(pad * H)`` (``round(pad * W)`` horizontally), crop back
    to H x W at a random offset per sample. ``rrc``: random resized crop with area fraction in
    ``scale`` and aspect ratio 3/4..4/3, resampled bilinearly. Both add a horizontal flip with
    p = 0.5 when ``flip``.

    ``return_params=True`` also returns ``theta`` [B, 2, 3] (CPU): the per-sample map from the
    view's coordinates to the input's, both normalized to [-1, 1] at pixel edges
    (``affine_grid``'s convention), diagonal since both modes only crop, scale and flip; see
    :func:`boxes_through_view`. The random draws are the same either way."""
    _check(x)
    if mode == "padcrop":
        view, theta = _padcrop(x, generator, pad, flip)
    elif mode == "rrc":
        view, theta = _rrc(x, generator, scale, flip)
    else:
        raise ValueError(f"unknown weak_view mode {mode!r}; expected 'padcrop' or 'rrc'")
    return (view, theta) if return_params else view


def boxes_through_view(boxes: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Boxes (x0, y0, x1, y1) in [0, 1] of the input images [B, 4] -> the same boxes in the
    weak views [B, 4], clipped to the view (a box cropped out entirely has zero area).

    ``theta`` [B, 2, 3] from ``weak_view(..., return_params=True)`` maps view coordinates u to
    input coordinates a * u + t (normalized to [-1, 1], a < 0 for a flip); a box corner moves by
    the inverse, u = (2 p - 1 - t) / a for a corner p in [0, 1], and a flip swaps x0 and x1."""
    theta = theta.to(boxes.device, boxes.dtype)
    a = torch.stack([theta[:, 0, 0], theta[:, 1, 1]], 1)[:, None]      # [B, 1, 2] (x, y)
    t = theta[:, :, 2][:, None]                                         # [B, 1, 2]
    corners = boxes.view(-1, 2, 2)                                      # [B, (p0, p1), (x, y)]
    u = ((corners * 2 - 1) - t) / a                                     # view coords in [-1, 1]
    lo, hi = torch.minimum(u[:, 0], u[:, 1]), torch.maximum(u[:, 0], u[:, 1])  # [B, 2]
    return ((torch.cat([lo, hi], 1) + 1) / 2).clamp(0, 1)              # [B, 4]


# ---------------------------------------------------------------- RandAugment ops
# Each op maps uint8 [N, C, H, W] and signed magnitudes m [N] (CPU float, 0..30 bins) to uint8
# [N, C, H, W]; unsigned ops use |m|. Per-sample parameters are computed on the CPU and moved
# to the image's device. Ranges follow torchvision's RandAugment.


def _param(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample CPU values [N] -> [N, 1, 1, 1] on x's device, ready to broadcast."""
    return _dev(v, x).view(-1, 1, 1, 1)


def _autocontrast(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return tvf.autocontrast(x)


def _equalize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return tvf.equalize(x)


def _solarize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Invert pixels at or above a threshold that falls from 255 (m=0) to 0 (m=30)."""
    # x >= t  <=>  x >= ceil(t) for integer pixels; a uint8 threshold avoids a float copy.
    thr = (255 * (1 - m.abs() / MAX_BIN)).ceil().to(torch.uint8)
    return torch.where(x >= _param(thr, x), 255 - x, x)


def _posterize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Keep the top 8 (m=0) down to 4 (m=30) bits of each pixel."""
    bits = (8 - m.abs() / (MAX_BIN / 4)).round().long()             # [N]
    mask = torch.bitwise_left_shift(torch.full_like(bits, 0xFF), 8 - bits) & 0xFF
    return x & _param(mask.to(torch.uint8), x)


def _factor(m: torch.Tensor) -> torch.Tensor:
    """Enhancement factor 1 +- 0.9 for the PIL ImageEnhance-style ops."""
    return 1 + 0.9 * m / MAX_BIN


def _brightness(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return _to_uint8(x.float() * _param(_factor(m), x))


def _color(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Saturation; grayscale images have none, so it is the identity for C = 1."""
    return x if x.shape[1] == 1 else _blend(x, _gray(x), _param(_factor(m), x))


def _contrast(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    mean = _gray(x).mean((1, 2, 3), keepdim=True)                  # [N, 1, 1, 1]
    return _blend(x, mean, _param(_factor(m), x))


def _sharpness(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """PIL's sharpness: blend with the 3x3-smoothed image (centre weight 5/13, rounded) whose
    1-pixel border is the original. The 3x3 sum is four shifted adds: torchvision's
    ``adjust_sharpness`` takes one factor per call, and both its depthwise conv and
    ``avg_pool2d`` are over 5x slower on CPU."""
    if min(x.shape[2:]) <= 2:
        return x
    xf = x.float()
    rows = xf[..., :-2, :] + xf[..., 1:-1, :] + xf[..., 2:, :]       # [N, C, H-2, W]
    inner = xf[..., 1:-1, 1:-1]                                     # [N, C, H-2, W-2]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    smooth = box.add_(inner, alpha=4).div_(13).round_()
    out = xf.clone()
    out[..., 1:-1, 1:-1] = (inner - smooth).mul_(_param(_factor(m), x)).add_(smooth)
    return _to_uint8(out)


def _geometric_theta(kind: torch.Tensor, m: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Per-sample affine [N, 2, 3] (output -> input, normalized coords) for geometric op
    indices ``kind`` [N] (into GEOMETRIC) with signed magnitudes ``m`` [N]: rotate up to 30
    degrees, shear up to 0.3, translate up to 150/331 of the side (torchvision's ranges).
    Rotation and shear are about the image centre (torchvision shears about the top-left
    corner), so the face stays centred."""
    frac = m / MAX_BIN
    zero = torch.zeros_like(frac)
    angle = torch.where(kind == 0, frac * math.radians(30), zero)
    shear_x = torch.where(kind == 1, frac * 0.3, zero)
    shear_y = torch.where(kind == 2, frac * 0.3, zero)
    tx = torch.where(kind == 3, frac * (150 / 331) * w, zero)      # pixels
    ty = torch.where(kind == 4, frac * (150 / 331) * h, zero)
    cos, sin = angle.cos(), angle.sin()
    # Pixel-space map about the centre: input = R @ S @ output - t (one term is non-trivial).
    a = torch.stack([cos - sin * shear_y, cos * shear_x - sin,
                     sin + cos * shear_y, sin * shear_x + cos], 1).view(-1, 2, 2)
    # Pixel -> normalized coordinates scale x by 2/W and y by 2/H.
    a = a * torch.tensor([[1.0, h / w], [w / h, 1.0]])
    t = torch.stack([-tx * 2 / w, -ty * 2 / h], 1)                 # [N, 2]
    return torch.cat([a, t[:, :, None]], 2)                         # [N, 2, 3]


_COLOR_OPS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "Identity": lambda x, m: x,
    "AutoContrast": _autocontrast,
    "Equalize": _equalize,
    "Solarize": _solarize,
    "Posterize": _posterize,
    "Color": _color,
    "Contrast": _contrast,
    "Brightness": _brightness,
    "Sharpness": _sharpness,
}


def apply_op(
    name: str, x: torch.Tensor, magnitude: float | torch.Tensor, *, fill: float = 127
) -> torch.Tensor:
    """Apply one RandAugment op to every sample of a uint8 batch [N, C, H, W].

    ``magnitude`` is a float or a per-sample [N] tensor on the 0..30 bin scale; its sign sets
    the direction of signed ops and is ignored by the others. Geometric ops fill uncovered
    pixels with ``fill``."""
    _check(x)
    m = torch.as_tensor(magnitude, dtype=torch.float32).cpu().expand(x.shape[0])   # [N]
    if name in GEOMETRIC:
        kind = torch.full(m.shape, GEOMETRIC.index(name))
        return _warp(x, _geometric_theta(kind, m, *x.shape[2:]), fill)
    if name not in _COLOR_OPS:
        raise ValueError(f"unknown RandAugment op {name!r}; expected one of {', '.join(OPS)}")
    return _COLOR_OPS[name](x, m)


def _randaugment_round(
    x: torch.Tensor, op: torch.Tensor, m: torch.Tensor, fill: float
) -> torch.Tensor:
    """One RandAugment round: sample i gets ``OPS[op[i]]`` with magnitude ``m[i]`` (both CPU).

    The batch is sorted by op so each op's samples form one contiguous slice (geometric ops,
    last in OPS, form one slice that is warped in a single ``grid_sample``); the grouping is
    computed on the CPU, so a CUDA batch needs no device sync."""
    order = torch.argsort(op, stable=True)                           # [B]
    counts = torch.bincount(op, minlength=len(OPS)).tolist()
    xs = x.index_select(0, _dev(order, x))                           # [B, C, H, W] grouped
    op, m = op[order], m[order]
    pieces, start = [], 0
    for name, n in zip(_COLOR_OPS, counts):
        if n:
            pieces.append(_COLOR_OPS[name](xs[start:start + n], m[start:start + n]))
        start += n
    if start < len(op):
        kind = op[start:] - len(_COLOR_OPS)                          # index into GEOMETRIC
        theta = _geometric_theta(kind, m[start:], *x.shape[2:])
        pieces.append(_warp(xs[start:], theta, fill))
    return torch.cat(pieces).index_select(0, _dev(torch.argsort(order), x))


def _cutout(x: torch.Tensor, g: torch.Generator | None, frac: float, fill: float,
            random_side: bool = False) -> torch.Tensor:
    """Fill one square of side ``round(frac * min(H, W))`` per sample with ``fill``; the square
    lies fully inside the image, so its area is the same for every sample. ``random_side``
    (FixMatch's Cutout): each sample's side is ``round(U(0, frac) * min(H, W))`` instead."""
    b, _, h, w = x.shape
    if random_side:
        side = (torch.rand(b, 1, generator=g) * frac * min(h, w)).round().long()   # [B, 1]
        y0 = (torch.rand(b, 1, generator=g) * (h - side + 1)).long()                # [B, 1]
        x0 = (torch.rand(b, 1, generator=g) * (w - side + 1)).long()
        y0, x0, side = _dev(y0, x), _dev(x0, x), _dev(side, x)
    else:
        side = round(frac * min(h, w))
        y0 = _dev(torch.randint(0, h - side + 1, (b, 1), generator=g), x)   # [B, 1]
        x0 = _dev(torch.randint(0, w - side + 1, (b, 1), generator=g), x)
    ys = torch.arange(h, device=x.device) - y0                              # [B, H]
    xs = torch.arange(w, device=x.device) - x0                              # [B, W]
    rows = ((ys >= 0) & (ys < side)).to(torch.uint8)
    cols = ((xs >= 0) & (xs < side)).to(torch.uint8)
    # uint8 arithmetic instead of a broadcast boolean mask: several times faster on CPU.
    inside = (rows[:, :, None] * cols[:, None, :])[:, None]                 # [B, 1, H, W]
    return x * (1 - inside) + inside * int(fill)                            # [B, C, H, W]


def strong_view(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    n_ops: int = 2,
    magnitude: float = 10,
    cutout: float = 0.5,
    weak_first: bool = True,
    random_magnitude: bool = True,
    magnitude_std: float = 0.0,
    op_prob: float = 1.0,
    cutout_random: bool = False,
    fill: float = 127,
    **weak_kw,
) -> torch.Tensor:
    """Strong augmentation of a uint8 batch [B, C, H, W] -> uint8 [B, C, H, W], same device.

    Optionally the weak view (``weak_kw`` go to :func:`weak_view`), then ``n_ops`` rounds of
    RandAugment (each sample draws its own op and magnitude, see :func:`randaugment_draws`),
    then Cutout of a square of side ``round(cutout * min(H, W))`` (``cutout_random``: side
    uniform in [0, cutout] of the side per sample) filled with gray ``fill`` (``fill`` also
    fills the area that geometric ops uncover). ``cutout=0`` disables Cutout. The named
    presets are :func:`strong_options`.
    """
    _check(x)
    if weak_first:
        x = weak_view(x, generator, **weak_kw)
    ops, mags = randaugment_draws(x.shape[0], generator, n_ops=n_ops, magnitude=magnitude,
                                  random_magnitude=random_magnitude, magnitude_std=magnitude_std,
                                  op_prob=op_prob)
    for r in range(n_ops):
        x = _randaugment_round(x, ops[r], mags[r], fill)
    if cutout > 0:
        x = _cutout(x, generator, cutout, fill, random_side=cutout_random)
    return x


def randaugment_draws(
    b: int,
    generator: torch.Generator | None = None,
    *,
    n_ops: int = 2,
    magnitude: float = 10,
    random_magnitude: bool = True,
    magnitude_std: float = 0.0,
    op_prob: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ops [n_ops, B] (indices into :data:`OPS`) and signed magnitudes [n_ops, B] on the 0..30
    scale for a batch of ``b``.

    Magnitude: uniform in [0, magnitude] (``random_magnitude``, FixMatch's form), exactly
    ``magnitude`` (``random_magnitude=False``, torchvision's), or ``magnitude_std > 0``: normal
    N(magnitude, magnitude_std) clipped to [0, 30] (timm's ``mstd``). ``op_prob < 1``: each
    op is applied with that probability (timm's per-op probability), otherwise Identity. The
    draws for the defaults are the ones semifer always made, so earlier runs replay."""
    ops = torch.randint(0, len(OPS), (n_ops, b), generator=generator)              # [n_ops, B]
    if magnitude_std > 0:
        mags = (torch.randn(n_ops, b, generator=generator) * magnitude_std + magnitude).clamp(0, MAX_BIN)
    elif random_magnitude:
        mags = torch.rand(n_ops, b, generator=generator) * magnitude
    else:
        mags = torch.full((n_ops, b), float(magnitude))
    signs = torch.where(torch.rand(n_ops, b, generator=generator) < 0.5, -1.0, 1.0)
    if op_prob < 1:
        ops = torch.where(torch.rand(n_ops, b, generator=generator) < op_prob, ops, OPS.index("Identity"))
    return ops, mags * signs


# data.strong -> strong_view keyword arguments (``custom`` reads data.strong_ops / strong_magnitude)
STRONG_PRESETS: dict[str, dict] = {
    "fixmatch": dict(n_ops=2, magnitude=MAX_BIN, random_magnitude=True, cutout=0.5, cutout_random=True),
    "timm_m9_mstd05": dict(n_ops=2, magnitude=9 * MAX_BIN / 10, magnitude_std=0.5 * MAX_BIN / 10,
                           op_prob=0.5, cutout=0.0),
}


def strong_options(preset: str = "custom", n_ops: int = 2, magnitude: float = 10) -> dict:
    """``strong_view`` keyword arguments of a named preset (module docstring); ``custom`` uses
    ``n_ops`` and ``magnitude`` with the default uniform magnitude and Cutout 0.5."""
    if preset == "custom":
        return dict(n_ops=n_ops, magnitude=magnitude)
    if preset not in STRONG_PRESETS:
        raise ValueError(f"unknown strong preset {preset!r}; expected custom, {', '.join(STRONG_PRESETS)}")
    return dict(STRONG_PRESETS[preset])


# ---------------------------------------------------------------- test-time views


SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1))


def shifted_views(x: torch.Tensor, shift: int) -> list[torch.Tensor]:
    """The batch [B, C, H, W] and its 8 copies moved by ``shift`` pixels along the axes and the
    diagonals, reflect-padded as :func:`weak_view` pads: the test-time counterpart of the weak
    view's random crop. ``shift`` 0 returns ``[x]``."""
    if shift <= 0:
        return [x]
    h, w = x.shape[-2:]
    if shift >= min(h, w):
        raise ValueError(f"test-time shift of {shift} px needs images over {shift} px a side, got {h}x{w}")
    xp = tnf.pad(x, (shift,) * 4, mode="reflect")
    return [xp[..., shift + dy * shift:shift + dy * shift + h, shift + dx * shift:shift + dx * shift + w]
            for dy, dx in SHIFTS]


# ---------------------------------------------------------------- model input


def normalize(
    x: torch.Tensor, mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.5
) -> torch.Tensor:
    """uint8 [B, C, H, W] -> float32 ``(x / 255 - mean) / std``; mean/std per channel or scalar."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    if {len(mean_t), len(std_t)} - {1, x.shape[-3]}:
        raise ValueError(f"normalize: mean {mean} / std {std} do not match {x.shape[-3]} channel(s)")
    return (x.float() / 255 - mean_t) / std_t


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Match a backbone's input channels: 1 -> 3 repeats gray, 3 -> 1 takes luminance
    (rounded for uint8, unlike torchvision's truncation, so gray -> RGB -> gray round-trips).
    Works on [..., C, H, W] of uint8 or float; returns ``x`` itself when C already matches."""
    c = x.shape[-3]
    if c == channels:
        return x
    if (c, channels) == (1, 3):
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:]).contiguous()
    if (c, channels) == (3, 1):
        y = _gray(x)                                                # [..., 1, H, W]
        return _to_uint8(y) if x.dtype == torch.uint8 else y.to(x.dtype)
    raise ValueError(f"cannot convert {c} channels to {channels}")
