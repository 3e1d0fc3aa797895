"""Golden tests for the dataset readers, each on a few rows in the dataset's native layout."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from semifer.data import labels as L
from semifer.data.base import DataError, open_split, parse_spec
from semifer.data.readers.affectnet import affectnet
from semifer.data.readers.fer2013 import fer2013
from semifer.data.readers.ferplus import ferplus
from semifer.data.readers.generic import csv, folder
from semifer.data.readers.rafdb import rafdb
from semifer.data.readers.sfew import sfew


def write_image(path, value=0, size=(8, 8), rgb=False):
    """A constant image (value ``value``) of ``size`` = (height, width); returns its path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shape = (*size, 3) if rgb else size
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)
    return path


def write_text(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        f.write(text)
    return path


def names(split):
    return [split.classes[i] for i in split.labels]


# --------------------------------------------------------------------------- FER2013

def pixels(value, count=48 * 48):
    return " ".join([str(value)] * count)


def fer2013_csv(root, rows):
    lines = ["emotion,pixels,Usage"] + [f"{e},{p},{u}" for e, p, u in rows]
    return write_text(os.path.join(root, "fer2013.csv"), "\n".join(lines) + "\n")


FER2013_ROWS = [(0, pixels(10), "Training"), (6, pixels(20), "Training"),
                (3, pixels(30), "PublicTest"), (5, pixels(40), "Training"),
                (1, pixels(50), "PrivateTest")]


def test_fer2013_csv_maps_native_emotions_to_canonical(tmp_path):
    path = fer2013_csv(tmp_path, FER2013_ROWS)
    train = fer2013(str(tmp_path), split="train")
    assert train.classes == L.BASIC7
    assert names(train) == ["anger", "neutral", "surprise"]
    assert train.ids == ["csv-row-0", "csv-row-1", "csv-row-3"]
    assert train.grayscale
    image = train.load(2)
    assert image.shape == (48, 48) and image.dtype == np.uint8 and (image == 40).all()
    assert names(fer2013(path, split="val")) == ["happy"]  # the CSV file itself as path
    assert fer2013(path, split="test").ids == ["csv-row-4"]


def test_fer2013_csv_errors_name_file_and_line(tmp_path):
    path = fer2013_csv(tmp_path, [FER2013_ROWS[0], (2, pixels(1, 2303), "Training")])
    with pytest.raises(DataError, match=r"fer2013\.csv:3: expected 2304 .*got 2303 values"):
        fer2013(path)
    fer2013_csv(tmp_path, [FER2013_ROWS[0], (7, pixels(1), "Training")])
    with pytest.raises(DataError, match=r"fer2013\.csv:3: expected an emotion 0-6, got 7"):
        fer2013(path)
    fer2013_csv(tmp_path, [(0, pixels(1), "Validation")])
    with pytest.raises(DataError, match=r"fer2013\.csv:2: expected Usage Training"):
        fer2013(path)
    fer2013_csv(tmp_path, [(0, pixels(256), "Training")])
    with pytest.raises(DataError, match=r"fer2013\.csv:2: .*got values from 256 to 256"):
        fer2013(path)
    write_text(path, "emotion,pixels,Usage\n0,1 2 x 4,Training\n")
    with pytest.raises(DataError, match=r"fer2013\.csv:2: .*unparsable"):
        fer2013(path)
    write_text(path, "emotion,pixels,Usage\n0,Training\n")
    with pytest.raises(DataError, match=r"fer2013\.csv:2: expected 3 fields"):
        fer2013(path)


def test_fer2013_folders(tmp_path):
    write_image(tmp_path / "train" / "angry" / "a.png", 1)
    write_image(tmp_path / "train" / "happy" / "b.png", 2)
    write_image(tmp_path / "train" / "happy" / "c.jpg", 3)
    write_image(tmp_path / "val" / "neutral" / "d.jpg", 4)
    fer2013_csv(tmp_path, FER2013_ROWS)  # folders win over the CSV beside them
    train = fer2013(str(tmp_path), split="train")
    assert train.ids == ["angry/a.png", "happy/b.png", "happy/c.jpg"]
    assert names(train) == ["anger", "happy", "happy"]
    assert train.name == f"fer2013:{tmp_path}/train"
    assert train.grayscale and train.load(0).shape == (8, 8)
    assert names(fer2013(str(tmp_path), split="val")) == ["neutral"]


def test_fer2013_missing_split_and_unknown_split(tmp_path):
    write_image(tmp_path / "train" / "angry" / "a.png")
    write_image(tmp_path / "val" / "sad" / "b.png")
    with pytest.raises(DataError, match="no split 'test' .*found split folders train, val"):
        fer2013(str(tmp_path), split="test")
    with pytest.raises(DataError, match="unknown fer2013 split 'dev'; valid splits: train, val, t"):
        fer2013(str(tmp_path), split="dev")
    with pytest.raises(DataError, match="expected fer2013.csv or folders"):
        fer2013(str(tmp_path / "train" / "angry"))


# --------------------------------------------------------------------------- FERPlus

# Vote columns: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF
FERPLUS_ROWS = [
    ("Training", "fer0000000.png", "6,0,0,2,0,0,0,0,1,1"),    # neutral
    ("Training", "fer0000001.png", "0,0,0,0,0,0,0,6,2,2"),    # contempt
    ("Training", "fer0000002.png", "1,0,0,0,0,0,0,0,5,4"),    # unknown wins: dropped
    ("Training", "fer0000003.png", "0,0,0,0,0,0,0,0,0,10"),   # not a face: dropped
    ("Training", "fer0000004.png", "0,4,4,0,2,0,0,0,0,0"),    # happy / surprise tie
    ("Training", "", "10,0,0,0,0,0,0,0,0,0"),                 # no FERPlus image: skipped
    ("PublicTest", "fer0000006.png", "0,0,0,0,0,7,3,0,0,0"),  # disgust
    ("PrivateTest", "fer0000007.png", "0,0,0,0,8,0,0,0,2,0"),  # anger
]


def ferplus_csv(root, rows=FERPLUS_ROWS):
    header = ("Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,"
              "unknown,NF")
    lines = [header] + [f"{u},{n},{v}" for u, n, v in rows]
    return write_text(os.path.join(root, "fer2013new.csv"), "\n".join(lines) + "\n")


def ferplus_pixels_csv(root, rows=FERPLUS_ROWS):
    """fer2013.csv matching FERPLUS_ROWS row for row; row k's pixels are all 10 * k."""
    return fer2013_csv(root, [(0, pixels(10 * k), u) for k, (u, _, _) in enumerate(rows)])


def test_ferplus_majority(tmp_path):
    ferplus_csv(tmp_path)
    ferplus_pixels_csv(tmp_path)
    train = ferplus(str(tmp_path), split="train")
    assert train.classes == L.CANONICAL
    assert train.ids == ["fer0000000.png", "fer0000001.png"]  # unknown, NF, tie, no-name gone
    assert names(train) == ["neutral", "contempt"]
    assert train.soft_labels.shape == (2, 8) and train.soft_labels.dtype == np.float32
    np.testing.assert_allclose(train.soft_labels[0, :3], [0.75, 0, 0.25])
    assert train.grayscale and (train.load(1) == 10).all()  # pixels of FER2013 row 1
    assert names(ferplus(str(tmp_path), split="val")) == ["disgust"]
    test = ferplus(str(tmp_path / "fer2013new.csv"), split="test")
    assert names(test) == ["anger"] and (test.load(0) == 70).all()


def test_ferplus_probability_and_multi_target_keep_ties(tmp_path):
    ferplus_csv(tmp_path)
    ferplus_pixels_csv(tmp_path)
    for mode in ("probability", "crossentropy"):
        split = ferplus(str(tmp_path), split="train", mode=mode)
        assert split.ids == ["fer0000000.png", "fer0000001.png", "fer0000004.png"]
        assert names(split) == ["neutral", "contempt", "happy"]  # ties: first canonical class
        expected = np.zeros(8)
        expected[[L.CANONICAL.index(c) for c in ("happy", "surprise", "anger")]] = [.4, .4, .2]
        np.testing.assert_allclose(split.soft_labels[2], expected, rtol=1e-6)
    multi = ferplus(str(tmp_path), split="train", mode="multi_target")
    np.testing.assert_allclose(multi.soft_labels[2][[1, 3]], [0.5, 0.5])
    assert multi.soft_labels[2].sum() == pytest.approx(1.0)
    assert multi.name != split.name


def test_ferplus_seven_classes_drop_contempt(tmp_path):
    ferplus_csv(tmp_path)
    ferplus_pixels_csv(tmp_path)
    split = ferplus(str(tmp_path), split="train", classes="7", mode="probability")
    assert split.classes == L.BASIC7
    assert split.ids == ["fer0000000.png", "fer0000004.png"]
    assert split.soft_labels.shape == (2, 7)
    np.testing.assert_allclose(split.soft_labels.sum(axis=1), 1.0, rtol=1e-6)


def test_ferplus_image_folders(tmp_path):
    ferplus_csv(tmp_path)
    write_image(tmp_path / "data" / "FER2013Train" / "fer0000000.png", 5, size=(48, 48))
    train = ferplus(str(tmp_path), split="train")
    assert (train.load(0) == 5).all()
    with pytest.raises(DataError, match="fer0000001.png"):  # listed but not on disk
        train.load(1)
    with pytest.raises(DataError, match="no FERPlus pixels for split 'val'"):
        ferplus(str(tmp_path), split="val")


def test_ferplus_errors(tmp_path):
    with pytest.raises(DataError, match="missing FERPlus label file .*fer2013new.csv"):
        ferplus(str(tmp_path))
    path = ferplus_csv(tmp_path, FERPLUS_ROWS[:1] + [("Training", "fer1.png", "1,2,3")])
    with pytest.raises(DataError, match=r"fer2013new\.csv:3: expected 12 fields"):
        ferplus(path)
    ferplus_csv(tmp_path, [("Training", "fer1.png", "1,2,3,4,5,6,7,8,9,x")])
    with pytest.raises(DataError, match=r"fer2013new\.csv:2: expected a vote count, got 'x'"):
        ferplus(path)
    ferplus_csv(tmp_path)
    ferplus_pixels_csv(tmp_path, [("PublicTest", "", "")] + FERPLUS_ROWS[1:])
    with pytest.raises(DataError, match=r"fer2013\.csv:2: Usage PublicTest but row 0"):
        ferplus(path)
    ferplus_pixels_csv(tmp_path, FERPLUS_ROWS[:1])
    with pytest.raises(DataError, match="1 data rows, but .* refers to row 1"):
        ferplus(path)
    with pytest.raises(DataError, match="option mode='vote': expected one of majority"):
        ferplus(path, mode="vote")


# --------------------------------------------------------------------------- RAF-DB

RAFDB_LIST = ("train_00001.jpg 1\ntrain_00002.jpg 5\n\ntrain_00003.jpg 7\n"
              "test_0001.jpg 6\ntest_0002.jpg 4\n")


def rafdb_fixture(root):
    write_text(os.path.join(root, "EmoLabel", "list_patition_label.txt"), RAFDB_LIST)
    for k, name in enumerate(["train_00001", "train_00002", "test_0001", "test_0002"]):
        write_image(os.path.join(root, "Image", "aligned", f"{name}_aligned.jpg"), 50 * k, rgb=True)
    write_image(os.path.join(root, "Image", "original", "train_00001.jpg"), 0, (10, 12), rgb=True)


def test_rafdb_labels_and_splits(tmp_path):
    rafdb_fixture(tmp_path)
    train = rafdb(str(tmp_path))
    assert train.classes == L.BASIC7
    assert train.ids == ["train_00001.jpg", "train_00002.jpg", "train_00003.jpg"]
    assert names(train) == ["surprise", "sad", "neutral"]
    assert train.load(0).shape == (8, 8, 3)
    with pytest.raises(DataError, match=r"missing image file .*train_00003_aligned\.jpg"):
        train.load(2)
    test = rafdb(str(tmp_path), split="test")
    assert names(test) == ["anger", "happy"]
    original = rafdb(str(tmp_path), aligned="0")
    assert original.load(0).shape == (10, 12, 3) and original.name != train.name


def test_rafdb_errors(tmp_path):
    with pytest.raises(DataError, match=r"missing RAF-DB label list .*list_patition_label\.txt"):
        rafdb(str(tmp_path))
    with pytest.raises(DataError, match="unknown rafdb split 'val'; valid splits: train, test"):
        rafdb(str(tmp_path), split="val")
    path = write_text(tmp_path / "EmoLabel" / "list_patition_label.txt",
                      "train_1.jpg 1\ntrain_2.jpg\n")
    with pytest.raises(DataError, match=r"label\.txt:2: expected '<image name> <label 1-7>'"):
        rafdb(str(tmp_path))
    write_text(path, "train_1.jpg 1\n\ntrain_2.jpg 8\n")
    with pytest.raises(DataError, match=r"list_patition_label\.txt:3: expected a label 1-7, got 8"):
        rafdb(str(tmp_path))
    with pytest.raises(DataError, match="unknown rafdb option"):
        rafdb(str(tmp_path), algined="0")


# --------------------------------------------------------------------------- AffectNet

AFFECTNET_HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
                    "expression,valence,arousal")


