"""One unlabelled pool read from several sources: the faces MAE pre-trains on (SSFER stage I).

SSFER pre-trains on ~1.2 M faces gathered from face-recognition sets and FER sets. A pool is a
list of sources, each decoded once into the shared cache and indexed together as one set:

* ``images:/folder``: every image file under the folder, recursively; nothing else is needed;
* a dataset spec (``rafdb:/data/RAF-DB/basic``, ``folder:/photos``, ``fer2013:/data/fer2013``):
  one split of it, labels ignored. The split is the pool's (``train``) unless the spec names
  its own, e.g. ``affectnet:/data/AffectNet?split=val``.

Sources come as a list (YAML) or one comma-separated string. A source that cannot be read, that
holds no decodable image, or that is listed twice is an error naming it, so a typo in one of
ten paths does not silently shrink the pool.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from semifer.data.base import DataError, Split, open_split, parse_spec
from semifer.data.cache import decode_split
from semifer.data.readers.generic import IMAGE_EXTS, ImageFiles, list_images

IMAGES = "images:"  # prefix of an unlabelled image folder


def parse_sources(sources: str | list[str]) -> list[str]:
    """A YAML list or a comma-separated string -> the non-empty specs, stripped, in order."""
    items = sources.split(",") if isinstance(sources, str) else list(sources)
    specs = [str(s).strip() for s in items if str(s).strip()]
    if not specs:
        raise DataError("no pre-training sources given; list dataset specs or images:/folder")
    seen = set()
    for s in specs:
        if s in seen:
            raise DataError(f"pre-training source {s!r} is listed twice (its images would count double)")
        seen.add(s)
    return specs


def image_folder_split(path: str) -> Split:
    """Every image file under ``path`` (recursively, hidden ones skipped) as an unlabelled Split."""
    if not os.path.isdir(path):
        raise DataError(f"{path}: not a folder")
    files = list_images(path)
    if not files:
        raise DataError(f"{path}: no image files ({', '.join(IMAGE_EXTS)}) found")
    return Split(f"{IMAGES}{os.path.abspath(path)}", ("unlabelled",), [os.path.relpath(f, path) for f in files],
                 np.zeros(len(files), np.int64), ImageFiles(files))


def source_split(spec: str, split: str = "train") -> tuple[Split, str]:
    """(Split, split name read) of one source; any failure names the source."""
    try:
        if spec.startswith(IMAGES):
            return image_folder_split(spec[len(IMAGES):]), ""
        chosen = parse_spec(spec)[2].get("split", split)
        return open_split(spec, split=split), chosen
    except (DataError, KeyError, OSError) as e:
        why = e.args[0] if isinstance(e, KeyError) and e.args else e  # str(KeyError) adds quotes
        hint = "" if spec.startswith(IMAGES) else " (an unlabelled folder is images:/path)"
        raise DataError(f"pre-training source {spec!r}: {why}{hint}") from None


@dataclass
class PoolSource:
    spec: str
    split: str             # the split read; "" for an image folder
    images: np.ndarray     # [N, H, W, C] uint8, memory-mapped decode cache
    keep: np.ndarray       # [M] rows of ``images`` that decoded
    unreadable: int


@dataclass
class Pool:
    sources: list[PoolSource]
    channels: int

    def __len__(self) -> int:
        return int(sum(len(s.keep) for s in self.sources))

    @property
    def offsets(self) -> np.ndarray:
        """[S] index of each source's first image in the pool."""
        sizes = [len(s.keep) for s in self.sources]
        return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)

    @property
    def arrays(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(s.images, s.keep) for s in self.sources]

    def gather(self, flat: np.ndarray) -> np.ndarray:
        return gather(self.arrays, flat, self.offsets)

    def report(self) -> list[dict]:
        """Per source: spec, split read, images used, images that could not be decoded."""
        return [{"source": s.spec, "split": s.split, "images": int(len(s.keep)), "unreadable": s.unreadable}
                for s in self.sources]


def report_lines(report: list[dict]) -> list[str]:
    """A pool's per-source counts (``Pool.report()``) as printed at the start of a run."""
    total, out = max(sum(r["images"] for r in report), 1), []
    for r in report:
        split = f" [{r['split']}]" if r["split"] else ""
        bad = f", {r['unreadable']} unreadable skipped" if r["unreadable"] else ""
        out.append(f"  {r['source']}{split}: {r['images']:,} images ({100 * r['images'] / total:.1f} %){bad}")
    return out


def open_pool(sources: str | list[str], split: str, size: int, channels: int, cache_dir: str) -> Pool:
    """Read and decode every source (``channels`` 0 = the first source's: 1 for gray data, else 3)."""
    specs = parse_sources(sources)
    splits = [source_split(s, split) for s in specs]
    channels = channels or (1 if splits[0][0].grayscale else 3)
    out = []
    for spec, (sp, chosen) in zip(specs, splits):
        dec = decode_split(sp, size, channels, cache_dir)
        keep = np.flatnonzero(dec.ok)
        if not len(keep):
            raise DataError(f"pre-training source {spec!r}: none of its {len(sp)} images could be decoded "
                            f"(first error: {dec.errors[0][1] if dec.errors else 'none recorded'})")
        out.append(PoolSource(spec, chosen, dec.images, keep, len(dec.errors)))
    return Pool(out, channels)


def gather(arrays: list[tuple[np.ndarray, np.ndarray]], flat: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Pool indices -> uint8 [B, H, W, C] in the order given; ``arrays`` holds (images, keep) per source."""
    src = np.searchsorted(offsets, flat, side="right") - 1
    out = [None] * len(flat)
    for s in np.unique(src):
        sel = np.flatnonzero(src == s)
        images, keep = arrays[s]
        rows = keep[flat[sel] - offsets[s]]
        order = np.argsort(rows)  # memmap reads in increasing order
        got = images[rows[order]]
        for j, k in enumerate(sel[order]):
            out[k] = got[j]
    return np.stack(out)
