"""Generic layouts (``folder`` and ``csv``), plus the helpers every dataset reader shares.

``folder:<dir>``: ``<dir>/<class>/**/*.{jpg,jpeg,png,bmp,webp,tif,tiff}``, searched recursively
inside each class folder. When ``<dir>/<split>`` exists it is the class root, so
``folder:/data`` with ``split=test`` reads ``/data/test/<class>``.

``csv:<file.csv>``: rows ``path,label``, after an optional header row (recognised by a first
field that is not an image file name); paths are relative to the CSV's folder (absolute paths
are kept); a label is a class name, or an integer index into the ``classes=a,b,c`` option.

Options: ``labels=expression`` (default) maps class names onto the canonical expression space
(``labels.BASIC7``, or ``labels.CANONICAL`` when contempt appears); ``labels=custom`` keeps the
names as given (age groups, gender, ...): the folder names, or the CSV's distinct labels in
``classes=`` order when that option is given; otherwise sorted, integer names numerically.
"""
from __future__ import annotations

import csv as csvlib
import os
from typing import Iterator
from urllib.parse import urlencode

import numpy as np

from semifer.data import labels as L
from semifer.data.base import DataError, Split, read_image, register_dataset

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
STANDARD_SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------- shared helpers

class ImageFiles:
    """``load(i)`` for items stored one image per file. A class rather than a closure so a
    Split pickles into DataLoader worker processes."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __call__(self, i: int) -> np.ndarray:
        return read_image(self.paths[i])


class ArrayImages:
    """``load(i)`` for pixels already decoded into one uint8 array [N, H, W]."""

    def __init__(self, pixels: np.ndarray):
        self.pixels = pixels

    def __call__(self, i: int) -> np.ndarray:
        return self.pixels[i].copy()  # a fresh array, like a decoded file: safe to modify


def split_name(kind: str, source: str, **options) -> str:
    """Cache key ``kind:/abs/source?k=v``: one per distinct list of pixels and labels."""
    query = urlencode(sorted((k, str(v)) for k, v in options.items()))
    return f"{kind}:{os.path.abspath(source)}" + (f"?{query}" if query else "")


def check_split(split: str, valid, kind: str) -> None:
    if split not in valid:
        raise DataError(f"unknown {kind} split {split!r}; valid splits: {', '.join(valid)}")


def check_options(kind: str, unknown: dict) -> None:
    """Reject options a reader does not know: a typo must not silently change the data."""
    if unknown:
        raise DataError(f"unknown {kind} option(s): {', '.join(sorted(unknown))}")


def choice_option(value, key: str, allowed: tuple[str, ...]) -> str:
    value = str(value).strip().lower()
    if value not in allowed:
        raise DataError(f"option {key}={value!r}: expected one of {', '.join(allowed)}")
    return value


def flag_option(value, key: str) -> bool:
    """``1/0``, ``true/false``, ``yes/no`` (options arrive as strings from the spec)."""
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise DataError(f"option {key}={value!r}: expected 1 or 0")


def expression_name(name: str, where: str) -> str:
    """``labels.canonical_name`` raising ``DataError`` (which lists the known names)."""
    try:
        return L.canonical_name(name, where)
    except ValueError as e:
        raise DataError(str(e)) from None


def read_csv(path: str, what: str = "CSV file") -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line number, fields)`` for each non-blank row; a missing file is an error."""
    if not os.path.isfile(path):
        raise DataError(f"missing {what} {path}")
    # utf-8-sig: spreadsheet exports often start with a byte-order mark.
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csvlib.reader(f)
        try:
            for fields in reader:
                if any(cell.strip() for cell in fields):
                    yield reader.line_num, [cell.strip() for cell in fields]
        except (csvlib.Error, UnicodeDecodeError) as e:
            where = f"{path}:{reader.line_num + 1}"
            raise DataError(f"{where}: expected a UTF-8 text CSV: {e}") from None