def affectnet_row(rel, box, expression):
    return f"{rel},{','.join(map(str, box))},1.0;2.0;3.0;4.0,{expression},0.5,-0.25"


def affectnet_fixture(root):
    rows = [affectnet_row("1/a.jpg", (2, 3, 5, 4), 1),
            affectnet_row("1/b.png", (10, 10, 20, 20), 7),
            affectnet_row("2/c.png", (0, 0, 4, 4), 8), affectnet_row("2/d.png", (0, 0, 4, 4), 10),
            affectnet_row("2/e.png", (-2, -2, 6, 6), 6)]
    write_text(os.path.join(root, "training.csv"), "\n".join([AFFECTNET_HEADER] + rows) + "\n")
    # validation.csv without its header row, as some copies ship it
    write_text(os.path.join(root, "validation.csv"),
               affectnet_row("3/f.png", (0, 0, 8, 8), 0) + "\n")
    images = os.path.join(root, "Manually_Annotated_Images")
    gradient = (np.arange(16)[:, None] * 16 + np.arange(16)[None, :]).astype(np.uint8)  # [16, 16]
    Image.fromarray(gradient).save(write_image(os.path.join(images, "1", "b.png"), size=(16, 16)))
    write_image(os.path.join(images, "2", "e.png"), 9, size=(16, 16), rgb=True)
    write_image(os.path.join(images, "3", "f.png"), 3, size=(12, 12))
    return gradient


