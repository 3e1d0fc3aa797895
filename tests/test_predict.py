"""Prediction on real photographs (scikit-image's sample data): detectors, alignment, the
Predictor API and its input kinds, the predict / export CLI on folders and videos, ONNX parity."""
import csv
import json
import os
import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from conftest import TINY
from semifer.cli import main
from semifer.config import load_config
from semifer.data.base import DataError
from semifer.data.faces import AUTO_ORDER, DETECTORS, Face, create_detector, crop_face, detect_faces
from semifer.data.transforms import shifted_views
from semifer.engine.train import train
from semifer.predict import FacePrediction, Predictor
from semifer.predict.export import export_onnx
from semifer.predict.output import columns
from semifer.predict.video import IoUTracker, Smoother, iou

FACE = (177, 62, 95, 110)               # the astronaut's face in skimage.data.astronaut()
SMALL_FACE = (600, 131, 48, 55)         # the same face at half size in two_faces()


def portrait() -> np.ndarray:
    return skdata.astronaut()           # 512 x 512 RGB


def two_faces() -> np.ndarray:
    """The portrait and a half-size copy side by side on white: two faces, two scales."""
    tile = np.full((512, 768, 3), 255, np.uint8)
    tile[:, :512] = portrait()
    tile[100:356, 512:] = cv2.resize(portrait(), (256, 256), interpolation=cv2.INTER_AREA)
    return tile


