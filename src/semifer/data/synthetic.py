"""Procedural face-expression dataset: faces drawn with OpenCV, no files needed.

Each image is a cartoon face with identity (face shape, skin tone, feature spacing, hair), pose
(in-plane rotation, scale, shift, a little yaw), lighting, blur, noise and, on a share of images,
an occluder (bar, hand, glasses, hat, mask). The expression is a set of facial actions (brows,
eyelids, mouth corners, jaw, lip stretch / press, nose wrinkle, upper-lip raise, cheek raise)
scaled by a random intensity in [0.3, 1.0]; the classes share actions the way real expressions
do, and about 10 % of the faces blend a second expression in, so the task is learnable but not
trivial. Image i of a split is a pure function of (seed, split, i) and the options.

Spec: ``synthetic:?n=6000&seed=0&size=48&color=0&imbalance=0&intensity=0.3&blend=0.1&occlusion=0.2``
(the path part is ignored). ``intensity``, ``blend`` and ``occlusion`` (``Style``) set how
ambiguous the expressions are; identity, pose and lighting vary the same at every setting.
"""
from __future__ import annotations

import functools
import math
import random
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from semifer.data.base import DataError, Split, register_dataset
from semifer.data.labels import BASIC7

DEFAULT_N = {"train": 6000, "test": 1500, "val": 1000}
# Relative class frequencies of in-the-wild FER data (FER2013 / RAF-DB-like): happy and neutral
# common, fear and disgust rare. ``imbalance`` is the exponent applied to this profile.
WILD_FREQ = np.array([0.19, 0.28, 0.14, 0.11, 0.07, 0.04, 0.10])


@dataclass(frozen=True)
class Style:
    """How ambiguous the expressions are. At the defaults the weakest expression of every class
    fades into neutral and blends sit between classes, so the classes touch: even all 6,000 labels
    leave the demo's small CNN near 55 %. A higher ``intensity`` floor without blends leaves a gap
    between each class and neutral, so the classes form clusters (all labels: ~91 %), while
    identity, pose, lighting and occluders still vary far more than 50 labelled faces per class
    cover: the setting where unlabelled faces pay (``make demo``, docs/benchmarks.md section 0)."""

    intensity: float = 0.3    # expression intensity drawn from U(intensity, 1)
    blend: float = 0.10       # share of faces mixing in a weaker second expression (labelled with the dominant)
    occlusion: float = 0.2    # share of faces with something in front of them


DEFAULT_STYLE = Style()
STYLE_OPTIONS = ("intensity", "blend", "occlusion")

ACTIONS = ("brow_raise", "brow_inner", "brow_lower", "lid", "corner", "jaw", "stretch",
           "press", "wrinkle", "lip_raise", "cheek")
# Facial actions at full intensity, per class (missing = 0). Shared actions make the classic
# confusions: surprise/fear (raised brows, wide eyes, open mouth), anger/disgust (lowered brows,
# narrowed eyes), sad/neutral (weak sad = almost nothing).
TARGETS = {
    "neutral": {},
    "happy": {"corner": 1.0, "cheek": 0.8, "lid": -0.3, "stretch": 0.3},
    "sad": {"brow_inner": 1.0, "brow_lower": 0.25, "corner": -0.9, "lid": -0.3},
    "surprise": {"brow_raise": 1.0, "lid": 1.0, "jaw": 1.0, "stretch": -0.6},
    "fear": {"brow_raise": 0.55, "brow_inner": 0.7, "brow_lower": 0.35, "lid": 0.9, "jaw": 0.5,
             "stretch": 0.9, "corner": -0.25},
    "disgust": {"wrinkle": 1.0, "lip_raise": 1.0, "brow_lower": 0.6, "lid": -0.5,
                "corner": -0.45, "cheek": 0.3},
    "anger": {"brow_lower": 1.0, "lid": -0.15, "press": 1.0, "corner": -0.1},
}

SKIN_TONES = np.array([(255, 224, 196), (241, 194, 160), (224, 172, 129), (198, 134, 90),
                       (161, 102, 64), (112, 72, 48), (80, 52, 36)], np.float64)
HAIR_COLORS = ((25, 20, 18), (60, 40, 28), (105, 70, 40), (190, 160, 100), (150, 150, 150),
               (140, 60, 30))
IRIS_COLORS = ((60, 40, 25), (90, 60, 30), (60, 90, 130), (70, 100, 60))

