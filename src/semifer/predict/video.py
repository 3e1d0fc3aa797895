"""Video as a stream: frames decoded one at a time, faces followed across frames by box overlap,
and per-face probabilities smoothed over time."""
from __future__ import annotations

from typing import Iterator

import cv2
import numpy as np

from semifer.data.base import DataError


def open_video(source: str | int) -> cv2.VideoCapture:
    """A file path or a webcam index -> an opened capture; ``DataError`` when it cannot open."""
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        what = f"webcam {source}" if isinstance(source, int) else f"video {source}"
        raise DataError(f"cannot open {what} (unsupported format, missing codec or no device)")
    return cap


def iter_frames(cap: cv2.VideoCapture, stride: int = 1) -> Iterator[tuple[int, float, np.ndarray]]:
    """(frame index, time in seconds, RGB uint8 frame) for every ``stride``-th frame. Skipped
    frames are only grabbed, not decoded; memory stays one frame whatever the length."""
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    index = 0
    while cap.grab():
        if index % stride == 0:
            ok, bgr = cap.retrieve()
            if not ok:
                break
            yield index, (index / fps if fps > 0 else 0.0), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        index += 1


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (x, y, w, h) boxes [N, 4] and [M, 4] -> [N, M]."""
    a, b = a[:, None].astype(np.float64), b[None].astype(np.float64)
    w = np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    h = np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = w.clip(0) * h.clip(0)
    return inter / (a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter + 1e-9)


class IoUTracker:
    """Gives each box a track id: greedily the free track of highest IoU (at least ``min_iou``)
    with its last box, else a new id. Tracks unseen for more than ``max_age`` calls end."""

    def __init__(self, min_iou: float = 0.3, max_age: int = 10):
        self.min_iou, self.max_age = min_iou, max_age
        self.tracks: dict[int, tuple[np.ndarray, int]] = {}   # id -> (last box, last step)
        self.step, self.next_id = 0, 0

    def update(self, boxes: list[tuple[int, int, int, int]]) -> list[int]:
        self.step += 1
        self.tracks = {t: v for t, v in self.tracks.items() if self.step - v[1] <= self.max_age}
        ids = list(self.tracks)
        ov = iou(np.array(boxes).reshape(-1, 4), np.array([self.tracks[t][0] for t in ids]).reshape(-1, 4))
        out: list[int | None] = [None] * len(boxes)
        for flat in np.argsort(-ov, axis=None):           # best overlaps first
            i, j = np.unravel_index(flat, ov.shape)
            if ov[i, j] < self.min_iou:
                break
            if out[i] is None and ids[j] is not None:
                out[i], ids[j] = ids[j], None
        for i, box in enumerate(boxes):
            if out[i] is None:
                out[i], self.next_id = self.next_id, self.next_id + 1
            self.tracks[out[i]] = (np.array(box), self.step)
        return out


class Smoother:
    """Exponential smoothing per track: ``s_t = alpha * s_{t-1} + (1 - alpha) * p_t``; a new
    track starts at its first probabilities. ``alpha = 0`` leaves probabilities unchanged."""

    def __init__(self, alpha: float):
        if not 0 <= alpha < 1:
            raise ValueError(f"smoothing alpha must be in [0, 1), got {alpha}")
        self.alpha, self.state = alpha, {}

    def __call__(self, track: int, probs: np.ndarray) -> np.ndarray:
        prev = self.state.get(track)
        s = probs if prev is None else self.alpha * prev + (1 - self.alpha) * probs
        self.state[track] = s
        return s

    def forget(self, live: set[int]) -> None:
        """Drop tracks the tracker has ended, keeping memory flat on long videos."""
        self.state = {t: s for t, s in self.state.items() if t in live}
