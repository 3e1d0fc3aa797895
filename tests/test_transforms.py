"""Batched weak / strong views: shapes, determinism, per-op behaviour, helpers."""
import pytest
import torch

from semifer.data.transforms import (
    GEOMETRIC, MAX_BIN, OPS, _randaugment_round, apply_op, boxes_through_view, normalize,
    randaugment_draws, strong_options, strong_view, to_channels, weak_view,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int = 8, c: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    """Non-constant, not full-range uint8 images (so AutoContrast has work to do)."""
    return torch.randint(40, 200, (b, c, h, w), dtype=torch.uint8, generator=gen(seed))


def constant(value: int, b: int = 6, c: int = 3, h: int = 32, w: int = 32) -> torch.Tensor:
    return torch.full((b, c, h, w), value, dtype=torch.uint8)


VIEWS = {
    "padcrop": lambda x, g: weak_view(x, g),
    "rrc": lambda x, g: weak_view(x, g, mode="rrc"),
    "strong": lambda x, g: strong_view(x, g),
    "strong_rrc": lambda x, g: strong_view(x, g, mode="rrc", n_ops=3, magnitude=30),
}


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("c", [1, 3])
def test_dtype_shape_device_preserved(view, c):
    x = images(c=c, h=24, w=40)
    y = VIEWS[view](x, gen())
    assert y.dtype == torch.uint8 and y.shape == x.shape and y.device == x.device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("view", VIEWS)
def test_cuda_matches_device_and_params(view):
    x = images().cuda()
    y = VIEWS[view](x, gen())
    assert y.is_cuda and y.dtype == torch.uint8 and y.shape == x.shape
    # Same generator draws on both devices: results agree up to float rounding at edges.
    y_cpu = VIEWS[view](x.cpu(), gen())
    assert (y.cpu().int() - y_cpu.int()).abs().float().mean() < 1


@pytest.mark.parametrize("view", VIEWS)
def test_same_generator_state_same_output(view):
    x = images()
    g = gen(123)
    state = g.get_state()
    first = VIEWS[view](x, g)
    g.set_state(state)
    assert torch.equal(VIEWS[view](x, g), first)
    assert not torch.equal(VIEWS[view](x, gen(124)), first)


def test_randomness_only_from_generator():
    before = torch.get_rng_state()
    strong_view(images(), gen())
    weak_view(images(), gen(), mode="rrc")
    assert torch.equal(torch.get_rng_state(), before)


def test_flip_only_gives_image_or_mirror():
    x = images(b=32, c=1)
    y = weak_view(x, gen(), pad=0)
    same = (y == x).flatten(1).all(1)
    mirrored = (y == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all()
    assert same.any() and mirrored.any()


def test_no_flip_no_pad_is_identity():
    x = images()
    assert torch.equal(weak_view(x, gen(), pad=0, flip=False), x)


def test_padcrop_shifts_within_pad():
    # A per-sample crop is a shift of at most `pad` pixels: the centre survives somewhere.
    x = images(b=16, c=1, h=32, w=32)
    y = weak_view(x, gen(), flip=False)                             # pad = round(0.125 * 32) = 4
    centre = x[:, :, 4:28, 4:28]
    found = torch.zeros(16, dtype=torch.bool)
    for dy in range(9):
        for dx in range(9):
            found |= (y[:, :, dy:dy + 24, dx:dx + 24] == centre).flatten(1).all(1)
    assert found.all()


@pytest.mark.parametrize("mode", ["padcrop", "rrc"])
def test_weak_view_of_constant_image_is_constant(mode):
    x = constant(93)
    assert torch.equal(weak_view(x, gen(), mode=mode), x)


def test_cutout_grays_exactly_one_square():
    x = constant(200, b=16, h=40, w=40)
    y = strong_view(x, gen(), n_ops=0, cutout=0.25)                 # side = 10
    gray = y == 127
    assert ((y == 127) | (y == 200)).all()
    assert (gray.flatten(1).sum(1) == 3 * 10 * 10).all()
    for g in gray[:, 0]:
        rows, cols = g.any(1).nonzero(), g.any(0).nonzero()
        assert rows.max() - rows.min() == 9 and cols.max() - cols.min() == 9
    positions = {tuple(g[0].nonzero()[0].tolist()) for g in gray}
    assert len(positions) > 1                                       # per-sample positions


def test_cutout_zero_is_off():
    x = constant(200)
    assert torch.equal(strong_view(x, gen(), n_ops=0, cutout=0), x)


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("c", [1, 3])
def test_each_op_keeps_dtype_and_changes_image(name, c):
    x = images(c=c)
    y = apply_op(name, x, 30.0)
    assert y.dtype == torch.uint8 and y.shape == x.shape
    if name == "Identity" or (name == "Color" and c == 1):
        assert torch.equal(y, x)
    else:
        assert not torch.equal(y, x)


@pytest.mark.parametrize("name", ["Brightness", "Contrast", "Sharpness", "Color"])
def test_enhance_ops_saturate_instead_of_wrapping(name):
    # Factor 1.9 pushes white pixels above 255: they must clamp, not wrap to dark values.
    x = images(b=4)
    x[..., :16] = 255
    y = apply_op(name, x, 30.0)
    assert (y[..., :16] == 255).all()


@pytest.mark.parametrize("name", GEOMETRIC + ("Brightness", "Contrast", "Sharpness", "Color"))
def test_zero_magnitude_signed_ops_are_identity(name):
    x = images()
    assert torch.equal(apply_op(name, x, 0.0), x)


def test_translate_moves_by_whole_pixels_and_fills():
    x = images(b=2, c=1, h=30, w=40)
    shift = 6
    m = shift / ((150 / 331) * 40) * 30                             # magnitude for 6 px
    y = apply_op("TranslateX", x, m, fill=127)
    assert torch.equal(y[..., shift:], x[..., :-shift])
    assert (y[..., :shift] == 127).all()


def test_solarize_and_posterize_extremes():
    x = images()
    assert torch.equal(apply_op("Solarize", x, 30.0), 255 - x)      # threshold 0: invert all
    assert torch.equal(apply_op("Posterize", x, 30.0), x & 0xF0)     # 4 bits kept


def test_per_sample_magnitudes():
    x = images(b=4)
    m = torch.tensor([0.0, 10.0, -20.0, 30.0])
    for name in ("Rotate", "Brightness", "Solarize"):
        batched = apply_op(name, x, m)
        single = torch.cat([apply_op(name, x[i:i + 1], float(m[i])) for i in range(4)])
        assert torch.equal(batched, single)


def test_round_matches_per_sample_ops():
    x = images(b=40)
    op = torch.randint(0, len(OPS), (40,), generator=gen(1))
    m = (torch.rand(40, generator=gen(2)) * 2 - 1) * 30
    out = _randaugment_round(x, op, m, fill=127)
    ref = torch.cat([apply_op(OPS[k], x[i:i + 1], float(m[i])) for i, k in enumerate(op.tolist())])
    colour = op < len(OPS) - len(GEOMETRIC)
    assert torch.equal(out[colour], ref[colour])
    # A batched matmul may round differently: allow 1 grey level where bilinear hits x.5.
    assert (out.int() - ref.int()).abs().max() <= 1


def test_equalize_and_autocontrast_are_per_sample():
    x = images(b=3)
    x[1] //= 2                                                      # different ranges per sample
    for name in ("Equalize", "AutoContrast"):
        single = torch.cat([apply_op(name, x[i:i + 1], 0.0) for i in range(3)])
        assert torch.equal(apply_op(name, x, 0.0), single)


def test_strong_view_changes_most_samples():
    x = images(b=32)
    y = strong_view(x, gen(), cutout=0, weak_first=False, magnitude=30)
    changed = (y != x).flatten(1).any(1)
    assert changed.float().mean() > 0.7


def test_fixed_magnitude_option_is_deterministic():
    x = images()
    a = strong_view(x, gen(5), random_magnitude=False, magnitude=9)
    b = strong_view(x, gen(5), random_magnitude=False, magnitude=9)
    assert torch.equal(a, b)


def test_bad_input_and_names_raise():
    with pytest.raises(ValueError, match="uint8"):
        weak_view(images().float(), gen())
    with pytest.raises(ValueError, match="mode"):
        weak_view(images(), gen(), mode="nope")
    with pytest.raises(ValueError, match="op"):
        apply_op("Nope", images(), 5.0)


def test_normalize_values():
    x = torch.tensor([[[[0, 255], [51, 102]]]], dtype=torch.uint8)  # [1, 1, 2, 2]
    expected = torch.tensor([[[[-1.0, 1.0], [-0.6, -0.2]]]])
    y = normalize(x)
    assert y.dtype == torch.float32 and torch.allclose(y, expected)
    x3 = torch.tensor([0, 255, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    y3 = normalize(x3, mean=(0.0, 0.5, 1.0), std=(1.0, 0.5, 0.25))
    assert torch.allclose(y3.flatten(), torch.tensor([0.0, 1.0, 0.0]))


def test_to_channels():
    gray = images(c=1)
    rgb = to_channels(gray, 3)
    assert rgb.shape[1] == 3 and all(torch.equal(rgb[:, i:i + 1], gray) for i in range(3))
    assert to_channels(gray, 1) is gray
    red = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    red[:, 0] = 255
    assert (to_channels(red, 1) == 76).all()                        # 0.2989 * 255
    assert torch.equal(to_channels(rgb, 1), gray)                   # weights sum to 1
    with pytest.raises(ValueError):
        to_channels(gray, 2)


# ---------------------------------------------------------------- strong presets

DRAW_KEYS = ("n_ops", "magnitude", "random_magnitude", "magnitude_std", "op_prob")


def draws(preset: str, b: int = 20000, seed: int = 0):
    opts = strong_options(preset, 2, 10)
    return randaugment_draws(b, gen(seed), **{k: v for k, v in opts.items() if k in DRAW_KEYS})


def test_fixmatch_preset_magnitude_spans_each_ops_full_range():
    ops, m = draws("fixmatch")
    a = m.abs()
    assert a.max() > 0.999 * MAX_BIN and a.min() < 0.01 * MAX_BIN     # all of 0..30
    assert a.mean().item() == pytest.approx(MAX_BIN / 2, abs=0.2)     # uniform: mean 15
    assert (m < 0).float().mean().item() == pytest.approx(0.5, abs=0.02)
    # the custom default stays uniform in [0, 10]: about 17 % of each range on average
    c = draws("custom")[1].abs()
    assert c.max() <= 10 and c.mean().item() == pytest.approx(5, abs=0.1)


def test_timm_preset_magnitude_and_op_probability():
    ops, m = draws("timm_m9_mstd05")
    applied = ops != OPS.index("Identity")
    a = m.abs()
    assert a.max() <= MAX_BIN
    assert a.mean().item() == pytest.approx(27, abs=0.05)              # m9 of 10 = 27 of 30
    assert a.std().item() == pytest.approx(1.5, abs=0.05)              # mstd 0.5 of 10
    # each op is applied with p = 0.5; Identity drawn by chance adds 0.5 / 14
    assert applied.float().mean().item() == pytest.approx(0.5 * 13 / 14, abs=0.01)


def test_strong_view_applies_the_drawn_full_range_magnitudes():
    x = images(b=64)
    opts = {**strong_options("fixmatch"), "cutout": 0}
    ops, m = randaugment_draws(64, gen(7), **{k: v for k, v in opts.items() if k in DRAW_KEYS})
    assert m.abs().max() > 28                                          # near the top of the range
    ref = x
    for r in range(len(ops)):
        ref = torch.cat([apply_op(OPS[k], ref[i:i + 1], float(m[r, i])) for i, k in enumerate(ops[r].tolist())])
    got = strong_view(x, gen(7), weak_first=False, **opts)
    assert (got.int() - ref.int()).abs().max() <= 1                   # bilinear x.5 rounding only


def test_fixmatch_cutout_side_is_uniform_up_to_half_the_side():
    x = constant(200, b=400, h=40, w=40)
    y = strong_view(x, gen(), n_ops=0, cutout=0.5, cutout_random=True)
    assert ((y == 127) | (y == 200)).all()
    side = ((y[:, 0] == 127).flatten(1).sum(1).float()).sqrt()        # squares: area = side ** 2
    assert torch.equal(side, side.round())
    assert side.max() == 20 and side.min() <= 1 and len(side.unique()) > 15
    assert side.mean().item() == pytest.approx(10, abs=1)


def test_custom_preset_is_the_old_default_and_unknown_preset_raises():
    x = images()
    assert torch.equal(strong_view(x, gen(3), **strong_options("custom", 2, 10)), strong_view(x, gen(3)))
    with pytest.raises(ValueError, match="strong preset"):
        strong_options("rand-m9")


# ---------------------------------------------------------------- boxes through the weak view

@pytest.mark.parametrize("mode", ["padcrop", "rrc"])
def test_return_params_keeps_the_draws(mode):
    x = images()
    y, theta = weak_view(x, gen(4), mode=mode, return_params=True)
    assert torch.equal(y, weak_view(x, gen(4), mode=mode)) and theta.shape == (8, 2, 3)


def test_boxes_through_view_by_hand():
    # view -> input: x_in = -x_out + 0.25 (a flip, then a shift), y_in = y_out - 0.125
    theta = torch.tensor([[[-1.0, 0.0, 0.25], [0.0, 1.0, -0.125]]])
    box = torch.tensor([[0.25, 0.5, 0.5, 0.75]])
    # x corners -0.5, 0 -> 0.75, 0.25; y corners 0, 0.5 -> 0.125, 0.625; back to [0, 1]
    expected = torch.tensor([[0.625, 0.5625, 0.875, 0.8125]])
    assert torch.allclose(boxes_through_view(box, theta), expected)
    # a box moved out of the view is clipped to it
    # (the view starts a quarter of the width to the right: x_out = x_in - 0.5 normalized)
    out = boxes_through_view(torch.tensor([[0.0, 0.0, 0.1, 0.1]]), torch.tensor([[[1.0, 0, 0.5], [0, 1.0, 0]]]))
    assert out.tolist() == [[0.0, 0.0, 0.0, pytest.approx(0.1)]]


@pytest.mark.parametrize("mode", ["padcrop", "rrc"])
def test_boxes_follow_the_pixels_of_the_view(mode):
    # a bright rectangle at a known box: after the view, the moved box bounds the bright pixels
    b, s = 16, 32
    x = torch.zeros(b, 1, s, s, dtype=torch.uint8)
    x[:, :, 10:26, 8:20] = 255                                         # rows 10-25, cols 8-19
    box = torch.tensor([[8 / s, 10 / s, 20 / s, 26 / s]]).expand(b, 4)
    y, theta = weak_view(x, gen(2), mode=mode, return_params=True)
    moved = boxes_through_view(box, theta)
    bright = y[:, 0] >= 128
    for i in range(b):
        rows, cols = bright[i].any(1).nonzero()[:, 0], bright[i].any(0).nonzero()[:, 0]
        seen = torch.tensor([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]) / s
        assert (seen - moved[i]).abs().max() <= 1.01 / s, (i, seen, moved[i])
    assert (theta[:, 0, 0] < 0).any() and (theta[:, 0, 0] > 0).any()  # flips on both sides


def test_normalize_rejects_a_channel_mismatch():
    with pytest.raises(ValueError, match="1 channel"):
        normalize(images(c=1), mean=(0.588, 0.459, 0.402), std=(0.228, 0.202, 0.190))
    y = normalize(images(c=3), mean=(0.588, 0.459, 0.402), std=(0.228, 0.202, 0.190))
    assert y.shape == (8, 3, 32, 32)
