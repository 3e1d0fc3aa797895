"""The procedural face-expression dataset: determinism, shapes, class balance, the reader."""
import numpy as np
import pytest

from semifer.data import synthetic
from semifer.data.base import DATASETS, DataError, Split
from semifer.data.labels import BASIC7


def test_same_arguments_give_identical_bytes():
    a_img, a_lab = synthetic.generate(12, seed=3, size=40)
    b_img, b_lab = synthetic.generate(12, seed=3, size=40)
    assert a_img.tobytes() == b_img.tobytes()
    assert np.array_equal(a_lab, b_lab)


def test_image_i_does_not_depend_on_n():
    small, _ = synthetic.generate(3, seed=1)
    large, _ = synthetic.generate(8, seed=1)
    assert np.array_equal(small, large[:3])


def test_splits_and_seeds_are_distinct_streams():
    train, _ = synthetic.generate(6, split="train")
    test, _ = synthetic.generate(6, split="test")
    other_seed, _ = synthetic.generate(6, seed=1, split="train")
    assert not np.array_equal(train, test)
    assert not np.array_equal(train, other_seed)
    assert all(not np.array_equal(train[i], test[i]) for i in range(6))


def test_gray_and_color_shapes_and_dtypes():
    gray, labels = synthetic.generate(5, size=48)
    color, color_labels = synthetic.generate(5, size=32, color=True)
    assert gray.shape == (5, 48, 48) and gray.dtype == np.uint8
    assert color.shape == (5, 32, 32, 3) and color.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.shape == (5,)
    assert np.array_equal(labels, color_labels)  # colour changes pixels, not labels
    assert gray.std() > 10  # a drawing, not a blank image
    # Skin, hair and background colours make the channels differ.
    assert np.abs(color[..., 0].astype(int) - color[..., 2]).mean() > 5


def test_labels_cover_all_classes_near_uniformly():
    labels = synthetic.labels_of(700, seed=0)
    counts = np.bincount(labels, minlength=len(BASIC7))
    assert counts.min() >= 60 and counts.max() <= 140  # expected 100 each, sd ~9


def test_labels_of_matches_generate():
    _, labels = synthetic.generate(30, seed=2, split="val", imbalance=1.0)
    assert np.array_equal(labels, synthetic.labels_of(30, seed=2, split="val", imbalance=1.0))


def test_imbalance_makes_the_rarest_class_rarer():
    balanced = np.bincount(synthetic.labels_of(2000), minlength=7)
    skewed = np.bincount(synthetic.labels_of(2000, imbalance=1.5), minlength=7)
    assert skewed.min() < 0.5 * balanced.min()
    assert skewed.argmin() == BASIC7.index("disgust")
    assert np.allclose(synthetic.class_probs(0.0), 1 / 7)


def test_registered_reader_matches_generate():
    split = DATASETS.get("synthetic")("", split="test", n="20")
    assert isinstance(split, Split) and len(split) == 20
    assert split.classes == BASIC7 and split.grayscale
    assert split.ids[3] == "test/000003"
    images, labels = synthetic.generate(20, split="test")
    assert np.array_equal(split.load(3), images[3])
    assert np.array_equal(split.labels, labels)


def test_reader_casts_string_options_and_names_pixel_options():
    split = DATASETS.get("synthetic")("", split="val", n="4", seed="7", size="32", color="true",
                                      imbalance="0.5")
    assert split.load(0).shape == (32, 32, 3) and not split.grayscale
    assert np.array_equal(split.load(1), synthetic.generate(2, seed=7, size=32, split="val",
                                                           color=True, imbalance=0.5)[0][1])
    for part in ("n=4", "seed=7", "size=32", "color=1", "imbalance=0.5", "/val"):
        assert part in split.name
    gray = DATASETS.get("synthetic")("", split="val", n="4", seed="7", size="32", color="0")
    assert gray.name != split.name


def test_reader_rejects_bad_options():
    reader = DATASETS.get("synthetic")
    with pytest.raises(DataError):
        reader("", split="holdout")
    with pytest.raises(DataError):
        reader("", n="many")
    with pytest.raises(DataError):
        reader("", color="maybe")
    with pytest.raises(DataError):
        reader("", colour="1")
    with pytest.raises(IndexError):
        reader("", split="test", n="2").load(2)


def test_style_options_change_expressions_not_labels_and_name_the_cache():
    reader = DATASETS.get("synthetic")
    plain = reader("", split="train", n="40", size="32")
    clear = reader("", split="train", n="40", size="32", intensity="0.6", blend="0")
    assert plain.name == "synthetic:n=40,seed=0,size=32,color=0,imbalance=0/train"  # as before styles existed
    assert clear.name == "synthetic:n=40,seed=0,size=32,color=0,imbalance=0,intensity=0.6,blend=0/train"
    assert np.array_equal(plain.labels, clear.labels)  # the label is the first draw of every face
    assert not np.array_equal(plain.load(0), clear.load(0))
    assert np.array_equal(plain.load(5), synthetic.generate(6, size=32, style=synthetic.DEFAULT_STYLE)[0][5])
    for bad in ({"blend": "1.5"}, {"intensity": "nan"}, {"occlusion": "-0.1"}):
        with pytest.raises(DataError, match="expected a number in \\[0, 1\\]"):
            reader("", **bad)


def test_intensity_floor_and_no_blend_keep_every_face_near_its_class_target():
    happy = BASIC7.index("happy")
    clear = synthetic.Style(intensity=0.6, blend=0.0)
    # corner = intensity * 1.0 + N(0, 0.07) for a happy face without a blend: >= 0.6 - 5 sd
    corners = [synthetic._expression(synthetic._rng(0, "train", i), happy, clear)["corner"] for i in range(300)]
    assert min(corners) > 0.25
    # at the default floor 0.3 (and 10 % blends) some smiles fade towards neutral
    faint = [synthetic._expression(synthetic._rng(0, "train", i), happy)["corner"] for i in range(300)]
    assert min(faint) < 0.4


def test_occlusion_zero_leaves_the_unoccluded_faces_byte_identical():
    plain, _ = synthetic.generate(60, size=32)
    bare, _ = synthetic.generate(60, size=32, style=synthetic.Style(occlusion=0.0))
    same = np.array([np.array_equal(a, b) for a, b in zip(plain, bare)])
    assert 0.05 < 1 - same.mean() < 0.4  # only the ~20 % that had an occluder changed
