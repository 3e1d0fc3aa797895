"""FERPlus (Barsoum et al., ICMI 2016): FER2013 faces relabelled by 10 annotators each.

Native layout, ``path`` being ``fer2013new.csv`` or the folder holding it:

* ``fer2013new.csv``: header ``Usage,Image name,neutral,happiness,surprise,sadness,anger,
  disgust,fear,contempt,unknown,NF``; one row per FER2013 row, in the same order; vote counts.
  A row with an empty ``Image name`` has no FERPlus image and is skipped.
* pixels, either image files named by ``Image name`` in ``FER2013Train`` / ``FER2013Valid`` /
  ``FER2013Test`` (as Microsoft's ``generate_training_data.py`` writes them) beside the CSV or
  under ``data/``, or else ``fer2013.csv`` beside it, matched row by row.

Splits train / val / test = Usage Training / PublicTest / PrivateTest; ``val_test`` is
PublicTest and PrivateTest merged (3,589 + 3,589 = 7,178 FER2013 rows), the test set SSFER
reports on. Item ids are the image names (``fer0000000.png``). Classes are ``labels.CANONICAL`` (8, with contempt); ``classes=7``
drops contempt-labelled rows and uses ``labels.BASIC7``.

Label modes (``mode=``), after FERPlus's convention of dropping images whose most-voted
column is ``unknown`` or ``NF`` (``NF`` = not a face):

* ``majority`` (default): the most-voted emotion; rows tied between emotions are dropped.
* ``probability`` / ``crossentropy``: soft target = votes normalised over the emotions.
* ``multi_target``: soft target = uniform over the emotions sharing the most votes.

``labels`` is the argmax of the soft target (first in canonical order on ties); ``soft_labels``
is [N, K] float32 over ``classes`` (majority mode keeps the normalised votes there).

``rule=`` chooses which votes count:

* ``plurality`` (default, semifer's earlier reading): all votes count; the rules above.
* ``reference``: Microsoft's FERPlus reader (``src/ferplus.py``, ``_process_data``), the rules
  the FERPlus paper's numbers come from. A single vote for a column is an outlier and is
  removed first; then ``majority`` keeps an image only when one column has more than half of
  the remaining votes; ``probability`` / ``crossentropy`` take the most-voted columns (at most
  3) until they hold 75 % of the votes and drop the image when they hold at most half of them
  or when unknown / NF is reached together with them; ``multi_target`` keeps the columns with
  at least 30 % of the votes (weighted by their votes, so ``labels`` is the most voted; the
  reference trains on them uniformly) and drops the image when they hold at most half. An image whose
  largest kept column is unknown or NF is dropped in every mode.

docs/ferplus.md lists the number of images each rule and mode yields per split.
"""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from semifer.data import labels as L
from semifer.data.base import DataError, Split, register_dataset
from semifer.data.readers.fer2013 import USAGE, decode_pixels, fer2013_rows, usage_of
from semifer.data.readers.generic import (
    ArrayImages, ImageFiles, check_options, check_split, choice_option, parse_int, read_csv,
    split_name,
)

SPLITS = ("train", "val", "test", "val_test")
MODES = ("majority", "probability", "crossentropy", "multi_target")
RULES = ("plurality", "reference")
# FER2013 Usage splits read for each split name: val_test is SSFER's merged test set.
USAGES = {"train": ("train",), "val": ("val",), "test": ("test",), "val_test": ("val", "test")}
CSV_NAME = "fer2013new.csv"
IMAGE_FOLDERS = {"train": "FER2013Train", "val": "FER2013Valid", "test": "FER2013Test"}
VOTE_COLUMNS = len(L.FERPLUS_VOTES) + 2  # the emotions, then unknown and NF
# Column j of the emotion votes is canonical class VOTE_TO_CANONICAL[j].
VOTE_TO_CANONICAL = np.array([L.CANONICAL.index(n) for n in L.FERPLUS_VOTES])


