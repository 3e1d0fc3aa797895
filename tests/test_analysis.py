"""The evaluation suite: K-fold, label noise in runs, Grad-CAM, FGSM, calibration, a non-expression
label set end to end, and the HTML report."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from semifer.analysis import attack, calibration, cam, kfold, report
from semifer.cli import main
from semifer.evaluation.metrics import expected_calibration_error, mcnemar
from semifer.models import create_model

PATCH = 8


# ---------------------------------------------------------------- a toy model that must look at a patch

def patch_images(n: int, seed: int):
    """32 px gray noise; class 1 has a bright 8x8 patch somewhere, class 0 has none.
    Returns uint8 images [n, 32, 32, 1], labels [n], patch corners [n, 2] (-1 for class 0)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(40, 140, (n, 32, 32, 1)).astype(np.uint8)
    y = rng.integers(0, 2, n)
    corners = np.full((n, 2), -1)
    for i in np.flatnonzero(y == 1):
        r, c = rng.integers(0, 32 - PATCH, 2)
        x[i, r:r + PATCH, c:c + PATCH] = 250
        corners[i] = r, c
    return x, y, corners


@pytest.fixture(scope="module")
def patch_model():
    torch.manual_seed(0)
    model = create_model("cnn_small", num_classes=2, in_chans=1, widths=(8, 16))  # last map 8x8 at 32 px
    x, y, _ = patch_images(256, seed=1)
    xt = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    yt = torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(60):
        i = torch.randint(0, len(x), (32,))
        loss = torch.nn.functional.cross_entropy(model(xt[i])[1], yt[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_toy_model_learned_the_patch(patch_model):
    x, y, _ = patch_images(64, seed=2)
    probs = calibration.collect_logits(patch_model, x).softmax(1)
    assert (probs.argmax(1).numpy() == y).mean() > 0.9


def test_grad_cam_shape_and_highlights_the_planted_patch(patch_model):
    x, y, corners = patch_images(64, seed=3)
    maps, logits = cam.grad_cam(patch_model, x, targets=np.ones(len(x), dtype=int))
    assert maps.shape == (64, 32, 32) and logits.shape == (64, 2)
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    inside, outside, hits = [], [], []
    for m, (r, c) in zip(maps[y == 1], corners[y == 1]):
        mask = np.zeros((32, 32), bool)
        mask[r:r + PATCH, c:c + PATCH] = True
        inside.append(m[mask].mean())
        outside.append(m[~mask].mean())
        peak = np.unravel_index(m.argmax(), m.shape)      # within one 4 px cell of the last map
        hits.append(r - 4 <= peak[0] < r + PATCH + 4 and c - 4 <= peak[1] < c + PATCH + 4)
    assert np.mean(hits) >= 0.8 and np.mean(inside) > 2.5 * np.mean(outside)
    panel = cam.overlay(x[0], maps[0], size=64)
    assert panel.shape == (64, 128, 3) and panel.dtype == np.uint8


def test_grad_cam_on_a_vit_drops_the_class_token():
    torch.manual_seed(0)
    vit = create_model("vit_small_p8", num_classes=3, in_chans=1, img_size=32, embed_dim=32, depth=2, num_heads=2)
    reshape = cam.tokens_to_grid(vit)
    assert reshape(torch.zeros(2, 1 + 16, 32)).shape == (2, 32, 4, 4)  # class token + 4x4 patches
    x = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 1), dtype=np.uint8)
    maps, _ = cam.grad_cam(vit, x)
    assert maps.shape == (3, 32, 32) and np.isfinite(maps).all() and maps.max() > 0