def test_affectnet_labels_and_crops(tmp_path):
    gradient = affectnet_fixture(tmp_path)
    train = affectnet(str(tmp_path))
    assert train.classes == L.CANONICAL
    assert train.ids == ["1/a.jpg", "1/b.png", "2/e.png"]  # 8 None and 10 No-Face dropped
    assert names(train) == ["happy", "contempt", "anger"]
    crop = train.load(1)  # box x=10 y=10 w=20 h=20 clamped to the 16x16 image
    np.testing.assert_array_equal(crop, gradient[10:16, 10:16])
    assert train.load(2).shape == (4, 4, 3)  # box from (-2, -2), 6x6, clamped at the origin
    with pytest.raises(DataError, match=r"missing image file .*Manually_Annotated_Images/1/a\.jpg"):
        train.load(0)
    assert affectnet(str(tmp_path), crop="0").load(1).shape == (16, 16)


def test_affectnet_seven_classes_and_validation(tmp_path):
    affectnet_fixture(tmp_path)
    seven = affectnet(str(tmp_path), classes="7")
    assert seven.classes == L.BASIC7
    assert names(seven) == ["happy", "anger"]  # contempt dropped
    val = affectnet(str(tmp_path), split="val")
    assert names(val) == ["neutral"] and val.load(0).shape == (8, 8)
    assert affectnet(str(tmp_path), split="test").name == val.name  # test is val's alias