def ferplus_rows(path: str) -> Iterator[tuple[int, int, str, str, np.ndarray]]:
    """Yield ``(data row index, line, split, image name, votes [10] int64)`` per row."""
    rows = read_csv(path, "FERPlus label file")
    line, header = next(rows, (1, []))
    if len(header) != 2 + VOTE_COLUMNS or header[0].lower() != "usage":
        raise DataError(f"{path}:{line}: expected the header 'Usage,Image name,neutral,...,"
                        f"contempt,unknown,NF' ({2 + VOTE_COLUMNS} columns), got {header}")
    for index, (line, fields) in enumerate(rows):
        where = f"{path}:{line}"
        if len(fields) != 2 + VOTE_COLUMNS:
            raise DataError(f"{where}: expected {2 + VOTE_COLUMNS} fields (Usage, Image name, "
                            f"{VOTE_COLUMNS} vote counts), got {len(fields)}")
        if fields[0] not in USAGE:
            raise DataError(f"{where}: expected Usage {', '.join(USAGE)}, got {fields[0]!r}")
        votes = np.array([parse_int(v, where, "a vote count") for v in fields[2:]])
        if votes.min() < 0:
            raise DataError(f"{where}: expected vote counts >= 0, got {fields[2:]}")
        yield index, line, USAGE[fields[0]], fields[1], votes


def soft_target(votes: np.ndarray, mode: str) -> np.ndarray | None:
    """Votes [10] -> canonical soft target [8], or None when FERPlus drops the image."""
    top = votes.max()
    if top == 0 or votes[len(L.FERPLUS_VOTES):].max() == top:
        return None  # no votes, or unknown / not-a-face is the most voted
    emotions = np.zeros(len(L.CANONICAL))
    emotions[VOTE_TO_CANONICAL] = votes[:len(L.FERPLUS_VOTES)]
    winners = emotions == top
    if mode == "majority" and winners.sum() > 1:
        return None  # tied between emotions: no majority label
    if mode == "multi_target":
        return winners / winners.sum()
    return emotions / emotions.sum()


def reference_target(votes: np.ndarray, mode: str) -> np.ndarray | None:
    """Votes [10] -> canonical soft target [8] by Microsoft's FERPlus reader, or None when it
    drops the image (its ``_process_data``, then ``load_folders``' unknown / NF test)."""
    raw = np.where(votes > 1, votes, 0).astype(np.float64)      # single votes are outliers
    total = raw.sum()
    kept = np.zeros_like(raw)
    if mode == "majority":
        if raw.max() <= 0.5 * total:
            return None                                          # no strict majority
        kept[raw.argmax()] = raw.max()
    elif mode == "multi_target":
        kept = np.where(raw >= 0.3 * total, raw, 0.0)
        if kept.sum() <= 0.5 * total:
            return None
    else:                                                        # probability / crossentropy
        kept, count = _reference_top_columns(raw, total)
        if kept.sum() <= 0.5 * total or count > 3:
            return None
    if kept.argmax() >= len(L.FERPLUS_VOTES):
        return None                                              # unknown or not a face
    emotions = np.zeros(len(L.CANONICAL))
    emotions[VOTE_TO_CANONICAL] = kept[:len(L.FERPLUS_VOTES)]
    return emotions / emotions.sum()


def _reference_top_columns(raw: np.ndarray, total: float) -> tuple[np.ndarray, int]:
    """The reference reader's loop for probability / crossentropy: take the most-voted columns
    (all of a tie at once) until they hold 75 % of the votes or 3 are taken; reaching unknown
    or NF stops the loop, and that column is not kept when emotions came before it."""
    raw, kept = raw.copy(), np.zeros_like(raw)
    part, count, valid = 0.0, 0, True
    while part < 0.75 * total and count < 3 and valid:
        top = raw.max()
        for i in range(len(raw)):
            if raw[i] == top:
                kept[i], raw[i] = top, 0
                part, count = part + top, count + 1
                if i >= len(L.FERPLUS_VOTES):
                    valid = False
                    if kept.sum() > top:
                        kept[i], count = 0, count - 1
                    break
    return kept, count


