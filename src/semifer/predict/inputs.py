"""Everything ``Predictor.predict`` accepts, turned into RGB uint8 [H, W, 3] arrays the way
training decoded its images (``read_image``'s rules for 16-bit, palette and alpha)."""
from __future__ import annotations

import os
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from PIL import Image

from semifer.data.base import DataError, read_image
from semifer.data.faces import as_rgb_uint8

_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I")  # integer modes read_image scales to 8 bits


def pil_to_rgb(im: Image.Image) -> np.ndarray:
    """PIL image -> RGB uint8, converting modes as ``read_image`` does."""
    if im.mode in _DEEP_MODES:
        return as_rgb_uint8(np.asarray(im))
    if im.mode not in ("L", "RGB"):
        im = im.convert("L" if im.mode == "LA" else "RGB")
    return as_rgb_uint8(np.asarray(im))


def tensor_to_rgb(t: torch.Tensor) -> np.ndarray:
    """uint8 / uint16 tensor [C, H, W] (C = 1, 3, 4) or [H, W] -> RGB uint8."""
    if t.is_floating_point() or t.is_complex():
        raise DataError(f"expected a uint8 or uint16 tensor, got {t.dtype}")
    arr = t.detach().cpu()
    if arr.ndim == 3:
        arr = arr.permute(1, 2, 0)
    # Older torch cannot hand uint16 to numpy; int32 holds it exactly.
    return as_rgb_uint8(arr.numpy() if arr.dtype == torch.uint8 else arr.to(torch.int32).numpy())


def to_rgb(item: Any) -> np.ndarray:
    """One image (path, PIL image, numpy array [H, W(, 1|3|4)], or tensor [(C,) H, W]) ->
    RGB uint8 [H, W, 3]; raises ``DataError`` naming what was wrong."""
    if isinstance(item, (str, os.PathLike)):
        return as_rgb_uint8(read_image(os.fspath(item)))
    if isinstance(item, Image.Image):
        return pil_to_rgb(item)
    if isinstance(item, np.ndarray):
        return as_rgb_uint8(item)
    if isinstance(item, torch.Tensor):
        return tensor_to_rgb(item)
    raise DataError(f"cannot read an image from a {type(item).__name__}")


def image_name(item: Any, index: int) -> str:
    """The path for files, else ``"#<index>"``."""
    return os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"#{index}"


def as_items(images: Any) -> Iterable[Any]:
    """One image or many: a list/tuple/iterator, or a 4-D array / tensor as a batch."""
    if isinstance(images, (list, tuple)) or isinstance(images, Iterator):
        return images
    if getattr(images, "ndim", 0) == 4:
        return list(images)
    return [images]
