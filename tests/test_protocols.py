import numpy as np
import pytest

from semifer.data import protocols

LABELS = np.repeat(np.arange(4), [50, 20, 7, 3])  # imbalanced, like FER data


def test_labels_per_class_counts_and_seed():
    idx = protocols.labels_per_class(LABELS, 10, seed=1)
    assert np.bincount(LABELS[idx]).tolist() == [10, 10, 7, 3]  # small classes give all they have
    assert np.array_equal(idx, protocols.labels_per_class(LABELS, 10, seed=1))
    assert not np.array_equal(idx, protocols.labels_per_class(LABELS, 10, seed=2))


def test_ratio_is_max_one_round():
    idx = protocols.ratio_per_class(LABELS, 0.1)
    # round(5.0)=5, round(2.0)=2, max(1, round(0.7))=1, max(1, round(0.3))=1
    assert np.bincount(LABELS[idx]).tolist() == [5, 2, 1, 1]


def test_budget_spreads_and_redistributes():
    idx = protocols.budget_over_classes(LABELS, 40, seed=0)
    counts = np.bincount(LABELS[idx]).tolist()
    assert sum(counts) == 40
    assert counts[2] == 7 and counts[3] == 3   # small classes exhausted
    assert counts[0] >= 10 and counts[1] >= 10
    with pytest.raises(ValueError, match="exceeds"):
        protocols.budget_over_classes(LABELS, 81)


def test_kfold_disjoint_and_covering():
    held = []
    for f in range(5):
        tr, te = protocols.kfold(LABELS, 5, f, seed=3)
        assert not set(tr) & set(te)
        assert len(tr) + len(te) == len(LABELS)
        held.append(te)
    allheld = np.concatenate(held)
    assert sorted(allheld.tolist()) == list(range(len(LABELS)))  # every item held out exactly once


def test_label_noise_rate_determinism_and_always_wrong():
    idx = protocols.labels_per_class(LABELS, 10)
    noisy, flipped = protocols.flip_labels(LABELS, idx, 0.2, 4, seed=5)
    assert len(flipped) == round(0.2 * len(idx))
    assert set(flipped) <= set(idx)
    assert (noisy[flipped] != LABELS[flipped]).all()
    untouched = np.setdiff1d(np.arange(len(LABELS)), flipped)
    assert (noisy[untouched] == LABELS[untouched]).all()
    noisy2, flipped2 = protocols.flip_labels(LABELS, idx, 0.2, 4, seed=5)
    assert np.array_equal(noisy, noisy2) and np.array_equal(flipped, flipped2)


def test_carve_val_is_stratified_seeded_and_a_partition():
    kept, val = protocols.carve_val(LABELS, 0.2, seed=0)
    # round(10.0)=10, round(4.0)=4, round(1.4)=1, round(0.6)=1
    assert np.bincount(LABELS[val]).tolist() == [10, 4, 1, 1]
    assert np.array_equal(np.sort(np.concatenate([kept, val])), np.arange(len(LABELS)))
    assert np.array_equal(val, protocols.carve_val(LABELS, 0.2, seed=0)[1])
    assert not np.array_equal(val, protocols.carve_val(LABELS, 0.2, seed=1)[1])
    assert len(protocols.carve_val(LABELS, 0.0)[1]) == 0
    with pytest.raises(ValueError, match="val_fraction"):
        protocols.carve_val(LABELS, 1.0)