def restrict(soft: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
    """Canonical soft targets [N, 8] -> [N, len(classes)], renormalised."""
    soft = soft[:, :len(classes)]
    return soft / soft.sum(axis=1, keepdims=True)


def image_folder(base: str, split: str) -> str | None:
    for folder in (base, os.path.join(base, "data")):
        if os.path.isdir(os.path.join(folder, IMAGE_FOLDERS[split])):
            return os.path.join(folder, IMAGE_FOLDERS[split])
    return None


def csv_pixels(fer_csv: str, plus_csv: str, wanted: list[int], split: str | tuple[str, ...]) -> np.ndarray:
    """Pixels [N, 48, 48] of the FER2013 rows ``wanted`` (sorted data row indices), checking
    that both files list the same rows in the same order."""
    position = {index: k for k, index in enumerate(wanted)}
    pixels = np.zeros((len(wanted), 48, 48), dtype=np.uint8)
    count = 0
    for index, line, _, row_split, text in fer2013_rows(fer_csv):
        count += 1
        if index in position:
            if row_split not in ((split,) if isinstance(split, str) else split):
                said = "/".join(usage_of(u) for u in ((split,) if isinstance(split, str) else split))
                raise DataError(f"{fer_csv}:{line}: Usage {usage_of(row_split)} but row {index} "
                                f"of {plus_csv} says {said}; the files do not match "
                                "row for row")
            pixels[position[index]] = decode_pixels(text, f"{fer_csv}:{line}")
    if wanted and count <= wanted[-1]:
        raise DataError(f"{fer_csv}: {count} data rows, but {plus_csv} refers to row "
                        f"{wanted[-1]}; expected the FER2013 CSV matching it row for row")
    return pixels


@register_dataset("ferplus")
def ferplus(path: str, split: str = "train", mode: str = "majority", classes: str = "8",
            rule: str = "plurality", **unknown) -> Split:
    check_options("ferplus", unknown)
    check_split(split, SPLITS, "ferplus")
    mode = choice_option(mode, "mode", MODES)
    rule = choice_option(rule, "rule", RULES)
    target = reference_target if rule == "reference" else soft_target
    usages = USAGES[split]
    class_list = L.BASIC7 if choice_option(classes, "classes", ("7", "8")) == "7" else L.CANONICAL
    plus_csv = path if os.path.isfile(path) else os.path.join(path, CSV_NAME)
    base = os.path.dirname(os.path.abspath(plus_csv))

    indices, ids, softs, usage = [], [], [], []
    for index, _, row_split, image, votes in ferplus_rows(plus_csv):
        soft = target(votes, mode) if row_split in usages and image else None
        if soft is not None and soft.argmax() < len(class_list):
            indices.append(index)
            ids.append(image)
            softs.append(soft)
            usage.append(row_split)
    if not ids:
        raise DataError(f"{plus_csv}: no usable rows with Usage {'/'.join(usage_of(u) for u in usages)} "
                        f"(split {split!r}, mode {mode}, classes={len(class_list)})")
    soft_labels = restrict(np.stack(softs), class_list).astype(np.float32)

    folders = {u: image_folder(base, u) for u in usages}
    fer_csv = os.path.join(base, "fer2013.csv")
    if all(folders.values()):
        load = ImageFiles([os.path.join(folders[u], image) for u, image in zip(usage, ids)])
    elif os.path.isfile(fer_csv):
        load = ArrayImages(csv_pixels(fer_csv, plus_csv, indices, usages))
    else:
        wanted = " and ".join(os.path.join(base, IMAGE_FOLDERS[u]) for u in usages)
        raise DataError(f"no FERPlus pixels for split {split!r}: expected the folder(s) "
                        f"{wanted} (or under data/) or {fer_csv}")
    # rule=plurality is left out of the name so earlier caches stay valid.
    extra = {} if rule == "plurality" else {"rule": rule}
    return Split(name=split_name("ferplus", plus_csv, split=split, mode=mode,
                                 classes=len(class_list), **extra),
                 classes=class_list, ids=ids, labels=soft_labels.argmax(axis=1).astype(np.int64),
                 load=load, soft_labels=soft_labels, grayscale=True)
