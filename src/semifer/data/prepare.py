"""From a ``DataConfig`` to arrays ready for training: decoded images, labelled/unlabelled split.

The config object is duck-typed (any object with DataConfig's fields), so the data layer does
not import the rest of semifer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from semifer.data import protocols
from semifer.data.base import DataError, Split, open_split
from semifer.data.cache import decode_split


@dataclass
class Prepared:
    """Everything the engine holds about the data, the hidden truth and the test set included;
    an algorithm gets ``train_view()`` only."""
    classes: tuple[str, ...]
    channels: int
    train_ids: list[str]
    train_images: np.ndarray       # [N, H, W, C] uint8
    train_labels: np.ndarray       # [N] labels used for training (label noise applied)
    true_labels: np.ndarray        # [N] original labels: hidden truth for pseudo-label diagnostics
    labelled: np.ndarray           # indices into the train split
    unlabelled: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    test_name: str
    errors: list[tuple[str, str]]  # unreadable images (train and test)
    flipped: np.ndarray            # indices whose label was flipped by label noise
    cache_dir: str = ""            # where the decoded arrays live (per-image caches go beside them)
    train_cache_key: str = ""      # key of the decoded train array in cache_dir
    test_ids: list[str] = field(default_factory=list)   # one per test image, for per-image outputs
    # The validation split that drives periodic evaluation and the best checkpoint (empty: none).
    val_images: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1, 1), np.uint8))
    val_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    val_name: str = ""             # "" when there is no validation split
    val_ids: list[str] = field(default_factory=list)
    val_source: str = ""           # "dataset" (the train dataset's own val split) | "val_fraction" | ""

    def train_view(self) -> TrainView:
        """What an algorithm may see (``TrainView``); the engine keeps the rest."""
        labels = np.full(len(self.train_labels), -1, dtype=self.train_labels.dtype)
        labels[self.labelled] = self.train_labels[self.labelled]
        return TrainView(self.classes, self.channels, self.train_images, labels, self.labelled.copy(),
                         self.unlabelled.copy(), self.cache_dir, self.train_cache_key)


@dataclass(frozen=True)
class TrainView:
    """The training data as an algorithm sees it (``Algorithm.setup_data``): the train split's
    images, the labelled items with their labels, the unlabelled items without. No true label of
    an unlabelled item and no test or validation set: the engine scores pseudo-labels against the
    truth it holds. No item ids either: a folder dataset's ids name the class (``happy/0001.png``).
    Batch indices (``batch["x_idx"]``, ``batch["u_idx"]``) index ``images`` and ``labels``;
    under ``data.protocol=kfold`` ``images`` also holds the held-out fold's rows, and with
    ``data.val_fraction`` the validation rows, which no index of the view or of a batch points at."""
    classes: tuple[str, ...]
    channels: int
    images: np.ndarray             # [N, H, W, C] uint8, the train split
    labels: np.ndarray             # [N] training label of each labelled item (label noise applied), -1 elsewhere
    labelled: np.ndarray           # indices into the train split
    unlabelled: np.ndarray
    cache_dir: str = ""            # where the decoded arrays live (per-image caches go beside them)
    cache_key: str = ""            # key of the decoded train array in cache_dir


def _open_test(cfg, train: Split) -> tuple[Split, str]:
    """The test split and the split name it was read under."""
    spec = cfg.test or cfg.train
    try:
        return open_split(spec, split=cfg.test_split), cfg.test_split
    except DataError as e:
        if cfg.test_split != "test" or "split" not in str(e):
            raise
        print(f"note: {spec} has no 'test' split ({e}); evaluating on its 'val' split")
        return open_split(spec, split="val"), "val"


def _own_val(cfg, train: Split, test_name: str, test_split: str | None) -> Split | None:
    """The train dataset's own ``val`` split; None when it has none, when reading ``val`` gives
    the train items back (a folder without split folders, a CSV), or when the test images come
    from it (FER2013 with test_split=val, FERPlus val_test, AffectNet whose test is validation.csv)."""
    same = (cfg.test or cfg.train) == cfg.train
    if test_split is not None and same and "val" in test_split.split("_"):
        return None
    try:
        val = open_split(cfg.train, split="val")
    except DataError:
        return None
    return None if val.name in (train.name, test_name) else val


def _align(test: Split, classes: tuple[str, ...], what: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Map a test (or val) split's labels onto the training classes by name; drop classes not trained."""
    lookup = {name: i for i, name in enumerate(classes)}
    mapped = np.array([lookup.get(test.classes[y], -1) for y in test.labels], dtype=np.int64)
    missing = sorted({test.classes[y] for y in test.labels} - set(classes))
    if missing:
        print(f"note: {what} classes {missing} are not among the training classes; those items are skipped")
    return mapped, mapped >= 0


