"""Face alignment by cropping: a square around the detected box, a margin of context, border
replication where the square leaves the picture, then the model's input size."""
from __future__ import annotations

import cv2
import numpy as np

from semifer.data.faces.base import Face, detect_faces


def square_around(box: tuple[float, float, float, float], margin: float = 0.2) -> tuple[int, int, int]:
    """(x, y, w, h) -> (x0, y0, side) of the square centred on the box whose side is the box's
    longer side plus ``margin`` of it on each side (side = max(w, h) * (1 + 2 * margin))."""
    x, y, w, h = box
    side = max(1, round(max(w, h) * (1 + 2 * margin)))
    return round(x + w / 2 - side / 2), round(y + h / 2 - side / 2), side


def crop_face(image: np.ndarray, box: tuple[float, float, float, float], margin: float = 0.2,
              size: int | None = None) -> np.ndarray:
    """Square crop of ``image`` [H, W] or [H, W, C] around ``box`` (see :func:`square_around`),
    padded by replicating the border where it leaves the image, resized to ``size`` x ``size``
    when given (area averaging when shrinking, bilinear when enlarging, as the training cache
    resizes). Returns an array with the input's dtype and channel layout."""
    h, w = image.shape[:2]
    x0, y0, side = square_around(box, margin)
    pad = (max(0, -y0), max(0, y0 + side - h), max(0, -x0), max(0, x0 + side - w))  # t, b, l, r
    crop = image[max(0, y0):min(h, y0 + side), max(0, x0):min(w, x0 + side)]
    if crop.size == 0:
        raise ValueError(f"box {box} lies outside the {w}x{h} image")
    if any(pad):
        crop = cv2.copyMakeBorder(crop, *pad, cv2.BORDER_REPLICATE).reshape(side, side, *image.shape[2:])
    if size is not None and side != size:
        interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        crop = cv2.resize(crop, (size, size), interpolation=interp).reshape(size, size, *image.shape[2:])
    return np.ascontiguousarray(crop)


def face_crops(detector, image: np.ndarray, margin: float = 0.2,
               max_side: int = 1280) -> list[tuple[Face, np.ndarray]]:
    """(face, crop) for every face ``detector`` finds in an RGB uint8 image, most confident
    first; detection runs at ``max_side`` at most, crops come from full resolution."""
    faces = sorted(detect_faces(detector, image, max_side), key=lambda f: -f.score)
    return [(f, crop_face(image, f.box, margin)) for f in faces]
