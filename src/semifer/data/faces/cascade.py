"""Classical boosted-cascade detectors that need no downloaded weights.

``haar``: OpenCV's bundled ``haarcascade_frontalface_default.xml``. OpenCV 5 moved cascades out
of the main package, so this needs ``opencv-python(-headless)<5``.
``lbp``: scikit-image's bundled LBP frontal-face cascade; slower and less precise than the
others, but scikit-image installs everywhere, so some detector always works offline.
Both find frontal faces only and give no landmarks.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from semifer.data.faces.base import Face, has_module, nms, register_detector


@register_detector("haar")
class HaarDetector:
    """Viola-Jones Haar cascade. ``score`` is the logistic of the final stage's weight."""

    requires = "OpenCV with CascadeClassifier, i.e. pip install 'opencv-python-headless<5'"

    @staticmethod
    def available() -> bool:
        return hasattr(cv2, "CascadeClassifier") and hasattr(cv2, "data")

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 24):
        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        if self.cascade.empty():
            raise RuntimeError(f"cannot load OpenCV's Haar cascade from {cv2.data.haarcascades}")
        self.kw = dict(scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(min_size, min_size))

    def detect(self, image: np.ndarray) -> list[Face]:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        boxes, _, weights = self.cascade.detectMultiScale3(gray, outputRejectLevels=True, **self.kw)
        return [Face(tuple(int(v) for v in b), 1 / (1 + math.exp(-float(s))))
                for b, s in zip(boxes, np.ravel(weights))]


@register_detector("lbp")
class LbpDetector:
    """scikit-image's LBP cascade with its own neighbour grouping, then NMS to merge the
    overlapping groups it leaves (the larger box wins). ``score`` is 1: the cascade gives no
    confidence."""

    requires = "pip install scikit-image"

    @staticmethod
    def available() -> bool:
        return has_module("skimage")

    def __init__(self, scale_factor: float = 1.2, step_ratio: float = 1.0, min_size: int = 24,
                 min_neighbors: int = 6):
        from skimage import data
        from skimage.feature import Cascade

        self.cascade = Cascade(data.lbp_frontal_face_cascade_filename())
        self.kw = dict(scale_factor=scale_factor, step_ratio=step_ratio, min_size=(min_size, min_size),
                       min_neighbor_number=min_neighbors)

    def detect(self, image: np.ndarray) -> list[Face]:
        found = self.cascade.detect_multi_scale(img=image, max_size=image.shape[:2], **self.kw)
        boxes = np.array([(d["c"], d["r"], d["width"], d["height"]) for d in found], dtype=np.float32)
        keep = nms(boxes, boxes[:, 2] if len(boxes) else boxes, iou=0.3)
        return [Face(tuple(int(v) for v in boxes[i]), 1.0) for i in keep]
