"""Decode once: a split's images, resized, as one memory-mapped uint8 array [N, H, W, C].

The file is keyed by the split's name, the size and the channel count, so every later run and
every epoch reads raw bytes instead of decoding JPEGs. Items that fail to decode are recorded
(id and reason) and masked out, unless ``strict``.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from semifer.data.base import DataError, Split
from semifer.io import atomic_path


@dataclass
class Decoded:
    images: np.ndarray          # [N, H, W, C] uint8 (memory-mapped)
    ok: np.ndarray              # [N] bool: False where the image could not be decoded
    errors: list[tuple[str, str]]  # (id, reason) of every bad item


def _fit(img: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Resize to size x size and convert to ``channels`` channels -> [H, W, C]."""
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 3 and channels == 1:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[:, :, None]
    elif img.shape[2] == 1 and channels == 3:
        img = np.repeat(img, 3, axis=2)
    if img.shape[:2] != (size, size):
        interp = cv2.INTER_AREA if min(img.shape[:2]) > size else cv2.INTER_LINEAR
        img = cv2.resize(img, (size, size), interpolation=interp).reshape(size, size, channels)
    return img


def cache_key(split: Split, size: int, channels: int) -> str:
    raw = f"{split.name}|{len(split)}|{size}|{channels}|v1"
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def decode_split(split: Split, size: int, channels: int, cache_dir: str, strict: bool = False,
                 workers: int = 4, progress: bool = True) -> Decoded:
    """Return the decoded array of ``split``, building the cache file on first use."""
    os.makedirs(cache_dir, exist_ok=True)
    base = os.path.join(cache_dir, cache_key(split, size, channels))
    shape = (len(split), size, size, channels)
    if os.path.exists(base + ".json"):
        with open(base + ".json") as f:
            meta = json.load(f)
        images = np.memmap(base + ".u8", dtype=np.uint8, mode="r", shape=shape)
        errors = [tuple(e) for e in meta["errors"]]
        if strict and errors:
            raise DataError(f"{len(errors)} unreadable images in {split.name}, first: {errors[0][1]}")
        return Decoded(images, np.asarray(meta["ok"], dtype=bool), errors)

    # Two runs may build the same cache at once: each writes its own temporary files and the
    # last rename wins (both hold the same pixels).
    with atomic_path(base + ".u8") as tmp:
        ok, errors = _decode_into(split, tmp, shape, size, channels, strict, workers, progress)
    with atomic_path(base + ".json") as tmp:  # written last: it marks the cache complete
        with open(tmp, "w") as f:
            json.dump({"split": split.name, "shape": shape, "ok": ok.tolist(), "errors": errors}, f)
    return Decoded(np.memmap(base + ".u8", dtype=np.uint8, mode="r", shape=shape), ok, errors)


def _decode_into(split: Split, path: str, shape: tuple, size: int, channels: int, strict: bool,
                 workers: int, progress: bool) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Decode every image of ``split`` into a new uint8 memmap at ``path``; returns which
    decoded and the (id, error) of those that did not."""
    images = np.memmap(path, dtype=np.uint8, mode="w+", shape=shape)
    ok = np.ones(len(split), dtype=bool)
    errors: list[tuple[str, str]] = []

    def work(i: int):
        try:
            images[i] = _fit(split.load(i), size, channels)
        except DataError as e:
            if strict:
                raise
            ok[i] = False
            errors.append((split.ids[i], str(e)))

    items = range(len(split))
    with ThreadPoolExecutor(workers) as pool:
        iterator = pool.map(work, items)
        if progress and len(split) > 2000:
            from tqdm import tqdm
            iterator = tqdm(iterator, total=len(split), desc=f"decoding {split.name}", leave=False)
        for _ in iterator:
            pass
    images.flush()  # the memmap is closed when this function returns, before the rename
    return ok, errors
