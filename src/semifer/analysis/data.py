"""Images prepared for a trained model (its size, channels, classes): the labelled arrays of a
dataset split, or the faces of image files as ``semifer predict`` crops them."""
from __future__ import annotations

import os
import sys

import numpy as np

from semifer.data.base import DataError, open_split
from semifer.data.cache import decode_split, fit_image


def model_arrays(spec: str, meta: dict, split: str = "test", cache_dir: str = ".cache/semifer",
                 limit: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(uint8 images [N, S, S, C], labels [N] in the model's class order, ids) of ``spec``'s
    ``split``. Items of classes the model was not trained on and unreadable images are left out;
    ``limit`` > 0 keeps a seeded random subset of that many items."""
    data = open_split(spec, split=split)
    dec = decode_split(data, meta["size"], meta["in_chans"], cache_dir)
    lookup = {c: i for i, c in enumerate(meta["classes"])}
    labels = np.array([lookup.get(data.classes[y], -1) for y in data.labels], dtype=np.int64)
    keep = np.flatnonzero(dec.ok & (labels >= 0))
    if not len(keep):
        raise DataError(f"{spec} (split {split}) has no readable item of the model's classes {meta['classes']}")
    if 0 < limit < len(keep):
        keep = np.sort(np.random.default_rng(seed).choice(keep, size=limit, replace=False))
    return np.asarray(dec.images[keep]), labels[keep], [data.ids[i] for i in keep]


def image_inputs(spec: str, meta: dict, split: str = "test", cache_dir: str = ".cache/semifer", limit: int = 0,
                 detector: str = "none", margin: float = 0.2,
                 max_side: int = 1280) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """(uint8 images [N, S, S, C], labels or None, names) from an image, a folder or a dataset
    spec. Files are face crops unless ``detector`` (``auto`` or a name) finds the faces of photos."""
    from semifer.predict.inputs import to_rgb
    from semifer.predict.run import expand_input

    if os.path.exists(spec):
        files, root = expand_input(spec)
        files = files[:limit] if limit > 0 else files
        names = [os.path.relpath(f, root) if root else os.path.basename(f) for f in files]
        crops, crop_names = [to_rgb(f) for f in files], names
        if detector != "none":                                   # photos: one crop per detected face
            crops, crop_names = face_crops_of(crops, names, detector, margin, max_side)
        else:
            warn_large_crops(crops, names, meta["size"])
        images = np.stack([fit_image(c, meta["size"], meta["in_chans"]) for c in crops])
        return images, None, crop_names
    if ":" not in spec:
        raise FileNotFoundError(f"--input {spec!r} is neither an existing image/folder nor a dataset spec (name:path)")
    return model_arrays(spec, meta, split, cache_dir, limit)


def warn_large_crops(crops: list, names: list[str], size: int) -> None:
    """Without a detector a whole photo is squeezed to one model input; say so when an image is
    much larger than a face crop (a heuristic: > 3x the model's input and > 400 px)."""
    limit = max(3 * size, 400)
    large = [(n, c.shape) for c, n in zip(crops, names) if max(c.shape[:2]) > limit]
    for name, (h, w) in [(n, sh[:2]) for n, sh in large[:3]]:
        print(f"warning: {name} is {w}x{h} px and is explained as one face crop; pass --detector auto "
              f"to explain each face of a photo", file=sys.stderr)
    if len(large) > 3:
        print(f"warning: {len(large) - 3} more image(s) larger than {limit} px", file=sys.stderr)


def face_crops_of(photos: list, names: list[str], detector: str, margin: float = 0.2,
                  max_side: int = 1280) -> tuple[list, list[str]]:
    """Every detected face of every photo, cropped as ``semifer predict`` crops it; names get
    ``#face<j>`` (most confident first). A photo without a face is reported and skipped."""
    from semifer.data.faces import create_detector, face_crops

    found_by = create_detector(detector)
    crops, crop_names = [], []
    for rgb, name in zip(photos, names):
        found = face_crops(found_by, rgb, margin, max_side)
        if not found:
            print(f"note: no face found in {name}; skipped", file=sys.stderr)
        crops += [crop for _, crop in found]
        crop_names += [f"{name}#face{j}" for j in range(len(found))]
    if not crops:
        raise ValueError(f"--detector {detector}: no face found in any of {len(photos)} input image(s)")
    return crops, crop_names
