"""Decode once: a split's images, resized, as one memory-mapped uint8 array [N, H, W, C].

The file is keyed by the split's name, the size, the channel count and its listing (every
item's id and label, and the size and mtime of every file read, or the bytes of pixels held in
memory), so every later run and every epoch reads raw bytes instead of decoding JPEGs, and any
change to the data (an image moved to another class folder, edited in place, added) rebuilds
it: a key on the name alone served one image's pixels under another's label. Items that fail
to decode are recorded (id and reason) and masked out, unless ``strict``.
"""
from __future__ import annotations

import contextlib
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
    key: str = ""               # cache_key: file name of the array in the cache folder


def fit_image(img: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Resize to size x size and convert to ``channels`` channels -> [H, W, C]: how every cached
    image was made, so prediction prepares a face crop the same way."""
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


def listing(split: Split) -> dict[str, str]:
    """Digests of what the pixels come from: ``items`` (ids and labels, in order) and
    ``sources`` (size and mtime of each file a loader with ``.paths`` reads, or the bytes of a
    loader with ``.pixels``; empty for generated data, whose name says it all)."""
    items = hashlib.sha1()
    for i, y in zip(split.ids, np.asarray(split.labels).tolist()):
        items.update(f"{i}\t{y}\n".encode())
    sources = hashlib.sha1()
    for path in getattr(split.load, "paths", None) or ():
        try:
            st = os.stat(path)
            sources.update(f"{path}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:  # a missing file is reported when it is decoded
            sources.update(f"{path}\tmissing\n".encode())
    pixels = getattr(split.load, "pixels", None)
    if pixels is not None:
        sources.update(np.ascontiguousarray(pixels).data)
    return {"items": items.hexdigest()[:16], "sources": sources.hexdigest()[:16]}


def _slot(split: Split, size: int, channels: int) -> str:
    """Key of a split at a size, whatever its listing: where the last build is recorded."""
    return hashlib.sha1(f"{split.name}|{size}|{channels}".encode()).hexdigest()[:16]


def cache_key(split: Split, size: int, channels: int, lst: dict | None = None) -> str:
    lst = lst or listing(split)
    raw = f"{split.name}|{len(split)}|{size}|{channels}|{lst['items']}|{lst['sources']}|v2"
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def _why_rebuild(cache_dir: str, slot: str, n: int, lst: dict) -> tuple[str, str | None]:
    """(reason, key of the stale build or None) from the slot's record of the last build."""
    try:
        with open(os.path.join(cache_dir, slot + ".slot.json")) as f:
            last = json.load(f)
    except (OSError, ValueError):
        return "first use", None
    if last.get("count") != n:
        why = f"{n} items instead of {last.get('count')}"
    elif last.get("items") != lst["items"]:
        why = "item ids or labels changed (files added, removed, renamed or moved between classes)"
    else:
        why = "image files changed on disk (size or modification time)"
    return why, last.get("key")


def decode_split(split: Split, size: int, channels: int, cache_dir: str, strict: bool = False,
                 workers: int = 4, progress: bool = True) -> Decoded:
    """Return the decoded array of ``split``, building the cache file on first use."""
    os.makedirs(cache_dir, exist_ok=True)
    lst = listing(split)
    key = cache_key(split, size, channels, lst)
    base = os.path.join(cache_dir, key)
    shape = (len(split), size, size, channels)
    if os.path.exists(base + ".json"):
        with open(base + ".json") as f:
            meta = json.load(f)
        images = np.memmap(base + ".u8", dtype=np.uint8, mode="r", shape=shape)
        errors = [tuple(e) for e in meta["errors"]]
        if strict and errors:
            raise DataError(f"{len(errors)} unreadable images in {split.name}, first: {errors[0][1]}")
        return Decoded(images, np.asarray(meta["ok"], dtype=bool), errors, key)

    slot = _slot(split, size, channels)
    why, stale = _why_rebuild(cache_dir, slot, len(split), lst)
    if stale is not None and stale != key:
        print(f"decode cache for {split.name} at {size}px: rebuilding, {why}")
    # Two runs may build the same cache at once: each writes its own temporary files and the
    # last rename wins (both hold the same pixels).
    with atomic_path(base + ".u8") as tmp:
        ok, errors = _decode_into(split, tmp, shape, size, channels, strict, workers, progress)
    with atomic_path(base + ".json") as tmp:  # written last: it marks the cache complete
        with open(tmp, "w") as f:
            json.dump({"split": split.name, "shape": shape, "ok": ok.tolist(), "errors": errors}, f)
    with atomic_path(os.path.join(cache_dir, slot + ".slot.json")) as tmp:
        with open(tmp, "w") as f:
            json.dump({"split": split.name, "key": key, "count": len(split), **lst}, f)
    if stale is not None and stale != key:  # the stale build can never be read again
        for ext in (".json", ".u8"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(cache_dir, stale + ext))
    return Decoded(np.memmap(base + ".u8", dtype=np.uint8, mode="r", shape=shape), ok, errors, key)


def _decode_into(split: Split, path: str, shape: tuple, size: int, channels: int, strict: bool,
                 workers: int, progress: bool) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Decode every image of ``split`` into a new uint8 memmap at ``path``; returns which
    decoded and the (id, error) of those that did not."""
    images = np.memmap(path, dtype=np.uint8, mode="w+", shape=shape)
    ok = np.ones(len(split), dtype=bool)
    errors: list[tuple[str, str]] = []

    def work(i: int):
        try:
            images[i] = fit_image(split.load(i), size, channels)
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
