"""``semifer explain`` on disk: which class each image explains, and the overlays, table and
example grid written for them (the maps themselves come from ``cam.py``)."""
from __future__ import annotations

import csv
import glob
import os
import sys

import numpy as np


def explain_targets(target: str, classes: list[str], labels: np.ndarray | None, n: int) -> np.ndarray | None:
    """The class explained per image: ``pred`` (None: each image's predicted class), ``true``
    (the labels of a dataset spec) or one class name for all ``n`` images."""
    if target == "pred":
        return None
    if target == "true":
        if labels is None:
            raise ValueError("--target true needs a dataset spec --input (files carry no label)")
        return labels
    if target in classes:
        return np.full(n, classes.index(target))
    raise ValueError(f"--target {target!r}: expected pred, true or one of {classes}")


def clear_overlays(out: str) -> None:
    """Remove an earlier run's ``cam_*.png``, so the folder holds only this run's overlays."""
    old = glob.glob(os.path.join(out, "cam_*.png"))
    for path in old:
        os.remove(path)
    if old:
        print(f"note: removed {len(old)} overlay(s) of an earlier explain in {out}", file=sys.stderr)


def grid(panels: list[np.ndarray], cols: int = 4) -> np.ndarray:
    """Equal-sized RGB panels [h, w, 3] laid out ``cols`` to a row on white -> one RGB image."""
    h, w, _ = panels[0].shape
    rows = (len(panels) + cols - 1) // cols
    out = np.full((rows * h, min(cols, len(panels)) * w, 3), 255, dtype=np.uint8)
    for i, p in enumerate(panels):
        out[(i // cols) * h:(i // cols + 1) * h, (i % cols) * w:(i % cols + 1) * w] = p
    return out


def write_explanations(out: str, images: np.ndarray, cams: np.ndarray, logits: np.ndarray,
                       targets: np.ndarray | None, labels: np.ndarray | None, classes: list[str],
                       names: list[str], size: int = 192) -> int:
    """One ``cam_<i>_<class>.png`` (image | map) per image, ``explain.csv`` (prediction,
    probability, class explained, share of the map above 0.3) and ``examples.png`` (the first
    16 overlays) in ``out``, after removing an earlier run's overlays; returns the panel count."""
    from PIL import Image

    from semifer.analysis.cam import overlay

    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    os.makedirs(out, exist_ok=True)
    clear_overlays(out)
    panels = []
    with open(os.path.join(out, "explain.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "input", "true", "predicted", "probability", "explained", "focused_share"])
        for i, (img, cam) in enumerate(zip(images, cams)):
            pred = int(probs[i].argmax())
            explained = pred if targets is None else int(targets[i])
            panel = overlay(img, cam, size)
            fname = f"cam_{i:04d}_{classes[explained]}.png"
            Image.fromarray(panel).save(os.path.join(out, fname))
            panels.append(panel)
            w.writerow([fname, names[i], classes[labels[i]] if labels is not None else "", classes[pred],
                        f"{probs[i, pred]:.4f}", classes[explained], f"{(cam > 0.3).mean():.3f}"])
    Image.fromarray(grid(panels[:16])).save(os.path.join(out, "examples.png"))
    return len(panels)