# Sensor noise is read from one fixed bank at a random offset: fresh Gaussian noise per image
# would cost more than drawing the whole face.
_NOISE_BANK = np.random.default_rng(20240607).standard_normal(1 << 20).astype(np.float32)
_GRIDS: dict[int, tuple[np.ndarray, np.ndarray]] = {}
MAX_N, MAX_SIZE = 10_000_000, 1024


# ----------------------------------------------------------------------------- public API

def class_probs(imbalance: float = 0.0) -> np.ndarray:
    """Class probabilities: uniform at 0, the in-the-wild profile at 1, more skewed above."""
    p = WILD_FREQ ** float(imbalance)
    return p / p.sum()


def generate(n: int, seed: int = 0, size: int = 48, split: str = "train", color: bool = False,
             imbalance: float = 0.0, style: Style = DEFAULT_STYLE) -> tuple[np.ndarray, np.ndarray]:
    """Draw images 0..n-1 of a split: (uint8 [n, size, size] or [n, size, size, 3] RGB,
    int64 labels [n] indexing ``BASIC7``)."""
    cum = np.cumsum(class_probs(imbalance))
    images = np.empty((n, size, size, 3) if color else (n, size, size), np.uint8)
    labels = np.empty(n, np.int64)
    for i in range(n):
        images[i], labels[i] = render(i, seed, size, split, color, cum, style)
    return images, labels


def labels_of(n: int, seed: int = 0, split: str = "train", imbalance: float = 0.0) -> np.ndarray:
    """The labels ``generate`` would return, without drawing the images."""
    cum = np.cumsum(class_probs(imbalance))
    return np.array([_draw_label(_rng(seed, split, i), cum) for i in range(n)], np.int64)


def render(i: int, seed: int, size: int, split: str, color: bool, cum: np.ndarray,
           style: Style = DEFAULT_STYLE) -> tuple[np.ndarray, int]:
    """Image i of a split and its label; ``cum`` is the cumulative class distribution."""
    rng = _rng(seed, split, i)
    label = _draw_label(rng, cum)
    actions = _expression(rng, label, style)
    canvas_size = 2 * size  # drawn at 2x then area-downscaled: smooth thin lines at 48 px
    canvas = _background(rng, canvas_size)
    _draw_face(rng, canvas, actions, style.occlusion)
    img = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    return _camera(rng, img, color), label


@register_dataset("synthetic")
def read_synthetic(path: str = "", split: str = "train", **options) -> Split:
    """Reader for ``synthetic:?n=..&seed=..&size=..&color=..&imbalance=..&intensity=..&blend=..
    &occlusion=..``; ``path`` is ignored. Options may be strings (from a spec) or typed values."""
    known = {"n", "seed", "size", "color", "imbalance", *STYLE_OPTIONS}
    unknown = set(options) - known
    if unknown:
        raise DataError(f"unknown synthetic option(s) {sorted(unknown)}; known: {sorted(known)}")
    if split not in DEFAULT_N:
        raise DataError(f"synthetic has splits {sorted(DEFAULT_N)}, not {split!r}")
    n = _as_int(options.get("n", DEFAULT_N[split]), "n")
    seed = _as_int(options.get("seed", 0), "seed")
    size = _as_int(options.get("size", 48), "size")
    color = _as_bool(options.get("color", False))
    imbalance = _as_float(options.get("imbalance", 0.0), "imbalance")
    # Bounds keep a typo (size=3000000) from becoming a MemoryError deep in the renderer.
    if not (0 <= n <= MAX_N and 8 <= size <= MAX_SIZE):
        raise DataError(f"synthetic needs 0 <= n <= {MAX_N} and 8 <= size <= {MAX_SIZE}, got n={n}, size={size}")
    if not math.isfinite(imbalance):  # nan / inf made every image one class
        raise DataError(f"synthetic option imbalance={imbalance}: expected a finite number (0 uniform, 1 in the wild)")
    style = Style(**{k: _as_float(options[k], k) for k in STYLE_OPTIONS if k in options})
    for k in STYLE_OPTIONS:
        if not 0.0 <= getattr(style, k) <= 1.0:  # also refuses nan
            raise DataError(f"synthetic option {k}={getattr(style, k)}: expected a number in [0, 1]")
    cum = np.cumsum(class_probs(imbalance))

    def load(i: int) -> np.ndarray:
        if not 0 <= i < n:
            raise IndexError(f"synthetic {split} index {i} out of range [0, {n})")
        return render(i, seed, size, split, color, cum, style)[0]

    # Only options away from their default enter the name (the cache key), so the caches of
    # specs written before the style options existed stay valid.
    styled = "".join(f",{k}={getattr(style, k):g}" for k in STYLE_OPTIONS
                     if getattr(style, k) != getattr(DEFAULT_STYLE, k))
    return Split(
        name=f"synthetic:n={n},seed={seed},size={size},color={int(color)},"
             f"imbalance={imbalance:g}{styled}/{split}",
        classes=BASIC7,
        ids=[f"{split}/{i:06d}" for i in range(n)],
        labels=labels_of(n, seed, split, imbalance),
        load=load,
        grayscale=not color,
    )


