"""CNN detectors whose weights ship inside their wheels, so they run offline once installed.

``mtcnn``: facenet-pytorch's MTCNN, 5 landmarks: eyes, nose, mouth corners.
``pip install semifer[mtcnn]`` (facenet-pytorch 2.5.3: later releases pin torch<2.3).
MediaPipe's BlazeFace, the default, is in ``blazeface.py``.
"""
from __future__ import annotations

import numpy as np

from semifer.data.faces.base import Face, clip_box, has_module, register_detector


@register_detector("mtcnn")
class MtcnnDetector:
    requires = "pip install 'semifer[mtcnn]'"

    @staticmethod
    def available() -> bool:
        return has_module("facenet_pytorch")

    def __init__(self, min_score: float = 0.9, min_size: int = 20, device: str = "cpu"):
        from facenet_pytorch import MTCNN

        self.min_score = min_score
        self.net = MTCNN(keep_all=True, min_face_size=min_size, device=device)

    def detect(self, image: np.ndarray) -> list[Face]:
        h, w = image.shape[:2]
        boxes, scores, marks = self.net.detect(image, landmarks=True)
        if boxes is None:  # MTCNN's way of saying "no face"
            return []
        faces = []
        for b, s, m in zip(boxes, scores, marks):
            box = clip_box(*b, w, h)
            if box and s >= self.min_score:
                faces.append(Face(box, float(s), tuple((float(x), float(y)) for x, y in m)))
        return faces
