"""The prediction table (CSV or JSON, written row by row) and annotated pictures."""
from __future__ import annotations

import csv
import json
import math

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


def draw(rgb: np.ndarray, rows: list[dict]) -> np.ndarray:
    """BGR copy of ``rgb`` with each row's box, label and probability drawn on it."""
    out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    thick = max(1, round(max(rgb.shape[:2]) / 400))
    scale = max(0.4, max(rgb.shape[:2]) / 1000)
    for r in rows:
        x, y, w, h = r["x"], r["y"], r["w"], r["h"]
        cv2.rectangle(out, (x, y), (x + w, y + h), (0, 255, 0), thick)
        text = f"{r['label']} {r[r['label']]:.2f}"
        ty = y - 4 if y > 20 * scale else y + h + int(18 * scale)
        cv2.putText(out, text, (x, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 255, 0), thick, cv2.LINE_AA)
    return out


def round_fps(fps: float) -> float:
    """A usable output frame rate when a capture reports none (webcams often do)."""
    return fps if fps and math.isfinite(fps) and fps > 0 else 25.0
