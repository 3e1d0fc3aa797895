"""Labelled arrays of a dataset split, prepared for a trained model (its size, channels, classes)."""
from __future__ import annotations

import numpy as np

from semifer.data.base import DataError, open_split
from semifer.data.cache import decode_split


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