def parse_int(text: str, where: str, expected: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{where}: expected {expected}, got {text!r}") from None


def natural_order(name: str) -> tuple:
    """Sort key putting integer-looking names in numeric order (``2`` before ``10``)."""
    return (0, int(name), "") if name.lstrip("-").isdigit() else (1, 0, name)


def list_images(folder: str) -> list[str]:
    """Image files under ``folder`` (recursive, sorted, hidden files and folders skipped)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files)
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTS)]
    return found


def class_folders(root: str) -> list[str]:
    """Sorted names of the class folders in ``root``; none at all is a layout error."""
    if not os.path.isdir(root):
        raise DataError(f"missing folder {root}")
    names = sorted(d for d in os.listdir(root)
                   if not d.startswith(".") and os.path.isdir(os.path.join(root, d)))
    if not names:
        raise DataError(f"no class folders in {root}; expected {root}/<class>/<image files>")
    return names


def scan_class_folders(root: str, classes: tuple[str, ...], class_of: dict[str, str]
                       ) -> tuple[list[str], np.ndarray, list[str]]:
    """Images of ``root/<folder>/**``, labelled ``classes.index(class_of[folder])``.

    Returns (ids relative to ``root``, labels [N] int64, absolute paths)."""
    ids, targets, paths = [], [], []
    for folder, cls in sorted(class_of.items()):
        for path in list_images(os.path.join(root, folder)):
            ids.append(os.path.relpath(path, root).replace(os.sep, "/"))
            targets.append(classes.index(cls))
            paths.append(path)
    if not ids:
        raise DataError(f"no image files ({', '.join(IMAGE_EXTS)}) in the class folders of {root}")
    return ids, np.asarray(targets, dtype=np.int64), paths


def expression_folders(root: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """Map each class folder of ``root`` onto the canonical expression space."""
    class_of = {f: expression_name(f, f"class folder {os.path.join(root, f)}")
                for f in class_folders(root)}
    return L.expression_classes(class_of.values()), class_of


def basic7_folder_split(kind: str, root: str, expected: str, grayscale: bool = False) -> Split:
    """``root/<class>/`` folders of a dataset with exactly the 7 basic expressions (no contempt);
    ``expected`` spells the dataset's own folder names for the error."""
    classes, class_of = expression_folders(root)
    if classes != L.BASIC7:
        raise DataError(f"{root}: {kind} has the 7 basic expressions; expected class folders {expected}, "
                        f"found {', '.join(sorted(class_of))}")
    ids, targets, paths = scan_class_folders(root, classes, class_of)
    return Split(name=split_name(kind, root), classes=classes, ids=ids, labels=targets,
                 load=ImageFiles(paths), grayscale=grayscale)


# --------------------------------------------------------------------------- folder

def folder_root(path: str, split: str) -> str:
    """``path/split`` when it exists; else ``path`` itself, unless ``path`` is visibly split
    into other standard splits (then the requested one is missing, not the class root)."""
    if os.path.isdir(os.path.join(path, split)):
        return os.path.join(path, split)
    present = [s for s in STANDARD_SPLITS if os.path.isdir(os.path.join(path, s))]
    if present:
        raise DataError(f"no split {split!r} in {path}: found split folders {', '.join(present)}")
    return path


@register_dataset("folder")
def folder(path: str, split: str = "train", labels: str = "expression", **unknown) -> Split:
    check_options("folder", unknown)
    mode = choice_option(labels, "labels", ("expression", "custom"))
    root = folder_root(path, split)
    if mode == "custom":
        classes = tuple(sorted(class_folders(root), key=natural_order))
        class_of = {c: c for c in classes}
    else:
        classes, class_of = expression_folders(root)
    ids, targets, paths = scan_class_folders(root, classes, class_of)
    name = split_name("folder", root, **({"labels": mode} if mode == "custom" else {}))
    return Split(name=name, classes=classes, ids=ids, labels=targets, load=ImageFiles(paths))


# --------------------------------------------------------------------------- csv

def csv_rows(path: str) -> list[tuple[int, str, str]]:
    """(line, image path, label text) per data row; a first row whose path is not an image
    file name (``path,label``, ``file,gender``, ...) is a header."""
    rows = []
    for line, fields in read_csv(path):
        if len(fields) != 2 or not fields[0] or not fields[1]:
            raise DataError(f"{path}:{line}: expected 2 fields 'path,label', got {fields}")
        if line == 1 and not fields[0].lower().endswith(IMAGE_EXTS):
            continue
        rows.append((line, fields[0], fields[1]))
    if not rows:
        raise DataError(f"{path}: no data rows; expected lines 'path,label'")
    return rows


def csv_label_names(path: str, rows, names: tuple[str, ...] | None, custom: bool) -> list[str]:
    """Each row's label as a name: integers index ``names`` (the ``classes=`` option); without
    that option, custom labels are names even when they look like integers (age 20, gender 0)."""
    out = []
    for line, _, label in rows:
        if label.lstrip("-").isdigit() and not (custom and names is None):
            if names is None:
                raise DataError(f"{path}:{line}: integer label {label!r} needs the option "
                                f"classes=<name0>,<name1>,... to name the classes")
            index = int(label)
            if not 0 <= index < len(names):
                raise DataError(f"{path}:{line}: expected a label in 0..{len(names) - 1} "
                                f"(classes={','.join(names)}), got {label}")
            label = names[index]
        elif names is not None and label not in names:
            raise DataError(f"{path}:{line}: label {label!r} is not one of classes="
                            f"{','.join(names)}")
        out.append(label)
    return out


@register_dataset("csv")
def csv(path: str, split: str = "train", labels: str = "expression", classes: str | None = None,
        **unknown) -> Split:
    """One CSV is one split, so ``split`` does not select rows."""
    check_options("csv", unknown)
    mode = choice_option(labels, "labels", ("expression", "custom"))
    names = tuple(c.strip() for c in classes.split(",")) if classes else None
    rows = csv_rows(path)
    row_names = csv_label_names(path, rows, names, custom=mode == "custom")
    if mode == "custom":
        class_list = names or tuple(sorted(set(row_names), key=natural_order))
        targets = [class_list.index(n) for n in row_names]
    else:
        canon = [expression_name(n, f"{path}:{line}") for n, (line, _, _) in zip(row_names, rows)]
        # Naming contempt in classes= asks for the 8-class space even if no row uses it.
        declared = [expression_name(n, "option classes=") for n in names or ()]
        class_list = L.expression_classes(canon + declared)
        targets = [class_list.index(c) for c in canon]
    folder_of_csv = os.path.dirname(os.path.abspath(path))
    paths = [os.path.join(folder_of_csv, rel) for _, rel, _ in rows]
    options = {**({"labels": mode} if mode == "custom" else {}),
               **({"classes": ",".join(names)} if names else {})}
    return Split(name=split_name("csv", path, **options), classes=class_list,
                 ids=[rel for _, rel, _ in rows], labels=np.asarray(targets, dtype=np.int64),
                 load=ImageFiles(paths))