def prepare(cfg, is_main: bool = True, barrier=lambda: None) -> Prepared:
    """Read, decode (rank 0 first, others wait and reuse the cache), and split the data."""
    train = open_split(cfg.train, split="train")
    channels = cfg.channels or (1 if train.grayscale else 3)

    def decoded(split: Split):
        if is_main:
            out = decode_split(split, cfg.size, channels, cfg.cache_dir, cfg.strict)
        barrier()
        return out if is_main else decode_split(split, cfg.size, channels, cfg.cache_dir, cfg.strict)

    tr = decoded(train)
    usable = np.flatnonzero(tr.ok)
    labels = train.labels

    if cfg.protocol == "kfold":
        fold_train, fold_test = protocols.kfold(labels[usable], cfg.folds, cfg.fold, cfg.seed)
        pool, held = usable[fold_train], usable[fold_test]
        test_images, test_labels, test_name, test_errors = tr.images[held], labels[held], f"{train.name}#fold{cfg.fold}", []
        test_ids = [train.ids[i] for i in held]
        test_split = None
    else:
        pool = usable
        test, test_split = _open_test(cfg, train)
        te = decoded(test)
        mapped, keep = _align(test, train.classes)
        keep &= te.ok
        test_images, test_labels = np.asarray(te.images[np.flatnonzero(keep)]), mapped[keep]
        test_name, test_errors = test.name, te.errors
        test_ids = [test.ids[i] for i in np.flatnonzero(keep)]

    # Validation (periodic evaluation, best checkpoint): carved from the pool before any label is
    # drawn, so it is neither labelled nor unlabelled; else the dataset's own val split.
    val = {}
    if cfg.val_fraction > 0:
        kept, carved = protocols.carve_val(labels[pool], cfg.val_fraction, cfg.seed)
        held_val, pool = pool[carved], pool[kept]
        val = dict(val_images=np.asarray(tr.images[held_val]), val_labels=labels[held_val],
                   val_name=f"{train.name}#val{cfg.val_fraction:g}", val_ids=[train.ids[i] for i in held_val],
                   val_source="val_fraction")
    elif (own := _own_val(cfg, train, test_name, test_split)) is not None:
        va = decoded(own)
        mapped, keep = _align(own, train.classes, "val")
        keep &= va.ok
        test_errors = test_errors + va.errors
        val = dict(val_images=np.asarray(va.images[np.flatnonzero(keep)]), val_labels=mapped[keep],
                   val_name=own.name, val_ids=[own.ids[i] for i in np.flatnonzero(keep)], val_source="dataset")

    within = cfg.kfold_labels if cfg.protocol == "kfold" else cfg.protocol   # semi-supervised K-fold
    if within == "kfold":
        raise ValueError("data.kfold_labels=kfold: expected all, labels_per_class, ratio or budget")
    chosen = protocols.select_labelled(labels[pool], within, labels_per_class_=cfg.labels_per_class,
                                       ratio=cfg.ratio, budget=cfg.budget, seed=cfg.seed)
    labelled = pool[chosen]
    if cfg.unlabelled == "rest":
        unlabelled = np.setdiff1d(pool, labelled)
    elif cfg.unlabelled == "all":
        unlabelled = pool
    elif cfg.unlabelled == "none":
        unlabelled = np.zeros(0, dtype=np.int64)
    else:
        raise ValueError(f"data.unlabelled={cfg.unlabelled!r}; expected rest, all or none")

    train_labels, flipped = labels, np.zeros(0, dtype=np.int64)
    if cfg.label_noise > 0:
        train_labels, flipped = protocols.flip_labels(labels, labelled, cfg.label_noise, len(train.classes), cfg.seed)

    return Prepared(train.classes, channels, train.ids, tr.images, train_labels, labels, labelled,
                    unlabelled, test_images, test_labels, test_name, tr.errors + test_errors, flipped,
                    cfg.cache_dir, tr.key, test_ids, **val)