def test_affectnet_errors(tmp_path):
    with pytest.raises(DataError, match=r"missing AffectNet CSV file .*training\.csv"):
        affectnet(str(tmp_path))
    rows = [AFFECTNET_HEADER, affectnet_row("a.png", (0, 0, 4, 4), 1),
            affectnet_row("b.png", (0, 0, 4, 4), 11)]
    write_text(tmp_path / "training.csv", "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"training\.csv:3: expected an expression code 0-10, got"):
        affectnet(str(tmp_path))
    write_text(tmp_path / "training.csv", AFFECTNET_HEADER + "\na.png,0,0,4\n")
    with pytest.raises(DataError, match=r"training\.csv:2: expected 9 fields"):
        affectnet(str(tmp_path))
    write_text(tmp_path / "training.csv", affectnet_row("a.png", (0, 0, 0, 4), 1) + "\n")
    with pytest.raises(DataError, match=r"training\.csv:1: expected a positive face_width"):
        affectnet(str(tmp_path))


# --------------------------------------------------------------------------- SFEW

def test_sfew(tmp_path):
    write_image(tmp_path / "Train" / "Angry" / "x.png", rgb=True)
    write_image(tmp_path / "Train" / "Surprise" / "y.png", rgb=True)
    write_image(tmp_path / "Val" / "Fear" / "z.png", rgb=True)
    train = sfew(str(tmp_path))
    assert train.classes == L.BASIC7
    assert train.ids == ["Angry/x.png", "Surprise/y.png"]
    assert names(train) == ["anger", "surprise"]
    assert names(sfew(str(tmp_path), split="val")) == ["fear"]
    with pytest.raises(DataError, match="SFEW 2.0 test labels are not public"):
        sfew(str(tmp_path), split="test")
    write_image(tmp_path / "Val" / "Contempt" / "c.png", rgb=True)
    with pytest.raises(DataError, match=r"Val: sfew has the 7 basic expressions; .*found Contempt, Fear"):
        sfew(str(tmp_path), split="val")


# --------------------------------------------------------------------------- folder / csv

def test_folder_through_open_split_and_parse_spec(tmp_path):
    write_image(tmp_path / "train" / "happy" / "a.png")
    write_image(tmp_path / "test" / "Sadness" / "nested" / "b.png")  # recursive, synonym
    write_image(tmp_path / "test" / "Contempt" / "c.jpeg", rgb=True)
    write_text(tmp_path / "test" / "Contempt" / "notes.txt", "not an image")
    assert parse_spec(f"folder:{tmp_path}?labels=custom") == ("folder", str(tmp_path),
                                                             {"labels": "custom"})
    assert parse_spec(str(tmp_path))[0] == "folder"  # a bare existing path
    test = open_split(f"folder:{tmp_path}", split="test")
    assert test.classes == L.CANONICAL  # contempt appears
    assert test.ids == ["Contempt/c.jpeg", "Sadness/nested/b.png"]
    assert names(test) == ["contempt", "sad"]
    assert test.name == f"folder:{tmp_path}/test"
    assert open_split(str(tmp_path / "train")).classes == L.BASIC7
    with pytest.raises(DataError, match="no split 'val' .*found split folders train, test"):
        open_split(f"folder:{tmp_path}", split="val")


def test_folder_unknown_class_lists_known_names(tmp_path):
    write_image(tmp_path / "happy" / "a.png")
    write_image(tmp_path / "bored" / "b.png")
    with pytest.raises(DataError, match=r"unknown expression class 'bored' .*known names: .*anger"):
        folder(str(tmp_path))
    with pytest.raises(DataError, match="no class folders"):
        folder(str(tmp_path / "happy"))


def test_folder_custom_labels(tmp_path):
    write_image(tmp_path / "young" / "a.png")
    write_image(tmp_path / "old" / "b.png")
    split = folder(str(tmp_path), labels="custom")
    assert split.classes == ("old", "young")
    assert names(split) == ["old", "young"]
    assert split.name.endswith("?labels=custom")


def test_csv_names_integers_and_custom(tmp_path):
    write_image(tmp_path / "img" / "a.png")
    path = write_text(tmp_path / "list.csv",
                      "path,label\nimg/a.png,Happiness\nimg/missing.png,angry\n")
    split = csv(str(path))
    assert split.classes == L.BASIC7
    assert split.ids == ["img/a.png", "img/missing.png"]
    assert names(split) == ["happy", "anger"]
    assert split.load(0).shape == (8, 8)
    with pytest.raises(DataError, match=r"missing image file .*img/missing\.png"):
        split.load(1)
    write_text(path, "img/a.png,1\nimg/b.png,0\n")  # no header
    assert names(csv(str(path), classes="contempt,neutral")) == ["neutral", "contempt"]
    custom = csv(str(path), classes="male,female", labels="custom")
    assert custom.classes == ("male", "female") and names(custom) == ["female", "male"]
    write_text(path, "a.png,adult\nb.png,child\nc.png,adult\n")
    assert csv(str(path), labels="custom").classes == ("adult", "child")
    write_text(path, "file,age\na.png,10\nb.png,2\nc.png,10\n")  # header, integer names
    ages = csv(str(path), labels="custom")
    assert ages.classes == ("2", "10") and ages.ids == ["a.png", "b.png", "c.png"]
    assert names(ages) == ["10", "2", "10"]
    write_text(path, "a.png,happy\n")
    assert csv(str(path), classes="happy,contempt").classes == L.CANONICAL


def test_csv_errors_name_file_and_line(tmp_path):
    path = write_text(tmp_path / "list.csv", "path,label\na.png,happy\nb.png\n")
    with pytest.raises(DataError, match=r"list\.csv:3: expected 2 fields 'path,label'"):
        csv(str(path))
    write_text(path, "a.png,happy\nb.png,3\n")
    with pytest.raises(DataError, match=r"list\.csv:2: integer label '3' needs the option"):
        csv(str(path))
    with pytest.raises(DataError, match=r"list\.csv:2: expected a label in 0\.\.1"):
        csv(str(path), classes="happy,sad")
    write_text(path, "a.png,happy\nb.png,meh\n")
    with pytest.raises(DataError, match=r"unknown expression class 'meh' in .*list\.csv:2"):
        csv(str(path))
    with pytest.raises(DataError, match="missing CSV file"):
        csv(str(tmp_path / "absent.csv"))


def test_split_names_differ_by_options(tmp_path):
    affectnet_fixture(tmp_path)
    keys = {affectnet(str(tmp_path), classes=c, crop=k).name for c in "78" for k in "01"}
    assert len(keys) == 4


# FERPlus rules: Microsoft's reference reader (rule=reference) against semifer's plurality
# reading, and the merged val_test split SSFER tests on. Counts below are worked by hand.
FERPLUS_RULE_ROWS = [
    ("Training", "fer0000000.png", "6,0,0,2,0,0,0,0,1,1"),    # 6 of 8 kept votes: neutral
    ("Training", "fer0000001.png", "4,0,0,3,0,0,0,0,1,2"),    # 4 of 9 is no majority
    ("Training", "fer0000002.png", "1,1,1,1,1,1,1,1,1,1"),    # single votes only: dropped
    ("Training", "fer0000003.png", "0,5,3,0,0,0,0,0,0,2"),    # 5 of 10 is no majority
    ("Training", "fer0000004.png", "0,0,0,0,0,0,0,0,6,4"),    # unknown: dropped
    ("Training", "fer0000005.png", "6,0,0,0,0,0,0,0,3,2"),    # 6 of 11: neutral
    ("PublicTest", "fer0000006.png", "0,0,0,0,0,7,3,0,0,0"),  # disgust
    ("PublicTest", "fer0000007.png", "0,0,2,0,0,0,0,0,4,4"),  # unknown / NF: dropped
    ("PrivateTest", "fer0000008.png", "0,0,0,0,8,0,0,0,2,0"),  # anger
    ("PrivateTest", "", "10,0,0,0,0,0,0,0,0,0"),              # no FERPlus image: skipped
    ("PrivateTest", "fer0000010.png", "0,0,0,0,0,0,0,6,0,0"),  # contempt
]


@pytest.mark.parametrize("rule, mode, counts, train_ids", [
    ("reference", "majority", (2, 1, 2, 3), [0, 5]),
    ("plurality", "majority", (4, 1, 2, 3), [0, 1, 3, 5]),
    ("reference", "probability", (4, 1, 2, 3), [0, 1, 3, 5]),
    ("reference", "multi_target", (4, 1, 2, 3), [0, 1, 3, 5]),
])
def test_ferplus_rules_counts(tmp_path, rule, mode, counts, train_ids):
    ferplus_csv(tmp_path, FERPLUS_RULE_ROWS)
    ferplus_pixels_csv(tmp_path, FERPLUS_RULE_ROWS)
    got = [ferplus(str(tmp_path), split=s, rule=rule, mode=mode) for s in ("train", "val", "test", "val_test")]
    assert tuple(len(s.ids) for s in got) == counts
    assert got[0].ids == [f"fer000000{i}.png" for i in train_ids]
    assert got[3].ids == got[1].ids + got[2].ids                      # val_test = val + test
    assert names(got[3]) == ["disgust", "anger", "contempt"]
    assert [int(got[3].load(i)[0, 0]) for i in range(3)] == [60, 80, 100]  # FER2013 rows 6, 8, 10


def test_ferplus_reference_soft_targets(tmp_path):
    ferplus_csv(tmp_path, FERPLUS_RULE_ROWS)
    ferplus_pixels_csv(tmp_path, FERPLUS_RULE_ROWS)
    col = {c: L.CANONICAL.index(c) for c in ("neutral", "happy", "surprise", "sad")}
    maj = ferplus(str(tmp_path), rule="reference")
    np.testing.assert_allclose(maj.soft_labels[0][col["neutral"]], 1.0)  # only the majority column
    prob = ferplus(str(tmp_path), rule="reference", mode="probability")
    # row 1: neutral 4 + sadness 3 reach 75 % of 9 kept votes; row 5: unknown (3) joins after
    # an emotion, so it is not kept and neutral alone holds 6 of 11 votes
    np.testing.assert_allclose(prob.soft_labels[1][[col["neutral"], col["sad"]]], [4 / 7, 3 / 7], rtol=1e-6)
    np.testing.assert_allclose(prob.soft_labels[2][[col["happy"], col["surprise"]]], [5 / 8, 3 / 8], rtol=1e-6)
    np.testing.assert_allclose(prob.soft_labels[3][col["neutral"]], 1.0)
    multi = ferplus(str(tmp_path), rule="reference", mode="multi_target")
    np.testing.assert_allclose(multi.soft_labels[1][[col["neutral"], col["sad"]]], [4 / 7, 3 / 7], rtol=1e-6)
    np.testing.assert_allclose(multi.soft_labels[0][col["neutral"]], 1.0)  # sadness 2 < 30 % of 8
    seven = ferplus(str(tmp_path), split="val_test", rule="reference", classes="7")
    assert names(seven) == ["disgust", "anger"]                       # contempt dropped
    assert maj.name != ferplus(str(tmp_path)).name                    # the rule keys the cache
    assert "rule" not in ferplus(str(tmp_path)).name                  # plurality keeps old keys
    with pytest.raises(DataError, match="option rule='vote'"):
        ferplus(str(tmp_path), rule="vote")


def test_ferplus_val_test_image_folders(tmp_path):
    ferplus_csv(tmp_path, FERPLUS_RULE_ROWS)
    write_image(tmp_path / "FER2013Valid" / "fer0000006.png", 6, size=(48, 48))
    write_image(tmp_path / "FER2013Test" / "fer0000008.png", 8, size=(48, 48))
    split = ferplus(str(tmp_path), split="val_test")
    assert split.ids == ["fer0000006.png", "fer0000008.png", "fer0000010.png"]
    assert (split.load(0) == 6).all() and (split.load(1) == 8).all()
