"""Label protocols of the FER semi-supervised papers: which train items keep their labels.

Every function is seeded and returns sorted indices into the split, so the labelled subset is
reproducible and can be written to the run folder as a list of ids.
"""
from __future__ import annotations

import numpy as np


def _per_class_take(labels: np.ndarray, counts: dict[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chosen = []
    for c, k in sorted(counts.items()):
        members = np.flatnonzero(labels == c)
        chosen.append(rng.choice(members, size=min(k, len(members)), replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def labels_per_class(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n labelled items per class (all of a class when it has fewer)."""
    return _per_class_take(labels, {int(c): n for c in np.unique(labels)}, seed)


def ratio_per_class(labels: np.ndarray, ratio: float, seed: int = 0) -> np.ndarray:
    """max(1, round(ratio * n_c)) items per class (SSFER's 5/10/25 % protocol)."""
    classes, sizes = np.unique(labels, return_counts=True)
    return _per_class_take(labels, {int(c): max(1, round(ratio * n)) for c, n in zip(classes, sizes)}, seed)


def budget_over_classes(labels: np.ndarray, total: int, seed: int = 0) -> np.ndarray:
    """A total budget spread as evenly as the class sizes allow (SIT-FER's 400/2000/4000 labels).

    Each class gets total // K; the remainder and the share a small class cannot fill go, one at a
    time, to the classes that still have unlabelled items, in a seeded random order."""
    classes, sizes = np.unique(labels, return_counts=True)
    if total > sizes.sum():
        raise ValueError(f"label budget {total} exceeds the {sizes.sum()} items of the split")
    take = np.minimum(sizes, total // len(classes))
    rng = np.random.default_rng(seed)
    while take.sum() < total:
        open_ = np.flatnonzero(take < sizes)
        need = total - take.sum()
        for i in rng.permutation(open_)[:need]:
            take[i] += 1
    return _per_class_take(labels, {int(c): int(k) for c, k in zip(classes, take)}, seed)


def kfold(labels: np.ndarray, folds: int, fold: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified K-fold: (train indices, held-out indices) of fold ``fold``."""
    from sklearn.model_selection import StratifiedKFold

    if not 0 <= fold < folds:
        raise ValueError(f"fold {fold} is outside 0..{folds - 1}")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    train_idx, held_idx = list(splitter.split(np.zeros(len(labels)), labels))[fold]
    return np.sort(train_idx), np.sort(held_idx)


def carve_val(labels: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A stratified validation split carved from train: round(fraction * n_c) items of class c,
    drawn with its own seeded stream (not the labelled draw's). Returns sorted (kept, val)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"data.val_fraction={fraction}: expected a share in [0, 1)")
    classes, sizes = np.unique(labels, return_counts=True)
    val = _per_class_take(labels, {int(c): round(fraction * n) for c, n in zip(classes, sizes)}, seed + 104729)
    return np.setdiff1d(np.arange(len(labels)), val), val


def flip_labels(labels: np.ndarray, idx: np.ndarray, rate: float, num_classes: int,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Label noise: flip round(rate * len(idx)) of the items ``idx`` uniformly to another class.

    Returns (new labels for all items, indices that were flipped)."""
    rng = np.random.default_rng(seed + 7919)
    flipped = np.sort(rng.choice(idx, size=round(rate * len(idx)), replace=False))
    noisy = labels.copy()
    shift = rng.integers(1, num_classes, size=len(flipped))  # never 0: always another class
    noisy[flipped] = (labels[flipped] + shift) % num_classes
    return noisy, flipped


def select_labelled(labels: np.ndarray, protocol: str, *, labels_per_class_: int = 100,
                    ratio: float = 0.1, budget: int = 1000, seed: int = 0) -> np.ndarray:
    """Dispatch on the protocol name of ``DataConfig.protocol`` (kfold is handled by the caller)."""
    if protocol == "labels_per_class":
        return labels_per_class(labels, labels_per_class_, seed)
    if protocol == "ratio":
        return ratio_per_class(labels, ratio, seed)
    if protocol == "budget":
        return budget_over_classes(labels, budget, seed)
    if protocol in ("all", "kfold"):
        return np.arange(len(labels))
    raise ValueError(f"unknown label protocol {protocol!r}; known: labels_per_class, ratio, budget, all, kfold")
