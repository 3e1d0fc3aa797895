"""The prediction table (CSV or JSON, written row by row) and annotated pictures."""
from __future__ import annotations

import csv
import json
import math
from typing import NamedTuple

import cv2
import numpy as np

from semifer.data.faces import Face

FIXED = ["file", "frame", "time_s", "face", "track", "x", "y", "w", "h", "score"]


def columns(classes: list[str]) -> list[str]:
    """file, frame, time_s, face, track, x, y, w, h, score, one column per class, label."""
    return FIXED + list(classes) + ["label"]


def make_row(file: str, frame: int | None, time_s: float | None, index: int, track: int | None,
             face: Face | None, box: tuple[int, int, int, int], probs: np.ndarray,
             classes: list[str]) -> dict:
    """One table row; frame, time_s and track are None for still images, score for crops."""
    row = {"file": file, "frame": frame, "time_s": None if time_s is None else round(time_s, 3),
           "face": index, "track": track, "x": box[0], "y": box[1], "w": box[2], "h": box[3],
           "score": None if face is None else round(face.score, 4)}
    row.update({c: round(float(p), 5) for c, p in zip(classes, probs)})
    row["label"] = classes[int(np.argmax(probs))]
    return row


class RowWriter:
    """Streams rows to ``path`` as CSV (empty cells for None) or as one JSON array, so a long
    video never holds its table in memory."""

    def __init__(self, path: str, fmt: str, cols: list[str]):
        self.fmt, self.cols, self.n = fmt, cols, 0
        self.f = open(path, "w", newline="")
        if fmt == "csv":
            self.csv = csv.DictWriter(self.f, cols)
            self.csv.writeheader()
        else:
            self.f.write("[")

    def write(self, row: dict) -> None:
        if self.fmt == "csv":
            self.csv.writerow(row)
        else:
            self.f.write(("," if self.n else "") + "\n  " + json.dumps(row))
        self.n += 1

    def close(self) -> None:
        if self.fmt == "json":
            self.f.write("\n]\n")
        self.f.close()

    def __enter__(self) -> "RowWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


BOX_BGR, TEXT_BGR = (0, 200, 0), (0, 0, 0)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def no_face_row(file: str, classes: list[str]) -> dict:
    """The row of an image where no face was found: its file, every other cell empty."""
    return {c: None for c in columns(classes)} | {"file": file}


def _overlap(a: tuple, b: tuple) -> int:
    """Intersection area of two (x, y, w, h) rectangles."""
    return (max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
            * max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])))


class Label(NamedTuple):
    text: str
    x: int                  # top-left corner of the filled background, in pixels
    y: int
    w: int
    h: int
    scale: float            # cv2 font scale and stroke thickness
    thick: int
    pad: int                # background margin around the text


def label_layout(rows: list[dict], height: int, width: int) -> list[Label]:
    """Where each row's label goes, in a height x width picture.

    The font grows with the picture (1/1000 of its longer side) but shrinks to about 1.6 face
    widths, so a label does not cover the faces beside it; never below 0.4, still legible on
    its filled background. The label goes above its box, else below, else right-aligned
    above / below, else inside its top: the first place inside the picture that covers no
    other box and no label placed before; failing all, the place that covers least."""
    boxes = [(r["x"], r["y"], r["w"], r["h"]) for r in rows]
    out: list[Label] = []
    for i, r in enumerate(rows):
        x, y, w, h = boxes[i]
        text = f"{r['label']} {r[r['label']]:.2f}"
        (tw1, _), _ = cv2.getTextSize(text, FONT, 1.0, 1)
        scale = max(0.4, min(max(height, width) / 1000, 1.6 * w / tw1))
        thick = max(1, round(scale * 1.5))
        (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
        pad = max(2, round(th / 4))
        lw, lh = tw + 2 * pad, th + base + 2 * pad
        spots = [(x, y - lh), (x, y + h), (x + w - lw, y - lh), (x + w - lw, y + h), (x, y)]
        spots = [(min(max(sx, 0), max(width - lw, 0)), min(max(sy, 0), max(height - lh, 0))) for sx, sy in spots]
        others = [b for j, b in enumerate(boxes) if j != i] + [lab[1:5] for lab in out]
        cost = [sum(_overlap((sx, sy, lw, lh), o) for o in others) for sx, sy in spots]
        sx, sy = spots[cost.index(min(cost))]      # the first of the least-covering places
        out.append(Label(text, sx, sy, lw, lh, scale, thick, pad))
    return out


def draw(rgb: np.ndarray, rows: list[dict]) -> np.ndarray:
    """BGR copy of ``rgb`` with each row's box, and its label and probability in dark text on
    a filled background of the box's colour (placed by :func:`label_layout`)."""
    out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    height, width = rgb.shape[:2]
    line = max(1, round(max(height, width) / 400))
    for r in rows:
        cv2.rectangle(out, (r["x"], r["y"]), (r["x"] + r["w"], r["y"] + r["h"]), BOX_BGR, line)
    for lab in label_layout(rows, height, width):
        cv2.rectangle(out, (lab.x, lab.y), (lab.x + lab.w - 1, lab.y + lab.h - 1), BOX_BGR, cv2.FILLED)
        th = cv2.getTextSize(lab.text, FONT, lab.scale, lab.thick)[0][1]
        cv2.putText(out, lab.text, (lab.x + lab.pad, lab.y + lab.pad + th), FONT, lab.scale, TEXT_BGR,
                    lab.thick, cv2.LINE_AA)
    return out


def round_fps(fps: float) -> float:
    """A usable output frame rate when a capture reports none (webcams often do)."""
    return fps if fps and math.isfinite(fps) and fps > 0 else 25.0