# ----------------------------------------------------------------------------- option parsing

def _as_int(value, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DataError(f"synthetic option {name}={value!r} is not an integer") from None


def _as_float(value, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"synthetic option {name}={value!r} is not a number") from None


def _as_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise DataError(f"synthetic option color={value!r} is not a boolean (0/1/true/false)")


# ----------------------------------------------------------------------------- randomness

def _rng(seed: int, split: str, i: int) -> random.Random:
    """Per-image generator seeded by one integer packing (seed, split, i). Integer seeding is
    stable across runs and platforms; Python's generator is far cheaper per draw than numpy's."""
    key = ((int(seed) % (1 << 64)) << 96) | (zlib.crc32(split.encode()) << 64) | int(i)
    return random.Random(key)


def _draw_label(rng: random.Random, cum: np.ndarray) -> int:
    """First draw of every image's stream, so labels can be listed without rendering."""
    return min(int(np.searchsorted(cum, rng.random(), side="right")), len(cum) - 1)


def _expression(rng: random.Random, label: int, style: Style = DEFAULT_STYLE) -> dict[str, float]:
    """Facial actions for one face: the class target at a random intensity, per-class variants,
    an optional weaker second expression, and small idiosyncratic jitter."""
    intensity = rng.uniform(style.intensity, 1.0)
    actions = _class_actions(rng, label, intensity)
    if rng.random() < style.blend:
        other = rng.choice([k for k in range(len(BASIC7)) if k != label])
        # The second expression stays weaker than the labelled one; a neutral face only carries
        # a trace, weaker than the weakest labelled expression.
        strength = rng.uniform(0.35, 0.8) * (intensity if label else 0.3)
        for name, v in _class_actions(rng, other, strength).items():
            actions[name] += v
    for name in ACTIONS:
        actions[name] += rng.gauss(0.0, 0.07)
    return actions


def _class_actions(rng: random.Random, label: int, intensity: float) -> dict[str, float]:
    """Target actions of one class at ``intensity``, with the class's natural variants."""
    target = dict(TARGETS[BASIC7[label]])
    name = BASIC7[label]
    if name == "happy":
        target["jaw"] = rng.uniform(0.0, 0.6)  # closed smile or open smile with teeth
    elif name == "anger" and rng.random() < 0.3:
        target.update(press=0.0, jaw=0.35, lip_raise=0.5)  # open snarl instead of pressed lips
    elif name == "surprise":
        target["jaw"] = rng.uniform(0.6, 1.0)
    return {a: intensity * target.get(a, 0.0) for a in ACTIONS}


# ----------------------------------------------------------------------------- drawing helpers

class _Pen:
    """Draws in face coordinates (face half-height 1, y down, origin at the face centre) onto a
    canvas through a similarity transform, with anti-aliased sub-pixel primitives. Points are
    mapped straight to OpenCV fixed point (x16) so small features move smoothly at 48 px."""

    SHIFT = 4
    F = 1 << SHIFT

    def __init__(self, img: np.ndarray, cx: float, cy: float, scale: float, angle: float):
        self.img, self.cx, self.cy, self.k, self.angle = img, cx, cy, scale, angle
        a = math.radians(angle)
        self.c, self.s = math.cos(a) * scale, math.sin(a) * scale
        self.m16 = np.array([[self.c, self.s], [-self.s, self.c]]) * self.F
        self.t16 = np.array([cx, cy]) * self.F + 0.5  # + 0.5: the int cast then rounds

    def shifted(self, dx: float) -> "_Pen":
        """The same pen moved ``dx`` face units along the face's horizontal axis (fake yaw)."""
        return _Pen(self.img, self.cx + self.c * dx, self.cy + self.s * dx, self.k, self.angle)

    def _fix(self, pts) -> np.ndarray:
        return (np.asarray(pts, np.float64) @ self.m16 + self.t16).astype(np.int32)

    def _px(self, thick: float) -> int:
        return -1 if thick < 0 else max(1, round(thick * self.k))

    def ellipse(self, x, y, ax, ay, color, thick=-1.0, angle=0.0, start=0, end=360):
        f, k = self.F, self.k * self.F
        center = (int((self.cx + self.c * x - self.s * y) * f + 0.5),
                  int((self.cy + self.s * x + self.c * y) * f + 0.5))
        axes = (max(1, int(ax * k + 0.5)), max(1, int(ay * k + 0.5)))
        cv2.ellipse(self.img, center, axes, self.angle + angle, start, end, color,
                    self._px(thick), cv2.LINE_AA, self.SHIFT)

    def line(self, pts, color, thick: float):
        cv2.polylines(self.img, [self._fix(pts)], False, color, self._px(thick), cv2.LINE_AA,
                      self.SHIFT)

    def fill(self, pts, color):
        cv2.fillPoly(self.img, [self._fix(pts)], color, cv2.LINE_AA, self.SHIFT)


def _bezier_basis(n: int) -> np.ndarray:
    """[n, 3] weights of (start, midpoint, end) for a quadratic Bezier through the midpoint."""
    t = np.linspace(0, 1, n)
    u = 1 - t
    return np.stack([u * u - t * u, 4 * t * u, t * t - t * u], 1)


_BEZIER = {n: _bezier_basis(n) for n in (4, 5, 6, 7, 11)}


def _bezier(p0, p1, p2, n: int = 7) -> np.ndarray:
    """Quadratic Bezier from p0 to p2 passing through p1 halfway."""
    return _BEZIER[n] @ np.array((p0, p1, p2), np.float64)


@functools.lru_cache(maxsize=None)
def _unit_arc(a0: float, a1: float, n: int) -> np.ndarray:
    """Unit-circle points from a0 to a1 degrees, cached: the same few arcs are drawn every time."""
    t = np.radians(np.linspace(a0, a1, n))
    return np.stack([np.cos(t), np.sin(t)], 1)


def _arc(cx, cy, ax, ay, a0: float, a1: float, n: int = 9) -> np.ndarray:
    """Points on an axis-aligned ellipse from angle a0 to a1 (degrees)."""
    return _unit_arc(a0, a1, n) * (ax, ay) + (cx, cy)


def _mix(a, b, t: float) -> tuple:
    """Colour a blended towards b by t (clipped to [0, 1])."""
    t = min(max(t, 0.0), 1.0)
    u = 1.0 - t
    return (a[0] * u + b[0] * t, a[1] * u + b[1] * t, a[2] * u + b[2] * t)


def _scale(c, f: float) -> tuple:
    """Colour c brightened or darkened by factor f."""
    return (min(255.0, c[0] * f), min(255.0, c[1] * f), min(255.0, c[2] * f))


def _rand_color(rng: random.Random, lo: int = 20, hi: int = 235) -> tuple:
    return (rng.uniform(lo, hi), rng.uniform(lo, hi), rng.uniform(lo, hi))


# ----------------------------------------------------------------------------- the scene

def _background(rng: random.Random, s: int) -> np.ndarray:
    """A flat backdrop with up to three clutter shapes."""
    img = np.empty((s, s, 3), np.uint8)
    cv2.rectangle(img, (0, 0), (s, s), _rand_color(rng), -1)  # much faster than numpy broadcasting
    for _ in range(rng.randint(0, 3)):
        c = _rand_color(rng)
        center = (rng.randrange(s), rng.randrange(s))
        if rng.random() < 0.5:
            axes = (rng.randint(s // 10, s // 2), rng.randint(s // 10, s // 2))
            cv2.ellipse(img, center, axes, rng.uniform(0, 180), 0, 360, c, -1, cv2.LINE_AA)
        else:
            w, h = rng.randint(s // 10, s // 2), rng.randint(s // 10, s)
            cv2.rectangle(img, center, (center[0] + w, center[1] + h), c, -1, cv2.LINE_AA)
    return img


@dataclass
class _Identity:
    """Who the face is: colours and feature placement in face units (half-height 1)."""

    skin: tuple
    hair: tuple
    clothes: tuple
    hair_style: int   # 0 bald, 1 short, 2 long, 3 full volume
    fw: float         # face half-width
    chin: float       # lower-face half-height
    hairline: float
    ear_y: float
    ey: float         # eye height
    ex: float         # eye distance from the midline
    ew: float         # eye half-width
    eh: float         # eye half-height when neutral
    iris: tuple
    gaze: float
    brow_gap: float
    brow_len: float
    brow_thick: float
    ny: float         # nose-tip height
    nw: float         # nose half-width
    nose_side: int    # side of the bridge shadow
    my: float         # mouth height
    mw: float         # mouth half-width
    lip_t: float      # lip thickness

    @property
    def ink(self) -> tuple:
        """Colour of creases and lid lines: a darker shade of the skin."""
        return _scale(self.skin, 0.42)


def _identity(rng: random.Random) -> _Identity:
    """Draw one person: face shape, skin tone, hair and feature spacing."""
    fw = rng.uniform(0.68, 0.86)
    ey = rng.uniform(-0.24, -0.08)
    ew = rng.uniform(0.12, 0.16)
    ny = ey + rng.uniform(0.30, 0.42)
    return _Identity(
        skin=_skin_tone(rng), hair=rng.choice(HAIR_COLORS), clothes=_rand_color(rng),
        hair_style=rng.randrange(4), fw=fw, chin=rng.uniform(0.95, 1.15),
        hairline=rng.uniform(-0.78, -0.55), ear_y=rng.uniform(-0.05, 0.1),
        ey=ey, ex=fw * rng.uniform(0.40, 0.50), ew=ew, eh=ew * rng.uniform(0.45, 0.6),
        iris=rng.choice(IRIS_COLORS), gaze=rng.uniform(-0.3, 0.3) * ew,
        brow_gap=rng.uniform(0.13, 0.2), brow_len=rng.uniform(0.28, 0.36),
        brow_thick=rng.uniform(0.045, 0.07),
        ny=ny, nw=rng.uniform(0.08, 0.12), nose_side=rng.choice((-1, 1)),
        my=ny + rng.uniform(0.17, 0.25), mw=rng.uniform(0.2, 0.28), lip_t=rng.uniform(0.03, 0.055),
    )


def _skin_tone(rng: random.Random) -> tuple:
    """A point on the light-to-dark skin palette with a little per-channel jitter."""
    tone = rng.uniform(0, len(SKIN_TONES) - 1)
    lo = min(int(tone), len(SKIN_TONES) - 2)
    rgb = SKIN_TONES[lo] + (tone - lo) * (SKIN_TONES[lo + 1] - SKIN_TONES[lo])
    return tuple(min(255.0, max(0.0, float(v) + rng.uniform(-8, 8))) for v in rgb)


def _draw_face(rng: random.Random, canvas: np.ndarray, act: dict[str, float],
               occlusion: float = DEFAULT_STYLE.occlusion) -> None:
    """Pose, then head, features and an optional occluder, back to front."""
    s = canvas.shape[0]
    angle = max(-20.0, min(20.0, rng.gauss(0.0, 7.0)))
    scale = s * 0.43 * rng.uniform(0.85, 1.1)
    cx = s / 2 + rng.uniform(-0.07, 0.07) * s
    cy = s / 2 + rng.uniform(-0.05, 0.07) * s
    pen = _Pen(canvas, cx, cy, scale, angle)
    face = _identity(rng)
    yaw = rng.gauss(0.0, 0.04)  # inner features slide sideways, the nose a little more
    _draw_head(rng, pen, face)
    feat = pen.shifted(yaw)
    _draw_forehead_lines(feat, face, act)
    _draw_brows(feat, face, act)
    _draw_eyes(feat, face, act)
    _draw_nose(pen.shifted(1.5 * yaw), face, act)
    _draw_folds(feat, face, act)
    _draw_mouth(feat, face, act)
    if rng.random() < occlusion:
        _draw_occluder(rng, feat, face)


def _draw_head(rng: random.Random, pen: _Pen, face: _Identity) -> None:
    """Shoulders, neck, back hair, ears, the face oval (cranium + jaw halves) and the fringe."""
    fw, skin, hair = face.fw, face.skin, face.hair
    pen.ellipse(0, 1.95, 1.7, 0.7, face.clothes)
    pen.fill([(-fw * 0.45, 0.4), (fw * 0.45, 0.4), (fw * 0.55, 1.5), (-fw * 0.55, 1.5)],
             _scale(skin, 0.85))
    if face.hair_style == 2:
        pen.fill(np.concatenate([_arc(0, 0, fw + 0.12, 1.12, 180, 360),
                                 [(fw + 0.18, 1.0), (-fw - 0.18, 1.0)]]), hair)
    elif face.hair_style == 3:
        pen.ellipse(0, -0.15, fw + 0.28, 1.05, hair)
    for side in (-1, 1):
        pen.ellipse(side * fw * 0.98, face.ear_y, 0.1, 0.18, _scale(skin, 0.92))
    pen.ellipse(0, 0, fw, 1.0, skin, start=180, end=360)
    pen.ellipse(0, 0, fw, face.chin, skin, start=0, end=180)
    if face.hair_style:
        top = _arc(0, 0, fw + 0.03, 1.04, 180, 360, 11)
        line = _bezier((fw * 0.98, face.hairline + 0.25),
                       (0, face.hairline + rng.uniform(-0.05, 0.05)),
                       (-fw * 0.98, face.hairline + 0.25))
        pen.fill(np.concatenate([top, line]), hair)


def _draw_forehead_lines(pen: _Pen, face: _Identity, act) -> None:
    """Horizontal forehead furrows for raised brows, vertical glabella lines for lowered ones."""
    ex, ey = face.ex, face.ey
    if act["brow_raise"] > 0.3:
        c = _mix(face.skin, face.ink, 0.55 * act["brow_raise"])
        for k in range(2):
            y = ey - 0.36 - 0.1 * k
            pen.line(_bezier((-ex, y + 0.02), (0, y - 0.02), (ex, y + 0.02), 5), c, 0.02)
    if act["brow_lower"] > 0.35:
        c = _mix(face.skin, face.ink, 0.6 * act["brow_lower"])
        for side in (-1, 1):
            x = side * 0.04
            pen.line([(x, ey - 0.22), (x * 0.7, ey - 0.08)], c, 0.025)


def _draw_brows(pen: _Pen, face: _Identity, act) -> None:
    """Brows as thick curves: raise lifts and arches, inner-raise tilts the inner ends up,
    lower pulls the inner ends down and together."""
    color = _mix(face.hair, _scale(face.skin, 0.3), 0.45)
    r, q, l = act["brow_raise"], act["brow_inner"], act["brow_lower"]
    ex, length, by = face.ex, face.brow_len, face.ey - face.brow_gap
    for side in (-1, 1):
        inner = (side * (ex - 0.45 * length - 0.06 * l), by - 0.1 * r - 0.12 * q + 0.1 * l)
        mid = (side * (ex + 0.05 * length), by - 0.04 - 0.13 * r - 0.03 * q + 0.04 * l)
        outer = (side * (ex + 0.55 * length), by + 0.01 - 0.08 * r + 0.04 * q - 0.03 * l)
        pen.line(_bezier(inner, mid, outer, 6), color, face.brow_thick)


def _draw_eyes(pen: _Pen, face: _Identity, act) -> None:
    """Eyes whose opening follows the lid action; the cheek raise pushes the lower lid up."""
    ew, eh0 = face.ew, face.eh
    opening = 1 + 0.6 * act["lid"] - 0.3 * act["cheek"] - 0.15 * act["brow_lower"]
    eh = eh0 * min(1.9, max(0.15, opening))
    iris_r = eh0 * 0.95
    white = _mix(face.skin, (245, 245, 240), 0.75)
    lower_lid = _mix(face.skin, face.ink, 0.5)
    for side in (-1, 1):
        x, y = side * face.ex, face.ey + 0.25 * eh0 * act["cheek"]
        pen.ellipse(x, y, ew, eh, white)
        pen.ellipse(x + face.gaze, y, iris_r, min(iris_r, eh), face.iris)
        pen.ellipse(x + face.gaze, y, iris_r * 0.45, min(iris_r * 0.45, eh), (10, 10, 10))
        pen.ellipse(x, y, ew, eh, face.ink, 0.03, start=180, end=360)
        pen.ellipse(x, y, ew, eh, lower_lid, 0.015, start=0, end=180)
        if act["cheek"] > 0.4:  # crow's feet of a genuine smile
            c = _mix(face.skin, face.ink, 0.5 * act["cheek"])
            ox = x + side * (ew + 0.03)
            pen.line([(ox, y - 0.02), (ox + side * 0.05, y - 0.04)], c, 0.015)
            pen.line([(ox, y + 0.02), (ox + side * 0.05, y + 0.05)], c, 0.015)


def _nose_geometry(face: _Identity, act) -> tuple[float, float]:
    """Nose-tip height and half-width: the wrinkle action lifts and flares the nostrils."""
    w = max(act["wrinkle"], 0.0)
    return face.ny - 0.04 * w, face.nw * (1 + 0.25 * w)


def _draw_nose(pen: _Pen, face: _Identity, act) -> None:
    """Bridge shadow, nostrils and wing, with creases across the bridge when wrinkled."""
    ny, nw = _nose_geometry(face, act)
    ey, side, skin, ink = face.ey, face.nose_side, face.skin, face.ink
    pen.line(_bezier((side * 0.05, ey + 0.05), (side * 0.07, (ey + ny) / 2),
                     (side * nw * 0.8, ny - 0.07), 4), _mix(skin, ink, 0.35), 0.02)
    pen.line(_arc(0, ny - 0.02, nw, 0.05, 20, 160, 7), _mix(skin, ink, 0.6), 0.025)
    for s in (-1, 1):
        pen.ellipse(s * nw * 0.45, ny, 0.03, 0.018, _mix(skin, ink, 0.8))
    if act["wrinkle"] > 0.3:
        c = _mix(skin, ink, 0.7 * act["wrinkle"])
        for k in range(3):
            y = ey + 0.06 + 0.05 * k
            pen.line(_bezier((-0.07, y + 0.01), (0, y - 0.01), (0.07, y + 0.01), 4), c, 0.025)


def _draw_folds(pen: _Pen, face: _Identity, act) -> None:
    """Nasolabial folds, faint at rest and deepened by a smile or a nose wrinkle."""
    ny, nw = _nose_geometry(face, act)
    depth = max(0.15, 0.9 * act["cheek"], 0.9 * act["wrinkle"])
    c = _mix(face.skin, face.ink, 0.45 * depth)
    my, mw = face.my, face.mw
    for side in (-1, 1):
        pen.line(_bezier((side * (nw + 0.04), ny - 0.02), (side * (nw + mw) * 0.75, my - 0.06),
                         (side * (mw + 0.06), my + 0.04), 5), c, 0.025)


def _draw_mouth(pen: _Pen, face: _Identity, act) -> None:
    """Lips between two corners: the corners move up/down, the jaw opens an interior (oval when
    the lips are rounded, wide when stretched), a pressed mouth is a thin hard line, a raised
    upper lip or a smile shows teeth."""
    corner, jaw, press = act["corner"], max(act["jaw"], 0.0), min(max(act["press"], 0.0), 1.0)
    raise_ = max(act["lip_raise"], 0.0)
    my = face.my
    w = max(0.08, face.mw * (1 + 0.3 * act["stretch"] + 0.12 * max(corner, 0) - 0.25 * press))
    opening = 0.26 * jaw
    mid_top = my - 0.3 * opening - 0.05 * raise_ + 0.03 * max(corner, 0)
    mid_bot = max(mid_top, my + 0.7 * opening + 0.05 * max(corner, 0) + 0.02 * min(corner, 0))
    left, right = (-w, my - 0.12 * corner), (w, my - 0.12 * corner + 0.01 * raise_)
    lip_t = face.lip_t * (1 - 0.75 * press)
    skin = face.skin
    lips = (skin[0] * 0.85, skin[1] * 0.58, skin[2] * 0.6)

    inner_top = _bezier(left, (0, mid_top), right)
    inner_bot = _bezier(left, (0, mid_bot), right)
    pen.fill(np.concatenate([_bezier(left, (0, mid_top - lip_t), right), inner_top[::-1]]), lips)
    pen.fill(np.concatenate([inner_bot, _bezier(left, (0, mid_bot + 1.3 * lip_t), right)[::-1]]),
             lips)
    if mid_bot - mid_top > 0.02:
        pen.fill(np.concatenate([inner_top, inner_bot[::-1]]), (50, 20, 25))
        if max(corner, raise_) > 0.25:
            depth = min(0.5 * (mid_bot - mid_top), 0.06)
            teeth_bot = _bezier(left, (0, mid_top + depth), right)
            pen.fill(np.concatenate([inner_top, teeth_bot[::-1]]), (235, 230, 215))
    else:
        pen.line(inner_top, _scale(skin, 0.3), 0.025 + 0.04 * press)


def _draw_occluder(rng: random.Random, pen: _Pen, face: _Identity) -> None:
    """Something in front of the face: a bar, a hand, glasses, a hat or a face mask."""
    kind = rng.randrange(5)
    if kind == 0:  # bar / object crossing the face at a random height and angle
        y, h = rng.uniform(-0.6, 0.9), rng.uniform(0.12, 0.3)
        a = math.radians(rng.uniform(-35, 35))
        d = np.array([math.cos(a), math.sin(a)]) * 1.6
        n = np.array([-d[1], d[0]]) * h / 3.2
        c = np.array([rng.uniform(-0.3, 0.3), y])
        pen.fill([c - d - n, c + d - n, c + d + n, c - d + n], _rand_color(rng))
    elif kind == 1:  # hand: palm and fingers, a different tone than the face
        hand = _scale(face.skin, rng.uniform(0.85, 1.1))
        x, y = rng.uniform(-0.6, 0.6), rng.uniform(0.1, 0.9)
        tilt = rng.uniform(-40, 40)
        pen.ellipse(x, y + 0.25, 0.28, 0.3, hand, angle=tilt)
        for k in range(4):
            fx = x - 0.18 + 0.12 * k
            pen.ellipse(fx, y - 0.12, 0.055, 0.22, hand, angle=tilt)
            pen.ellipse(fx, y - 0.12, 0.055, 0.22, _scale(hand, 0.7), 0.015, angle=tilt)
    elif kind == 2:  # glasses over the eyes, sometimes tinted
        frame = _rand_color(rng, 0, 120)
        tint = _rand_color(rng, 0, 60) if rng.random() < 0.4 else None
        rx, ry = face.ew + 0.06, face.eh + 0.08
        for side in (-1, 1):
            if tint:
                pen.ellipse(side * face.ex, face.ey, rx, ry, tint)
            pen.ellipse(side * face.ex, face.ey, rx, ry, frame, 0.03)
        pen.line([(-face.ex + rx, face.ey - 0.02), (face.ex - rx, face.ey - 0.02)], frame, 0.03)
    elif kind == 3:  # hat down to a brim across the forehead
        brim = rng.uniform(-0.6, -0.3)
        hat = _rand_color(rng)
        pen.fill(np.concatenate([_arc(0, brim, 0.95, 0.9, 180, 360), [(0.95, brim)]]), hat)
        pen.ellipse(0, brim, 1.25, 0.1, _scale(hat, 0.8))
    else:  # face mask from the nose bridge down
        top = face.ny - rng.uniform(0.05, 0.2)
        mask = _mix(_rand_color(rng), (240, 240, 240), 0.5)
        pen.fill(np.concatenate([_bezier((-0.82, top + 0.05), (0, top - 0.03), (0.82, top + 0.05)),
                                 _bezier((0.7, 0.75), (0, 1.05), (-0.7, 0.75))]), mask)


def _camera(rng: random.Random, img: np.ndarray, color: bool) -> np.ndarray:
    """Lighting (brightness, contrast, a linear gradient, a colour cast), blur and sensor noise.
    All draws happen in both modes so grey and colour images show the same face."""
    s = img.shape[0]
    if s not in _GRIDS:
        g = np.linspace(-1, 1, s, dtype=np.float32)
        _GRIDS[s] = (g[None, :].repeat(s, 0), g[:, None].repeat(s, 1))
    gx, gy = _GRIDS[s]
    a, strength = rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.45)
    gain = rng.uniform(0.75, 1.2) * (1 + strength * (math.cos(a) * gx + math.sin(a) * gy))
    offset = rng.uniform(-25, 25)
    cast = np.array([rng.uniform(0.9, 1.1) for _ in range(3)], np.float32)
    sigma_blur = rng.uniform(0.0, 0.8)
    sigma_noise = rng.uniform(1.0, 7.0)
    start = rng.randrange(len(_NOISE_BANK) // 2)

    if color:
        out = img.astype(np.float32) * cast * gain[..., None]
    else:
        out = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32) * gain
    out += offset
    if sigma_blur > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), sigma_blur)
    out += sigma_noise * _noise(start, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def _noise(start: int, shape: tuple) -> np.ndarray:
    """Unit Gaussian noise read from the fixed bank at ``start``; images bigger than the bank
    (over ~590x590 RGB) tile it."""
    need = math.prod(shape)
    if start + need <= len(_NOISE_BANK):
        return _NOISE_BANK[start:start + need].reshape(shape)
    return np.resize(_NOISE_BANK[start:], need).reshape(shape)