class Linear(torch.nn.Module):
    """A linear 2-class model: FGSM moves every logit margin monotonically, so the accuracy
    cannot rise with eps, even where pixels clip at 0 or 1."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(32 * 32, 2)

    def forward(self, x):
        return x.flatten(1), self.fc(x.flatten(1))


def non_increasing(acc):
    return all(a >= b for a, b in zip(acc, acc[1:]))


def test_fgsm_accuracy_never_rises_with_epsilon(patch_model):
    torch.manual_seed(0)
    x, y, _ = patch_images(256, seed=6)
    linear = Linear()
    opt = torch.optim.Adam(linear.parameters(), lr=1e-2)
    xt = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    for _ in range(100):
        loss = torch.nn.functional.cross_entropy(linear(xt)[1], torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y, _ = patch_images(96, seed=4)
    eps = [0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
    acc = attack.fgsm_accuracy(linear, x, y, eps, region="all")["accuracy"]
    assert acc[0] > 0.8 and non_increasing(acc) and acc[-1] < acc[0]
    # The toy CNN: one gradient step is not monotone for a non-linear model in general (here
    # 0.125 at eps 0.08, 0.156 at 0.1), only far below the clean accuracy at every eps.
    acc = attack.fgsm_accuracy(patch_model, x, y, [0, 0.02, 0.04, 0.06], region="all")["accuracy"]
    assert acc[0] > 0.9 and non_increasing(acc) and acc[-1] < acc[0] - 0.3
    for region in ("focused", "unfocused"):
        r = attack.fgsm_accuracy(patch_model, x, y, [0, 0.1], region=region)
        assert r["accuracy"][0] == acc[0] and 0 < r["region_share"] < 1
    assert attack.parse_eps("0,0.02,...,0.1") == [0, 0.02, 0.04, 0.06, 0.08, 0.1]
    with pytest.raises(ValueError, match="region"):
        attack.region_mask(np.zeros((1, 2, 2)), "everywhere")


def test_fgsm_shows_progress_and_maps_batch_by_batch(patch_model, capsys):
    x, y, _ = patch_images(10, seed=7)
    r = attack.fgsm_accuracy(patch_model, x, y, [0, 0.1], region="focused", batch_size=4, progress=True)
    err = capsys.readouterr().err
    assert "FGSM focused: 100%" in err and "10/10" in err
    maps, _ = cam.grad_cam(patch_model, x)  # the share is the whole set's, not the last batch's
    assert r["region_share"] == round(float(attack.region_mask(maps, "focused").mean()), 4)


def test_region_mask_restricts_the_perturbation(patch_model):
    x, y, _ = patch_images(8, seed=5)
    maps, _ = cam.grad_cam(patch_model, x)
    x01 = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    sign = attack.input_gradient_sign(patch_model, x01, torch.from_numpy(y), 0.5, 0.5)
    m = torch.from_numpy(attack.region_mask(maps, "focused"))[:, None]
    moved = ((x01 + 0.1 * m * sign).clamp(0, 1) != x01)
    assert not moved[m.expand_as(moved) == 0].any()


# ---------------------------------------------------------------- calibration maths

def test_ece_on_hand_made_predictions():
    # 10 predictions at confidence 0.8 of which 6 right: one bin, |0.6 - 0.8| = 0.2
    probs = np.tile([0.8, 0.2], (10, 1))
    labels = np.array([0] * 6 + [1] * 4)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.2)
    # two bins: 4 at 0.95 all right (gap 0.05), 4 at 0.55 half right (gap 0.05) -> 0.05
    probs = np.array([[0.95, 0.05]] * 4 + [[0.55, 0.45]] * 4)
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.05)
    assert expected_calibration_error(np.eye(3), np.arange(3)) == 0.0


def test_mcnemar_exact_by_hand():
    # 10 images: 3 both right, 1 right by A alone, 5 by B alone, 1 both wrong. Only the 6
    # discordant count: p = 2 * P(X <= 1), X ~ Bin(6, 1/2) = 2 * (1 + 6) / 64
    a = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    b = np.array([1, 1, 1, 0, 1, 1, 1, 1, 1, 0], bool)
    assert mcnemar(a, b) == {"only_a": 1, "only_b": 5, "p_value": pytest.approx(14 / 64)}
    assert mcnemar(b, a)["p_value"] == pytest.approx(14 / 64)
    assert mcnemar(a, a) == {"only_a": 0, "only_b": 0, "p_value": 1.0}
    with pytest.raises(ValueError, match="same images"):
        mcnemar(a, b[:5])


def test_benchmark_rows_paired_from_the_results_file_alone():
    import importlib.util

    from semifer.engine.evaluate import correctness

    root = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "paired.py")
    spec = importlib.util.spec_from_file_location("paired", root)
    paired = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(paired)

    preds = {"b.png": ("sad", "sad"), "a.png": ("happy", "sad"), "c.png": ("fear", "fear")}
    fp, right = correctness(preds)
    assert right.tolist() == [False, True, True]           # id order: a, b, c
    assert correctness({**preds, "a.png": ("happy", "happy")})[0] == fp
    assert correctness({**preds, "a.png": ("sad", "sad")})[0] != fp  # another label: not pairable

    split = {"dataset": "d", "labels_per_class": 100, "iterations": 10, "model": "m", "val_fingerprint": fp}
    rows = [{**split, "algorithm": "supervised", "overrides": [], "seed": 0, "val_correct": "10100"},
            {**split, "algorithm": "fixmatch", "overrides": ["algorithm.tau=0.7"], "seed": 0, "val_correct": "11111"},
            {**split, "algorithm": "fixmatch", "overrides": [], "seed": 1, "val_correct": "11111"},   # no reference
            {**split, "algorithm": "ema_teacher", "overrides": [], "seed": 0, "val_correct": "11111",
             "val_fingerprint": "other"},                                                          # other images
            {**split, "algorithm": "flexmatch", "overrides": [], "seed": 0}]                       # older row
    out = paired.paired_rows(rows)
    assert len(out) == 1
    # right only in the run: 3 images, only in the reference: 0; p = 2 * (1/2)^3
    assert out[0] == {"algorithm": "fixmatch", "overrides": ["algorithm.tau=0.7"], "seed": 0,
                      "labels_per_class": 100, "iterations": 10, "accuracy": 100.0,
                      "reference_accuracy": 40.0, "delta": 60.0, "only_run": 3, "only_reference": 0,
                      "p_value": 0.25}

    # A shortened recipe: its runs pair with the supervised run that shares their overrides, or
    # with a named run (an ablation against its full variant).
    short = ["train.iterations=2000"]
    rows = [{**split, "algorithm": "supervised", "overrides": [], "seed": 2, "val_correct": "00000", "run": "sup"},
            {**split, "algorithm": "supervised", "overrides": short, "seed": 2, "val_correct": "10000", "run": "sup_short"},
            {**split, "algorithm": "sitfer", "overrides": short, "seed": 2, "val_correct": "11000", "run": "sitfer_full"},
            {**split, "algorithm": "sitfer", "overrides": short + ["algorithm.levels=sem"], "seed": 2,
             "val_correct": "11100", "run": "sitfer_sem"}]
    refs = {r["algorithm"] + str(len(r["overrides"])): r["reference_accuracy"] for r in paired.paired_rows(rows)}
    assert refs == {"supervised1": 0.0, "sitfer1": 20.0, "sitfer2": 20.0}
    against_full = paired.paired_rows(rows, reference_run="full")
    assert [(r["overrides"][-1], r["delta"]) for r in against_full if r["algorithm"] == "sitfer"] == [("algorithm.levels=sem", 20.0)]


def test_temperature_scaling_lowers_nll_of_an_overconfident_model():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (400,), generator=g)
    logits = torch.randn(400, 4, generator=g)
    logits[torch.arange(400), labels] += 1.0            # right ~60 % of the time...
    logits = logits * 6                                  # ...but sure of itself
    t = calibration.fit_temperature(logits, labels)
    assert t > 2
    s = calibration.calibration_summary(logits, labels, t)
    assert s["nll_after"] < s["nll_before"] and s["ece_after"] < s["ece_before"]
    assert calibration.nll(logits, labels, t) <= calibration.nll(logits, labels, t * 1.2) + 1e-6


# ---------------------------------------------------------------- runs: K-fold with label noise

def test_kfold_folds_are_disjoint_cover_the_set_and_resume(tiny, tmp_path, capsys):
    out = tmp_path / "kf"
    overrides = [o for o in tiny if not o.startswith("out=")] + ["data.label_noise=0.25", "train.iterations=2",
                                                                  "train.eval_every=2", "train.ckpt_every=2"]
    table = kfold.run_kfold(None, overrides, 2, str(out))
    assert len(table["rows"]) == 2 and (out / "kfold.md").exists()
    assert table["accuracy_mean"] == pytest.approx(np.mean([r["accuracy"] for r in table["rows"]]))
    pools = [{line.split("\t")[0] for line in (out / f"fold{k}" / "labelled.txt").read_text().splitlines()}
             for k in range(2)]
    every = pools[0] | pools[1]
    held = [every - p for p in pools]                      # each fold's test set
    assert not held[0] & held[1] and held[0] | held[1] == every
    assert sum(r["num_images"] for r in table["rows"]) == len(every) == 240
    for k in range(2):                                     # label noise: the share flipped, ids saved
        noisy = (out / f"fold{k}" / "noisy_labels.txt").read_text().splitlines()
        assert len(noisy) == round(0.25 * len(pools[k]))
        assert all(line.split("\t")[1] != line.split("\t")[2] for line in noisy)
    # finished folds are skipped: a second call trains nothing and gives the same table
    capsys.readouterr()
    again = kfold.run_kfold(None, overrides, 2, str(out))
    assert again["rows"] == table["rows"] and capsys.readouterr().out.count("finished earlier") == 2
    assert "mean ± std" in kfold.markdown_table(table)


def test_semi_supervised_kfold_keeps_labels_per_class_inside_the_training_folds(tiny, tmp_path):
    from semifer.config import load_config
    from semifer.data.prepare import prepare

    base = [o for o in tiny if not o.startswith("out=")] + ["data.protocol=kfold", "data.folds=3"]
    full = prepare(load_config(None, base + ["data.fold=1"]).data)
    semi = prepare(load_config(None, base + ["data.fold=1", "data.kfold_labels=labels_per_class",
                                             "data.labels_per_class=5", "data.unlabelled=rest"]).data)
    k = len(semi.classes)
    assert len(full.unlabelled) == 0                                   # default: every pool label kept
    assert np.bincount(semi.true_labels[semi.labelled], minlength=k).tolist() == [5] * k
    # the training folds are split into labelled + unlabelled; the held-out fold is in neither
    assert sorted(np.concatenate([semi.labelled, semi.unlabelled]).tolist()) == sorted(full.labelled.tolist())
    assert len(semi.test_labels) == len(full.test_labels)
    with pytest.raises(ValueError, match="kfold_labels"):
        prepare(load_config(None, base + ["data.kfold_labels=kfold"]).data)


# ---------------------------------------------------------------- a non-expression task end to end

def write_age_folders(root, per_class: dict[str, int]):
    """Synthetic 'age group' faces whose class sets the brightness, as a labels=custom folder."""
    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for k, group in enumerate(("child", "adult", "senior")):
            d = root / split / group
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (40, 40)) + 80 * k
                Image.fromarray(img.astype(np.uint8)).save(d / f"{i}.png")


@pytest.fixture(scope="module")
def age_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("age")
    write_age_folders(root / "data", {"train": 30, "test": 10})
    spec = f"folder:{root / 'data'}?labels=custom"
    args = ["train", "--data", spec, "--out", str(root / "run"), "data.size=32", "data.labels_per_class=5",
            f"data.cache_dir={root / 'cache'}", "model.name=cnn_small", "model.options={widths: [8, 16]}",
            "algorithm.name=fixmatch", "train.batch_size=8", "train.uratio=2", "train.iterations=30",
            "train.eval_every=10", "train.ckpt_every=30", "train.log_every=10", "train.threads=1",
            "train.optimizer=adamw", "train.lr=3e-3", "train.ema=0"]
    assert main(args) == 0
    return root, spec


def test_age_groups_train_and_evaluate_end_to_end(age_run):
    root, spec = age_run
    summary = json.loads((root / "run" / "summary.json").read_text())
    assert list(summary["per_class_recall"]) == ["adult", "child", "senior"]
    assert summary["labels_used"] == 15 and summary["unlabelled_used"] == 75 and summary["num_images"] == 30
    assert summary["accuracy"] > 0.5                       # brightness decides the class: learnable
    assert main(["eval", "--checkpoint", str(root / "run"), "--data", spec,
                 "--cache-dir", str(root / "cache")]) == 0
    metrics = json.loads((root / "run" / "eval" / "metrics.json").read_text())
    assert metrics["num_images"] == 30 and metrics["temperature"] == 1.0     # not calibrated yet


def test_calibrate_stores_a_temperature_that_load_model_applies(age_run):
    from semifer.engine.evaluate import predict_probs
    from semifer.models.io import load_model

    root, spec = age_run
    run = str(root / "run")
    assert main(["calibrate", "--checkpoint", run, "--data", spec, "--split", "test",
                 "--cache-dir", str(root / "cache")]) == 0
    cal = json.loads((root / "run" / "ckpt" / "last.temperature.json").read_text())
    assert cal["temperature"] > 0 and cal["fit"]["nll_after"] <= cal["fit"]["nll_before"] + 1e-6
    raw, _ = load_model(run, calibrated=False)
    scaled, meta = load_model(run)
    assert meta["temperature"] == cal["temperature"]
    assert main(["eval", "--checkpoint", run, "--data", spec, "--cache-dir", str(root / "cache"),
                 "--out", str(root / "eval_calibrated")]) == 0
    assert json.loads((root / "eval_calibrated" / "metrics.json").read_text())["temperature"] == cal["temperature"]
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, meta["in_chans"]), dtype=np.uint8)
    expect = predict_probs(raw, x, torch.device("cpu"), temperature=cal["temperature"])
    assert np.allclose(predict_probs(scaled, x, torch.device("cpu")), expect, atol=1e-5)
    # weights that changed after the fit (a resumed run) are not given a stale temperature
    path = root / "run" / "ckpt" / "last.temperature.json"
    path.write_text(json.dumps({**cal, "fingerprint": "0" * 16}))
    assert "temperature" not in load_model(run)[1]
    path.write_text(json.dumps(cal))


def test_explain_attack_and_report_on_a_run(age_run, tmp_path):
    root, spec = age_run
    run = str(root / "run")
    cache = ["--cache-dir", str(root / "cache")]
    img = next((root / "data" / "test" / "adult").iterdir())
    assert main(["explain", "--checkpoint", run, "--input", str(img), "--out", str(tmp_path / "one")]) == 0
    assert len(list((tmp_path / "one").glob("cam_*.png"))) == 1
    assert main(["explain", "--checkpoint", run, "--input", spec, "--limit", "6", "--target", "true"] + cache) == 0
    assert (root / "run" / "explain" / "examples.png").exists()
    assert len((root / "run" / "explain" / "explain.csv").read_text().splitlines()) == 7
    assert main(["attack", "--checkpoint", run, "--data", spec, "--eps", "0,0.05,...,0.15",
                 "--region", "focused,all", "--limit", "12"] + cache) == 0
    fgsm = json.loads((root / "run" / "attack" / "fgsm.json").read_text())
    assert [r["region"] for r in fgsm["results"]] == ["focused", "all"]
    assert fgsm["results"][0]["eps"] == [0, 0.05, 0.1, 0.15]
    out = tmp_path / "report.html"
    assert main(["report", run, run, "--out", str(out)]) == 0
    text = out.read_text()
    for needle in ("<table", "Test metrics", "Per-class recall", "senior", "Learning curves", "FGSM",
                   "Temperature scaling", "Grad-CAM examples", "data:image/png;base64,"):
        assert needle in text, needle
    assert main(["report", str(tmp_path / "nothing"), "--out", str(out)]) == 2


def test_explain_replaces_old_overlays_and_warns_about_whole_photos(age_run, tmp_path, capsys):
    from PIL import Image

    root, spec = age_run
    run, out = str(root / "run"), str(tmp_path / "cams")
    assert main(["explain", "--checkpoint", run, "--input", spec, "--limit", "5", "--out", out,
                 "--cache-dir", str(root / "cache")]) == 0
    assert len(list((tmp_path / "cams").glob("cam_*.png"))) == 5
    img = next((root / "data" / "test" / "adult").iterdir())
    photo = tmp_path / "photo.png"  # a "photo": far larger than the 32 px model input
    Image.open(img).resize((640, 480)).save(photo)
    capsys.readouterr()
    assert main(["explain", "--checkpoint", run, "--input", str(photo), "--out", out]) == 0
    assert len(list((tmp_path / "cams").glob("cam_*.png"))) == 1  # only this run's overlay
    err = capsys.readouterr().err
    assert "removed 5 overlay(s)" in err and "photo.png is 640x480 px" in err and "--detector auto" in err
    assert main(["explain", "--checkpoint", run, "--input", str(img), "--out", out]) == 0
    assert "warning" not in capsys.readouterr().err  # a face-crop-sized image passes without one


def test_report_includes_a_kfold_table(tmp_path):
    (tmp_path / "kf").mkdir()
    table = kfold.kfold_table([{"accuracy": 0.5, "macro_f1": 0.4, "ece": 0.1, "num_images": 10},
                               {"accuracy": 0.7, "macro_f1": 0.6, "ece": 0.2, "num_images": 10}])
    assert table["accuracy_mean"] == pytest.approx(0.6) and table["accuracy_std"] == pytest.approx(0.1414, abs=1e-4)
    (tmp_path / "kf" / "kfold.json").write_text(json.dumps(table))
    html = report.build_html([report.load_run(str(tmp_path / "kf"))])
    assert "K-fold" in html and "0.6000 ± 0.1414" in html and os.path.basename(str(tmp_path)) in html


@pytest.mark.skipif(not shutil.which("chromium-headless-shell"), reason="no headless Chromium on this machine")
def test_report_renders_in_headless_chromium(age_run, tmp_path):
    root, _ = age_run
    out, shot = tmp_path / "report.html", tmp_path / "report.png"
    assert main(["report", str(root / "run"), "--out", str(out)]) == 0
    subprocess.run(["chromium-headless-shell", "--no-sandbox", "--disable-gpu", "--window-size=1200,1600",
                    f"--screenshot={shot}", out.as_uri()], check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (1600, 1200) and pixels.std() > 20   # tables and figures, not a blank page


# ---------------------------------------------------------------- label-shift adaptation

def test_em_recovers_the_prior_that_generated_the_target_images():
    from semifer.evaluation.prior import em_prior

    # two kinds of face: P(A | class 0) = 0.8, P(A | class 1) = 0.2, so a model trained under a
    # uniform prior says (0.8, 0.2) on A and (0.2, 0.8) on B. Under the target prior (0.75, 0.25)
    # P(A) = 0.75 * 0.8 + 0.25 * 0.2 = 0.65: 13 A and 7 B of 20, whose ML prior is (0.75, 0.25)
    probs = np.array([[0.8, 0.2]] * 13 + [[0.2, 0.8]] * 7)
    prior, iters = em_prior(probs, np.array([0.5, 0.5]))
    assert np.allclose(prior, [0.75, 0.25], atol=1e-6) and iters > 1
    # the target prior equal to the source one: nothing moves
    prior, _ = em_prior(np.array([[0.8, 0.2]] * 10 + [[0.2, 0.8]] * 10), np.array([0.5, 0.5]))
    assert np.allclose(prior, [0.5, 0.5])
    with pytest.raises(ValueError, match="2 classes"):
        em_prior(np.ones((3, 3)) / 3, np.array([0.5, 0.5]))


def test_adapt_prior_stores_a_prior_that_load_model_applies(age_run):
    from semifer.engine.evaluate import predict_probs
    from semifer.models.io import load_model

    root, spec = age_run
    run = str(root / "run")
    cache = ["--cache-dir", str(root / "cache")]
    assert main(["adapt-prior", "--checkpoint", run, "--data", spec, "--split", "test", *cache]) == 0
    path = root / "run" / "ckpt" / "last.prior.json"
    est = json.loads(path.read_text())
    assert est["num_images"] == 30 and np.isclose(sum(est["prior"]), 1.0)
    assert est["reference"] == "mean prediction on 15 source images"      # the run's labelled.txt
    assert main(["adapt-prior", "--checkpoint", run, "--data", spec, "--split", "test", *cache,
                 "--source-prior", "1", "1", "1"]) == 0
    est = json.loads(path.read_text())
    assert est["train_prior"] == pytest.approx([1 / 3] * 3, abs=1e-5) and est["reference"] == "given"
    raw, _ = load_model(run, adapted=False)
    adapted, meta = load_model(run)
    assert meta["target_prior"] == est["prior"]
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, meta["in_chans"]), dtype=np.uint8)
    p = predict_probs(raw, x, torch.device("cpu"))
    expect = p * np.array(est["prior"]) / np.array(est["train_prior"])
    assert np.allclose(predict_probs(adapted, x, torch.device("cpu")), expect / expect.sum(1, keepdims=True), atol=1e-5)
    assert main(["eval", "--checkpoint", run, "--data", spec, *cache, "--out", str(root / "eval_adapted")]) == 0
    assert json.loads((root / "eval_adapted" / "metrics.json").read_text())["target_prior"] == est["prior"]
    # measured from the model's own mean prediction on its source images, a target made of those
    # very images leaves the prior where it was
    assert main(["adapt-prior", "--checkpoint", run, "--data", spec, "--split", "train",
                 "--source-data", spec, "--source-split", "train", *cache]) == 0
    est = json.loads(path.read_text())
    assert np.allclose(est["prior"], est["train_prior"], atol=1e-4) and est["reference"].startswith("mean prediction")
    path.write_text(json.dumps({**est, "fingerprint": "0" * 16}))    # other weights: not applied
    assert "target_prior" not in load_model(run)[1]
    assert main(["adapt-prior", "--checkpoint", run, "--remove"]) == 0
    assert not path.exists()