def found(faces, box, min_iou=0.3) -> bool:
    return any(iou(np.array([f.box]), np.array([box]))[0, 0] >= min_iou for f in faces)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A gray (C=1) and an RGB (C=3) tiny model, trained once for this module."""
    base = tmp_path_factory.mktemp("predict")
    out = {}
    for c in (1, 3):
        train(load_config(None, TINY + [f"data.cache_dir={base / 'cache'}", f"out={base / f'run{c}'}",
                                        f"data.channels={c}", "train.iterations=3"]))
        out[c] = str(base / f"run{c}")
    return out


# ---------------------------------------------------------------- detectors and alignment

DETECTOR_PARAMS = [pytest.param(n, marks=pytest.mark.skipif(
    not DETECTORS.get(n).available(), reason=f"{n}: {DETECTORS.get(n).requires}")) for n in AUTO_ORDER]
_built = {}


def detector(name):
    if name not in _built:
        _built[name] = create_detector(name)
    return _built[name]


@pytest.mark.parametrize("name", DETECTOR_PARAMS)
def test_detector_on_photos(name):
    det = detector(name)
    assert found(det.detect(portrait()), FACE)
    faces = det.detect(two_faces())
    assert found(faces, FACE) and found(faces, SMALL_FACE)
    assert det.detect(skdata.coffee()) == []
    assert det.detect(np.full((120, 160, 3), 128, np.uint8)) == []
    for f in faces:
        assert isinstance(f, Face) and 0 <= f.score <= 1
        assert f.landmarks is None or all(len(p) == 2 for p in f.landmarks)


def test_huge_image_is_shrunk_for_detection_and_boxes_map_back():
    seen = []

    class Spy:
        def detect(self, rgb):
            seen.append(rgb.shape)
            return [Face((10, 20, 30, 40), 0.9, ((15.0, 25.0),))]

    faces = detect_faces(Spy(), np.zeros((4000, 2000, 3), np.uint8), max_side=1000)
    assert seen == [(1000, 500, 3)]
    assert faces[0].box == (40, 80, 120, 160) and faces[0].landmarks == ((60.0, 100.0),)


def test_auto_picks_the_first_available():
    first = next(n for n in AUTO_ORDER if DETECTORS.get(n).available())
    assert type(create_detector("auto")) is DETECTORS.get(first)
    with pytest.raises(KeyError, match="unknown detector"):
        create_detector("nope")


def test_crop_face_square_margin_and_border_replication():
    img = np.arange(100 * 80, dtype=np.uint16).reshape(100, 80) % 251
    crop = crop_face(img.astype(np.uint8), (60, 0, 20, 10), margin=0.5)
    assert crop.shape == (40, 40)                           # max(w, h) * (1 + 2 * 0.5)
    assert (crop[:15] == crop[15]).all()                    # above the image: top row repeated
    assert (crop[:, 30:] == crop[:, [29]]).all()            # right of the image: last column
    rgb = crop_face(portrait(), FACE, size=48)
    assert rgb.shape == (48, 48, 3) and rgb.dtype == np.uint8


def _stub_yolo(path, size=64):
    """A fake YOLOv8-face ONNX model whose output is fixed: a face, a weaker duplicate of it
    (removed by NMS), a low-score anchor and empty ones, in letterbox pixels, with 5
    landmarks x 3 values (real exports have far more anchors than channels, as here)."""
    rows = np.zeros((32, 20), np.float32)
    rows[0, :5] = [20, 30, 16, 24, 0.9]
    rows[1, :5] = [21, 30, 16, 24, 0.8]
    rows[2, :5] = [50, 50, 10, 10, 0.1]
    rows[0, 5:] = np.tile([20, 30, 1.0], 5)
    out = torch.from_numpy(rows.T[None].copy())             # [1, 20, N]

    class Stub(torch.nn.Module):
        def forward(self, x):
            return out + 0 * x.mean()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter's notice
        torch.onnx.export(Stub(), (torch.zeros(1, 3, size, size),), path, dynamo=False,
                          input_names=["images"], output_names=["output0"])


def test_yolo_face_decodes_letterboxed_onnx_output(tmp_path):
    pytest.importorskip("onnxruntime")
    _stub_yolo(str(tmp_path / "yolo.onnx"))
    det = create_detector("yolo_face", model_path=str(tmp_path / "yolo.onnx"))
    # 200 x 100 image -> scale 0.32 into 64 x 64, 16 rows of padding above
    faces = det.detect(np.zeros((100, 200, 3), np.uint8))
    assert len(faces) == 1 and faces[0].score == pytest.approx(0.9)
    assert faces[0].box == (38, 6, 50, 75)
    assert faces[0].landmarks[0] == pytest.approx((62.5, 43.75))


# ---------------------------------------------------------------- the Python API


def test_predict_photos_one_row_per_face(runs):
    p = Predictor.from_checkpoint(runs[3], device="cpu")
    out = p.predict([portrait(), skdata.coffee(), two_faces()], batch_size=2)
    assert all(isinstance(r, FacePrediction) for r in out)
    by_image = {i: [r for r in out if r.image == i] for i in range(3)}
    assert found(by_image[0], FACE) and by_image[1] == []
    assert found(by_image[2], FACE) and found(by_image[2], SMALL_FACE)
    for r in out:
        assert list(r.probs) == p.classes and sum(r.probs.values()) == pytest.approx(1, abs=1e-5)
        assert r.label == max(r.probs, key=r.probs.get) and r.name == f"#{r.image}"
    assert [r.face for r in by_image[2]] == list(range(len(by_image[2])))


@pytest.mark.parametrize("chans", [1, 3])
def test_detect_false_prepares_crops_as_training_did(runs, chans):
    p = Predictor.from_checkpoint(runs[chans], device="cpu", detector=None)
    crop = crop_face(portrait(), FACE)
    got = p.predict(crop, detect=False)
    assert len(got) == 1 and got[0].box == (0, 0, *crop.shape[1::-1]) and got[0].score is None
    # The training cache: cv2 gray conversion, then INTER_AREA down to the model's size.
    size = p.meta["size"]
    x = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)[:, :, None] if chans == 1 else crop
    x = cv2.resize(x, (size, size), interpolation=cv2.INTER_AREA).reshape(size, size, chans)
    x = (torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        ref = torch.softmax(p.model(x)[1], 1)[0].numpy()
    assert np.allclose(list(got[0].probs.values()), ref, atol=1e-6)
    with pytest.raises(ValueError, match="no face detector"):
        p.predict(crop)


def test_test_time_views_average_the_shifted_and_mirrored_crops(runs):
    p = Predictor.from_checkpoint(runs[1], device="cpu", detector=None)
    tta = Predictor.from_checkpoint(runs[1], device="cpu", detector=None, flip=True, shift=0.1)
    crop = crop_face(portrait(), FACE)
    x = p.prepare([crop])
    with torch.no_grad():
        views = shifted_views(x, round(0.1 * p.meta["size"]))
        views += [v.flip(3) for v in views]
        ref = torch.stack([torch.softmax(p.model(v)[1], 1)[0] for v in views]).mean(0).numpy()
    assert len(views) == 18
    np.testing.assert_allclose(list(tta.predict(crop, detect=False)[0].probs.values()), ref, atol=1e-6)
    with pytest.raises(ValueError, match="shift=0.5; expected a share of the face crop's side"):
        Predictor.from_checkpoint(runs[1], device="cpu", detector=None, shift=0.5)


def test_input_kinds_agree(runs, tmp_path):
    p = Predictor.from_checkpoint(runs[3], device="cpu", detector=None)

    def probs(x):
        return np.array(list(p.predict(x, detect=False)[0].probs.values()))

    rgb = crop_face(portrait(), FACE)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([rgb, np.random.default_rng(0).integers(0, 256, rgb.shape[:2], np.uint8)])
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    gray16 = gray.astype(np.uint16) * 200
    cv2.imwrite(str(tmp_path / "gray16.png"), gray16)
    ref = probs(rgb)
    for same in (rgba, Image.fromarray(rgb), Image.fromarray(rgba), torch.from_numpy(rgb).permute(2, 0, 1)):
        assert np.array_equal(probs(same), ref)
    ref_gray = probs(gray)
    for same in (np.repeat(gray[:, :, None], 3, 2), gray[:, :, None], str(tmp_path / "gray.png"),
                 Image.fromarray(gray), torch.from_numpy(gray)):
        assert np.array_equal(probs(same), ref_gray)
    # 16-bit: file, array and tensor all scale by the image maximum, as read_image does
    ref16 = probs(str(tmp_path / "gray16.png"))
    assert np.array_equal(probs(gray16), ref16) and np.array_equal(probs(torch.from_numpy(gray16)), ref16)
    assert np.allclose(ref16, ref_gray, atol=0.02)
    assert len(p.predict(np.stack([rgb, rgb]), detect=False)) == 2      # a 4-D batch
    with pytest.raises(DataError, match="integer image"):
        p.predict(rgb.astype(np.float32), detect=False)
    with pytest.raises(DataError, match="cannot decode"):
        p.predict(__file__, detect=False)


# ---------------------------------------------------------------- the CLI


def _table(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_folder_reports_bad_files_and_continues(runs, tmp_path, capsys):
    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    cv2.imwrite(str(src / "astro.jpg"), portrait()[:, :, ::-1])
    cv2.imwrite(str(src / "sub" / "coffee.png"), skdata.coffee()[:, :, ::-1])
    gray16 = cv2.cvtColor(portrait(), cv2.COLOR_RGB2GRAY).astype(np.uint16) * 250
    cv2.imwrite(str(src / "sub" / "gray16.png"), gray16)
    Image.fromarray(portrait()).convert("RGBA").save(src / "rgba.png")
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    args = ["predict", "--checkpoint", runs[1], "--input", str(src), "--output", str(out), "--annotate"]
    assert main(args) == 0
    rows = _table(out / "predictions.csv")
    assert list(rows[0]) == columns(Predictor.from_checkpoint(runs[1], detector=None).classes)
    names = {r["file"].split("/")[-1] for r in rows}
    assert {"astro.jpg", "gray16.png", "rgba.png", "coffee.png"} == names
    no_face = [r for r in rows if r["file"].endswith("coffee.png")]     # listed, with empty cells
    assert len(no_face) == 1 and all(v == "" for k, v in no_face[0].items() if k != "file")
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["files"], summary["failed"], summary["faces"]) == (4, 2, len(rows) - 1)
    assert summary["without_face"] >= 1
    assert {e["file"] for e in summary["errors"]} == {"corrupt.jpg", "notes.txt"}
    assert "skipped corrupt.jpg" in capsys.readouterr().err
    assert (out / "annotated" / "astro.jpg").exists() and (out / "annotated" / "sub" / "coffee.jpg").exists()


def test_cli_no_detect_json_and_empty_folder(runs, tmp_path, capsys):
    crop = tmp_path / "crop.png"
    cv2.imwrite(str(crop), crop_face(portrait(), FACE)[:, :, ::-1])
    assert main(["predict", "--checkpoint", runs[3], "--input", str(crop), "--output", str(tmp_path / "o"),
                 "--no-detect", "--format", "json"]) == 0
    rows = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert len(rows) == 1 and rows[0]["score"] is None and rows[0]["w"] == rows[0]["h"]
    (tmp_path / "empty").mkdir()
    assert main(["predict", "--checkpoint", runs[3], "--input", str(tmp_path / "empty")]) == 2
    assert "holds no files" in capsys.readouterr().err


def test_cli_video_stride_tracks_and_annotated_mp4(runs, tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    vw = cv2.VideoWriter(str(src / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (768, 512))
    for i in range(6):  # the two faces drift right by 4 px a frame
        vw.write(np.ascontiguousarray(np.roll(two_faces(), 4 * i, axis=1)[:, :, ::-1]))
    vw.release()
    (src / "broken.mp4").write_bytes(b"\x00" * 1000)
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", runs[1], "--input", str(src), "--output", str(out),
                 "--stride", "2", "--smooth", "0.5", "--annotate"]) == 0
    rows = _table(out / "predictions.csv")
    assert sorted({int(r["frame"]) for r in rows}) == [0, 2, 4]
    assert {float(r["time_s"]) for r in rows} == {0.0, 0.2, 0.4}
    boxes = np.array([[int(r[k]) for k in "xywh"] for r in rows])
    big = [(r["frame"], r["track"]) for r, b in zip(rows, boxes)     # the large face, drifting
           if iou(b[None], np.array([[FACE[0] + 4 * int(r["frame"]), *FACE[1:]]]))[0, 0] > 0.3]
    assert len(big) == 3 and len({t for _, t in big}) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["files"], summary["failed"], summary["frames"]) == (1, 1, 3)
    cap = cv2.VideoCapture(str(out / "annotated" / "clip.mp4"))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 3
    cap.release()


def test_tracker_and_smoother():
    t = IoUTracker()
    assert t.update([(0, 0, 10, 10), (50, 50, 10, 10)]) == [0, 1]
    assert t.update([(52, 50, 10, 10), (1, 0, 10, 10), (100, 0, 5, 5)]) == [1, 0, 2]
    s = Smoother(0.5)
    assert np.allclose(s(0, np.array([1.0, 0.0])), [1, 0])
    assert np.allclose(s(0, np.array([0.0, 1.0])), [0.5, 0.5])


def test_onnx_export_matches_pytorch(runs, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path, side, _ = export_onnx(runs[3], str(tmp_path / "m.onnx"), dynamic_batch=True)
    info = json.loads(open(side).read())
    p = Predictor.from_checkpoint(runs[3], device="cpu", detector=None)
    assert info["classes"] == p.classes and info["channels"] == 3 and info["size"] == p.meta["size"]
    assert info["mean"] == [0.5] * 3 and info["std"] == [0.5] * 3
    x = p.prepare([crop_face(portrait(), FACE), skdata.coffee(), two_faces()])   # [3, C, S, S]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    logits, probs = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        ref = p.model(x)[1]
    assert np.allclose(logits, ref.numpy(), atol=1e-4)
    assert np.allclose(probs, torch.softmax(ref, 1).numpy(), atol=1e-4)
    assert main(["export", "--checkpoint", runs[1], "--output", str(tmp_path / "g.onnx")]) == 0
    assert (tmp_path / "g.json").exists()


def test_import_semifer_stays_light():
    code = "import sys, semifer; assert 'torch' not in sys.modules and 'cv2' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    import semifer
    assert semifer.Predictor is Predictor and semifer.FacePrediction is FacePrediction


def test_explain_detects_every_face_of_a_photo(runs, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "two.png"), two_faces()[:, :, ::-1])
    cv2.imwrite(str(photos / "coffee.png"), skdata.coffee()[:, :, ::-1])      # no face: reported, skipped
    out = tmp_path / "explain"
    assert main(["explain", "--checkpoint", runs[1], "--input", str(photos), "--detector", "auto",
                 "--out", str(out), "--device", "cpu"]) == 0
    names = [r.split(",")[1] for r in (out / "explain.csv").read_text().splitlines()[1:]]
    # both faces at least (the cascade detectors may add false positives); none from the coffee
    assert len(names) >= 2 and sorted(names) == sorted(f"two.png#face{j}" for j in range(len(names)))
    assert len(list(out.glob("cam_*.png"))) == len(names)


# ---------------------------------------------------------------- defaults and outputs

FER2013 = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


@pytest.fixture
def shipped_model(tmp_path, monkeypatch):
    """A tiny randomly initialised checkpoint, in the format of a run's weights, standing in for
    the model shipped in the package (the real file is not needed by the tests)."""
    import semifer.weights
    from semifer.checkpoint import save_weights
    from semifer.models import create_model

    path = tmp_path / "fer2013_cnn_fer.safetensors"
    model = create_model("cnn_small", num_classes=7, in_chans=1)
    meta = {"model": "cnn_small", "model_options": {}, "classes": FER2013, "in_chans": 1, "size": 32,
            "mean": 0.5, "std": 0.5, "algorithm": "supervised", "eval_weights": "model"}
    save_weights(str(path), {f"model.{k}": v for k, v in model.state_dict().items()}, meta)
    monkeypatch.setattr(semifer.weights, "DEFAULT_MODEL", str(path))
    return path


def test_no_checkpoint_uses_the_shipped_model_and_says_so(shipped_model, tmp_path, capsys):
    p = Predictor.from_checkpoint(device="cpu")
    assert p.classes == FER2013 and p.checkpoint == str(shipped_model)
    assert str(shipped_model) in capsys.readouterr().err
    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), portrait()[:, :, ::-1])
    assert main(["predict", "--input", str(photo), "--output", str(tmp_path / "out")]) == 0
    assert f"using the shipped model {shipped_model}" in capsys.readouterr().err
    rows = _table(tmp_path / "out" / "predictions.csv")
    assert len(rows) == 1 and rows[0]["label"] in FER2013
    assert found([Face(tuple(int(rows[0][k]) for k in "xywh"), 1.0)], FACE)


def test_missing_shipped_model_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import semifer.weights

    monkeypatch.setattr(semifer.weights, "DEFAULT_MODEL", str(tmp_path / "gone.safetensors"))
    with pytest.raises(FileNotFoundError, match="gone.safetensors is not in this install.*--checkpoint"):
        Predictor.from_checkpoint()
    cv2.imwrite(str(tmp_path / "a.png"), portrait())
    assert main(["predict", "--input", str(tmp_path / "a.png")]) == 2
    assert "gone.safetensors" in capsys.readouterr().err


def test_shipped_model_is_package_data():
    import semifer.weights

    with open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml")) as f:
        assert '"semifer.weights" = ["*.safetensors"]' in f.read()       # installed with the package
    assert semifer.weights.DEFAULT_MODEL == os.path.join(
        os.path.dirname(semifer.weights.__file__), "fer2013_cnn_fer.safetensors")


def test_missing_input_says_it_does_not_exist(runs, tmp_path, capsys):
    missing = tmp_path / "holiday" / "photo.jpg"
    assert main(["predict", "--checkpoint", runs[1], "--input", str(missing)]) == 2
    assert f"input {missing} does not exist" in capsys.readouterr().err


def _rows(boxes, label="surprise"):
    return [{"x": x, "y": y, "w": w, "h": h, "label": label, label: 0.87} for x, y, w, h in boxes]


def test_labels_avoid_neighbouring_boxes_and_grow_with_the_picture():
    from semifer.data.faces.samples import group_photo
    from semifer.predict.output import _overlap, label_layout

    _, boxes = group_photo()
    for k in (0.5, 1.0, 2.0):   # the group photo's boxes, and a row of faces 10 px apart
        for bx in ([tuple(round(v * k) for v in b) for b in boxes],
                   [(round(k * (40 + 70 * i)), round(k * 200), round(k * 60), round(k * 60)) for i in range(6)]):
            rects = [lab[1:5] for lab in label_layout(_rows(bx), round(720 * k), round(1280 * k))]
            for i, r in enumerate(rects):
                assert 0 <= r[0] <= 1280 * k - r[2] and 0 <= r[1] <= 720 * k - r[3]
                assert all(_overlap(r, o) == 0 for j, o in enumerate(bx) if j != i)         # no other face
                # no other label, where there is room: at k = 0.5 six 75 px labels (the legible
                # minimum) cannot share a 210 px row of 30 px faces, above and below
                assert k < 1 or all(_overlap(r, o) == 0 for j, o in enumerate(rects) if j != i)
    big, small = (label_layout(_rows([(100, 100, 400, 400)]), s, s)[0] for s in (2000, 800))
    assert big.h > small.h and big.scale == 2.0 and small.scale == pytest.approx(0.8)
    tiny = label_layout(_rows([(10, 10, 12, 12)]), 100, 100)[0]
    assert tiny.scale == 0.4                             # never below legible


def test_annotated_labels_have_a_filled_background():
    from semifer.predict.output import BOX_BGR, draw, label_layout

    rgb = np.full((480, 640, 3), 255, np.uint8)          # white: the old green text vanished on light
    rows = _rows([(200, 150, 120, 120)])
    lab = label_layout(rows, 480, 640)[0]
    out = draw(rgb, rows)
    patch = out[lab.y:lab.y + lab.h, lab.x:lab.x + lab.w].reshape(-1, 3)
    filled = (patch == BOX_BGR).all(1).mean()
    assert 0.5 < filled < 0.95 and (patch.sum(1) < 100).any()   # background with dark text on it


class _CutShortVideo:
    """A capture whose header announces 10 frames but which decodes only 4, as a truncated MP4
    that still opens does."""

    def __init__(self):
        self.left = 4

    def get(self, prop):
        return {cv2.CAP_PROP_FPS: 10.0, cv2.CAP_PROP_FRAME_COUNT: 10.0}.get(prop, 0.0)

    def grab(self):
        self.left -= 1
        return self.left >= 0

    def retrieve(self):
        return True, np.full((64, 64, 3), 128, np.uint8)

    def release(self):
        pass


def test_truncated_video_reports_frames_expected_against_read(runs, tmp_path, monkeypatch, capsys):
    import semifer.predict.run as run_mod

    clip = tmp_path / "cut.mp4"
    clip.write_bytes(b"stands in for a video cut short")
    monkeypatch.setattr(run_mod, "open_video", lambda source: _CutShortVideo())
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", runs[1], "--input", str(clip), "--output", str(out), "--no-detect"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["files"], summary["frames"]) == (1, 4)
    assert summary["warnings"] == [{"file": "cut.mp4", "expected_frames": 10, "read_frames": 4}]
    err = capsys.readouterr().err
    assert "announces 10 frames" in err and "only 4 could be read" in err and "1 read only in part" in err
