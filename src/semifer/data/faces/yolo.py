"""A YOLOv8-face detector exported to ONNX, loaded from a file the user supplies, run with
ONNX Runtime (nothing is downloaded: pass ``model_path``)."""
from __future__ import annotations

import cv2
import numpy as np

from semifer.data.faces.base import Face, clip_box, has_module, nms, register_detector


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, int, int]:
    """Fit an RGB image into size x size keeping its aspect, centred on gray (114) as YOLO
    trains -> (float32 [1, 3, size, size] in [0, 1], scale, x offset, y offset)."""
    h, w = image.shape[:2]
    r = min(size / h, size / w)
    nw, nh = max(1, round(w * r)), max(1, round(h * r))
    dx, dy = (size - nw) // 2, (size - nh) // 2
    canvas = np.full((size, size, 3), 114, np.uint8)
    canvas[dy:dy + nh, dx:dx + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return canvas.transpose(2, 0, 1)[None].astype(np.float32) / 255, r, dx, dy


@register_detector("yolo_face")
class YoloFaceDetector:
    """Expects YOLOv8-face's layout: input [1, 3, S, S] RGB in [0, 1]; output [1, 5 + P*K, N]
    (or its transpose [1, N, 5 + P*K]) holding per anchor cx, cy, w, h, face score, then
    ``landmarks`` points of P = 2 (x, y) or 3 (x, y, visibility) values, in input pixels."""

    requires = "pip install onnxruntime, and model_path=FILE.onnx"

    @staticmethod
    def available() -> bool:
        return has_module("onnxruntime")

    def __init__(self, model_path: str, min_score: float = 0.5, iou: float = 0.4, size: int = 640,
                 landmarks: int = 5):
        import onnxruntime as ort

        self.session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.size = inp.shape[-1] if isinstance(inp.shape[-1], int) else size  # a fixed export wins
        self.min_score, self.iou, self.landmarks = min_score, iou, landmarks

    def _points(self, row: np.ndarray) -> tuple[tuple[float, float], ...] | None:
        """Landmark columns of one anchor row -> K (x, y) points in letterbox pixels."""
        extra = len(row) - 5
        if not extra or extra % self.landmarks or extra // self.landmarks not in (2, 3):
            return None
        pts = row[5:].reshape(self.landmarks, -1)
        return tuple((float(x), float(y)) for x, y in pts[:, :2])

    def detect(self, image: np.ndarray) -> list[Face]:
        h, w = image.shape[:2]
        x, r, dx, dy = letterbox(image, self.size)
        out = self.session.run(None, {self.input_name: x})[0][0]        # [C, N] or [N, C]
        rows = out.T if out.shape[0] < out.shape[1] else out            # [N, C]
        rows = rows[rows[:, 4] >= self.min_score]
        boxes = np.stack([rows[:, 0] - rows[:, 2] / 2, rows[:, 1] - rows[:, 3] / 2,
                          rows[:, 2], rows[:, 3]], 1)                   # [N, 4] x, y, w, h
        faces = []
        for i in nms(boxes, rows[:, 4], self.iou):
            bx, by, bw, bh = boxes[i]
            box = clip_box((bx - dx) / r, (by - dy) / r, (bx + bw - dx) / r, (by + bh - dy) / r, w, h)
            pts = self._points(rows[i])
            marks = None if pts is None else tuple(((px - dx) / r, (py - dy) / r) for px, py in pts)
            if box:
                faces.append(Face(box, float(rows[i, 4]), marks))
        return faces
