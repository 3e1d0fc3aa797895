"""FER2013 (Goodfellow et al., ICML 2013 challenge): 48x48 grayscale faces, 7 classes.

Native layouts, ``path`` being either:

* ``fer2013.csv`` (or a folder holding it): header ``emotion,pixels,Usage``; ``emotion`` 0-6 =
  angry, disgust, fear, happy, sad, surprise, neutral; ``pixels`` 2304 space-separated
  0-255 values, row-major 48x48; ``Usage`` Training / PublicTest / PrivateTest = splits
  train / val / test. Item ids are ``csv-row-<n>``, n counting data rows from 0.
* a folder ``<path>/<split>/<class>/*.{png,jpg,jpeg}``, classes angry, disgust, fear, happy,
  neutral, sad, surprise. Item ids are paths relative to ``<path>/<split>``.

Folders win when ``<path>/<split>`` exists. Labels are canonical (``labels.BASIC7``).
"""
from __future__ import annotations

import os
import warnings
from typing import Iterator

import numpy as np

from semifer.data import labels as L
from semifer.data.base import DataError, Split, register_dataset
from semifer.data.readers.generic import (
    ArrayImages, basic7_folder_split, check_options, check_split, parse_int, read_csv, split_name,
)

SPLITS = ("train", "val", "test")
USAGE = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
SIZE = 48
CSV_NAME = "fer2013.csv"


def usage_of(split: str) -> str:
    return next(usage for usage, s in USAGE.items() if s == split)


def fer2013_rows(path: str) -> Iterator[tuple[int, int, int, str, str]]:
    """Yield ``(data row index, line, emotion, split, pixel text)`` per row of fer2013.csv.

    Columns are found by header name, so the ``emotion,Usage,pixels`` ordering of some
    redistributions reads too."""
    rows = read_csv(path, "FER2013 CSV file")
    line, header = next(rows, (1, []))
    column = {name.lower(): i for i, name in enumerate(header)}
    missing = [c for c in ("emotion", "pixels", "usage") if c not in column]
    if missing:
        raise DataError(f"{path}:{line}: expected a header with columns emotion, pixels, Usage; "
                        f"got {header}")
    for index, (line, fields) in enumerate(rows):
        if len(fields) != len(header):
            raise DataError(f"{path}:{line}: expected {len(header)} fields "
                            f"({','.join(header)}), got {len(fields)}")
        emotion = parse_int(fields[column["emotion"]], f"{path}:{line}", "an emotion 0-6")
        if emotion not in L.FER2013_NATIVE:
            raise DataError(f"{path}:{line}: expected an emotion 0-6, got {emotion}")
        usage = fields[column["usage"]]
        if usage not in USAGE:
            raise DataError(f"{path}:{line}: expected Usage {', '.join(USAGE)}, got {usage!r}")
        yield index, line, emotion, USAGE[usage], fields[column["pixels"]]


def decode_pixels(text: str, where: str) -> np.ndarray:
    """2304 space-separated values -> uint8 [48, 48]."""
    with warnings.catch_warnings():
        # numpy warns (and will raise) on text it cannot parse to the end: treat both as bad.
        warnings.simplefilter("error", DeprecationWarning)
        try:
            values = np.fromstring(text, dtype=np.int64, sep=" ")
        except (ValueError, DeprecationWarning):
            values = None
    if values is None:
        got = "unparsable text"
    elif values.size != SIZE * SIZE:
        got = f"{values.size} values"
    elif values.min() < 0 or values.max() > 255:
        got = f"values from {values.min()} to {values.max()}"
    else:
        return values.astype(np.uint8).reshape(SIZE, SIZE)
    raise DataError(f"{where}: expected {SIZE * SIZE} space-separated pixel values in "
                    f"0..255 ({SIZE}x{SIZE}), got {got}")


def read_csv_split(path: str, split: str) -> Split:
    ids, targets, pixels = [], [], []
    for index, line, emotion, row_split, text in fer2013_rows(path):
        if row_split == split:
            ids.append(f"csv-row-{index}")
            targets.append(L.BASIC7.index(L.FER2013_NATIVE[emotion]))
            pixels.append(decode_pixels(text, f"{path}:{line}"))
    if not ids:
        raise DataError(f"{path}: no rows with Usage {usage_of(split)} (split {split!r})")
    return Split(name=split_name("fer2013", path, split=split), classes=L.BASIC7, ids=ids,
                 labels=np.asarray(targets, dtype=np.int64),
                 load=ArrayImages(np.stack(pixels)), grayscale=True)


def read_folder_split(root: str) -> Split:
    return basic7_folder_split("fer2013", root, "angry, disgust, fear, happy, neutral, sad, surprise",
                               grayscale=True)


@register_dataset("fer2013")
def fer2013(path: str, split: str = "train", **unknown) -> Split:
    check_options("fer2013", unknown)
    check_split(split, SPLITS, "fer2013")
    if os.path.isfile(path):
        return read_csv_split(path, split)
    if os.path.isdir(os.path.join(path, split)):
        return read_folder_split(os.path.join(path, split))
    if os.path.isfile(os.path.join(path, CSV_NAME)):
        return read_csv_split(os.path.join(path, CSV_NAME), split)
    present = [s for s in SPLITS if os.path.isdir(os.path.join(path, s))]
    if present:
        raise DataError(f"no split {split!r} in {path}: found split folders "
                        f"{', '.join(present)} and no {CSV_NAME}")
    raise DataError(f"{path}: expected {CSV_NAME} or folders {path}/<split>/<class>/*.png "
                    f"(splits {', '.join(SPLITS)})")
