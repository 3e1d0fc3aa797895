"""SFEW 2.0 (Dhall et al., EmotiW 2015): aligned faces from film stills, 7 classes.

Native layout: ``<path>/Train/<Class>/*.png`` and ``<path>/Val/<Class>/*.png``, classes Angry,
Disgust, Fear, Happy, Neutral, Sad, Surprise. The test labels were never released, so only
train and val can be read. Item ids are paths relative to the split folder (``Happy/x.png``).
Labels are canonical (``labels.BASIC7``).
"""
from __future__ import annotations

import os

from semifer.data.base import DataError, Split, register_dataset
from semifer.data.readers.generic import (
    basic7_folder_split, check_options, check_split,
)

FOLDERS = {"train": "Train", "val": "Val"}


@register_dataset("sfew")
def sfew(path: str, split: str = "train", **unknown) -> Split:
    check_options("sfew", unknown)
    if split == "test":
        raise DataError("SFEW 2.0 test labels are not public; valid splits: train, val")
    check_split(split, tuple(FOLDERS), "sfew")
    root = os.path.join(path, FOLDERS[split])
    return basic7_folder_split("sfew", root, "Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise")
