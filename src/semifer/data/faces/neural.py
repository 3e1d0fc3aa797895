"""CNN detectors whose weights ship inside their wheels, so they run offline once installed.

``mediapipe``: BlazeFace (full-range model), 6 landmarks: right eye, left eye, nose tip, mouth
centre, right ear tragion, left ear tragion. ``pip install semifer[mediapipe]``; mediapipe
0.10.21 declares numpy<2 and protobuf<5, though its face detector runs with numpy 2.
``mtcnn``: facenet-pytorch's MTCNN, 5 landmarks: eyes, nose, mouth corners.
``pip install semifer[mtcnn]`` (facenet-pytorch 2.5.3: later releases pin torch<2.3).
"""
from __future__ import annotations

import numpy as np

from semifer.data.faces.base import Face, clip_box, has_module, register_detector


@register_detector("mediapipe")
class MediapipeDetector:
    requires = "pip install 'semifer[mediapipe]'"

    @staticmethod
    def available() -> bool:
        return has_module("mediapipe")

    def __init__(self, min_score: float = 0.5, full_range: bool = True):
        import mediapipe as mp

        # The full-range model also finds small faces (up to ~5 m from the camera).
        self.net = mp.solutions.face_detection.FaceDetection(
            model_selection=int(full_range), min_detection_confidence=min_score)

    def detect(self, image: np.ndarray) -> list[Face]:
        h, w = image.shape[:2]
        faces = []
        for d in self.net.process(image).detections or []:
            r = d.location_data.relative_bounding_box
            box = clip_box(r.xmin * w, r.ymin * h, (r.xmin + r.width) * w, (r.ymin + r.height) * h, w, h)
            marks = tuple((k.x * w, k.y * h) for k in d.location_data.relative_keypoints)
            if box:
                faces.append(Face(box, float(d.score[0]), marks))
        return faces


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
