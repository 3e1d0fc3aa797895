"""Real photographs to check detectors on, made from pictures that semifer's dependencies ship,
so tests and benchmarks need no download and no file of ours.

Faces (public domain or CC0, per the shipping packages' notes):
- scikit-image ``astronaut``: Eileen Collins, NASA portrait, public domain;
- scikit-image ``camera``: the cameraman, CC0 (photographer Lav Varshney);
- matplotlib ``grace_hopper.jpg``: Grace Hopper, U.S. Navy portrait, public domain.
No face: scikit-image's ``coffee``, ``chelsea`` (a cat), ``rocket``, ``coins``, ``hubble_deep_field``
(CC0 or public domain).

``group_photo()`` stands these three people in two rows, five faces 56-80 px wide in a 1280 x 720
picture (4-6 % of its width: the faces of a group photo that a whole-picture BlazeFace pass
misses).
"""
from __future__ import annotations

import cv2
import numpy as np

# (source, face box x, y, w, h in it, head-and-shoulders crop x0, y0, x1, y1)
PEOPLE = {
    "astronaut": ((177, 62, 95, 110), (40, 0, 420, 420)),
    "grace_hopper": ((171, 140, 195, 200), (20, 30, 500, 560)),
    "camera": ((195, 115, 85, 95), (80, 20, 400, 400)),
}
NO_FACE = ("coffee", "chelsea", "rocket", "coins", "hubble_deep_field")
# (person, face width in px, mirrored, row: 0 back, 1 front)
GROUP = [("grace_hopper", 56, False, 0), ("astronaut", 64, True, 0), ("camera", 60, False, 0),
         ("astronaut", 80, False, 1), ("grace_hopper", 72, True, 1)]


def portrait(name: str) -> np.ndarray:
    """One of :data:`PEOPLE` (or any scikit-image sample) as RGB uint8 [H, W, 3]."""
    if name == "grace_hopper":
        import matplotlib.cbook
        from PIL import Image

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            return np.asarray(Image.open(f).convert("RGB"))
    from skimage import data

    im = getattr(data, name)()
    return np.repeat(im[:, :, None], 3, 2) if im.ndim == 2 else np.ascontiguousarray(im[:, :, :3])


def no_face_photos() -> dict[str, np.ndarray]:
    return {n: portrait(n) for n in NO_FACE}


def _person(name: str, face_w: int, mirror: bool) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Head-and-shoulders crop scaled so the face is ``face_w`` wide -> (rgb, face box in it)."""
    (fx, fy, fw, fh), (x0, y0, x1, y1) = PEOPLE[name]
    crop = portrait(name)[y0:y1, x0:x1]
    fx, fy = fx - x0, fy - y0
    if mirror:
        crop, fx = crop[:, ::-1], crop.shape[1] - fx - fw
    s = face_w / fw
    crop = cv2.resize(np.ascontiguousarray(crop), None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    return crop, (round(fx * s), round(fy * s), round(fw * s), round(fh * s))


def group_photo(width: int = 1280, height: int = 720) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Five people of :data:`GROUP` before a wall -> (RGB uint8 [height, width, 3], their face
    boxes). Each person is blended in with a soft-edged oval, so no pasted rectangle remains."""
    canvas = np.empty((height, width, 3), np.float32)
    canvas[:] = np.linspace([205, 200, 190], [150, 140, 130], height)[:, None]       # a lit wall
    boxes = []
    for k, (name, face_w, mirror, row) in enumerate(GROUP):
        im, (fx, fy, fw, fh) = _person(name, face_w, mirror)
        h, w = im.shape[:2]
        cx = round((k + 0.5) * width / len(GROUP))
        x0, y0 = min(max(cx - w // 2, 0), width - w), height - h - (0 if row else height // 8)
        ys, xs = np.mgrid[0:h, 0:w]
        oval = ((xs - w / 2) / (0.48 * w)) ** 2 + ((ys - h * 0.6) / (0.62 * h)) ** 2
        alpha = np.clip((1 - oval) * 4, 0, 1)[:, :, None]                          # [h, w, 1]
        region = canvas[y0:y0 + h, x0:x0 + w]
        region[:] = alpha * im + (1 - alpha) * region
        boxes.append((x0 + fx, y0 + fy, fw, fh))
    return canvas.round().astype(np.uint8), boxes
