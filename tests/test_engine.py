import json
import os
import shutil
import subprocess
import sys

import pytest

from semifer.config import load_config
from semifer.engine import train as train_mod
from semifer.engine.train import train


def test_run_folder_and_summary(tiny, tmp_path):
    summary = train(load_config(None, tiny))
    run = tmp_path / "run"
    for name in ("config.yaml", "labelled.txt", "data.json", "metrics.jsonl", "summary.json",
                 "test_confusion.png", "ckpt/last.safetensors", "ckpt/last_state.pt", "ckpt/best.safetensors"):
        assert (run / name).exists(), name
    assert summary["labels_used"] == 42  # 6 per class x 7 classes
    assert len((run / "labelled.txt").read_text().splitlines()) == 42
    assert 0.0 <= summary["accuracy"] <= 1.0 and summary["num_images"] > 0
    assert summary["images_per_s"] > 0 and summary["iterations"] == 6
    counts = json.loads((run / "data.json").read_text())
    assert counts["labelled"] == [6] * 7
    rows = (run / "test_predictions.csv").read_text().splitlines()
    assert rows[0] == "id,label,pred,confidence" and len(rows) == 1 + summary["num_images"]
    right = [r.split(",")[1] == r.split(",")[2] for r in rows[1:]]
    assert sum(right) / len(right) == pytest.approx(summary["accuracy"])


@pytest.mark.parametrize("bad, message", [
    (["algorithm.name=fixmach"], "unknown algorithm 'fixmach'"),
    (["algorithm.name=fixmatch", "algorithm.tua=0.9"], "no option 'tua'"),
    (["model.name=resnet81_small"], "unknown model 'resnet81_small'"),
    (["data.test=fer2031:/nowhere"], "unknown dataset 'fer2031'"),
])
def test_a_bad_config_fails_before_data_or_run_folder(tiny, tmp_path, monkeypatch, bad, message):
    def no_data(*a, **k):
        raise AssertionError("the data was prepared before the config was checked")

    monkeypatch.setattr(train_mod, "prepare", no_data)
    with pytest.raises((ValueError, KeyError), match=message):
        train(load_config(None, tiny + bad))
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


# Resuming (and refusing to) is tested for training and pre-training alike in test_resume.py.


def test_corrupt_images_are_skipped_and_listed(tmp_path, noise_folder):
    root = noise_folder(20)
    (root / "train" / "happy" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    overrides = [f"data.train=folder:{root}", "data.size=16", "data.labels_per_class=2", "model.name=cnn_small",
                 "train.batch_size=4", "train.iterations=2", "train.threads=1",
                 f"data.cache_dir={tmp_path / 'c'}", f"out={tmp_path / 'run'}"]
    summary = train(load_config(None, overrides))
    corrupt = (tmp_path / "run" / "corrupt.txt").read_text()
    assert "broken.png" in corrupt and summary["num_images"] == 12
    with pytest.raises(Exception, match="broken.png"):
        train(load_config(None, overrides + ["data.strict=true", f"out={tmp_path / 'strict'}",
                                             f"data.cache_dir={tmp_path / 'c2'}"]))


def test_cli_train_eval_list(tiny, tmp_path):
    cli = [sys.executable, "-m", "semifer.cli"]
    subprocess.run(cli + ["train"] + tiny, check=True, capture_output=True)
    ev = cli + ["eval", "--checkpoint", str(tmp_path / "run"), "--data", "synthetic:?n=50", "--split", "val"]
    out = subprocess.run(ev + ["--json"], check=True, capture_output=True, text=True)
    metrics = json.loads(out.stdout)
    assert metrics["num_images"] == 50 and len(metrics["confusion_matrix"]) == 7
    assert json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text()) == metrics
    table = subprocess.run(ev, check=True, capture_output=True, text=True).stdout.splitlines()
    assert table[0].startswith(f"accuracy {metrics['accuracy']:.4f}") and "images 50" in table[0]
    last, recall = list(metrics["per_class_recall"].items())[-1]
    assert len(table) == 2 + 1 + 7 and table[-1].split() == [last, f"{recall:.4f}"]  # headline, header, 7 classes
    assert (tmp_path / "run" / "eval" / "metrics_confusion.png").exists()
    assert len((tmp_path / "run" / "eval" / "metrics_predictions.csv").read_text().splitlines()) == 51
    tta = subprocess.run(ev + ["--json", "--flip", "--shift", "0.125", "--out", str(tmp_path / "tta")],
                         check=True, capture_output=True, text=True)
    assert json.loads(tta.stdout)["test_time"] == {"flip": True, "shift": 0.125} and metrics["test_time"]["shift"] == 0
    bad = subprocess.run(ev + ["--shift", "0.5"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--shift 0.5; expected a share of the image side" in bad.stderr

    # compare: a copy whose predictions are right on one more image than the run's
    run, other = tmp_path / "run", tmp_path / "other"
    shutil.copytree(run, other)
    rows = (run / "test_predictions.csv").read_text().splitlines()
    wrong = next(i for i, r in enumerate(rows[1:], 1) if r.split(",")[1] != r.split(",")[2])
    image, label, _, conf = rows[wrong].split(",")
    rows[wrong] = ",".join([image, label, label, conf])
    (other / "test_predictions.csv").write_text("\n".join(rows) + "\n")
    out = subprocess.run(cli + ["compare", str(run), str(other)], check=True, capture_output=True, text=True).stdout
    n = len(rows) - 1
    assert f"{other}: {100 / n:+.2f} points; right only here 1, only in the reference 0; p = 1" in out
    assert "--eval" not in out and f"{run}: not paired" not in out
    out = subprocess.run(cli + ["compare", "--eval", str(run), str(other)], check=True, capture_output=True,
                         text=True).stdout   # the copy holds the same eval folder: no difference
    assert f"{other}: +0.00 points; right only here 0, only in the reference 0; p = 1" in out
    (other / "eval" / "metrics_predictions.csv").write_text("id,label,pred,confidence\nx.png,happy,happy,0.9\n")
    out = subprocess.run(cli + ["compare", "--eval", str(run), str(other)], check=True, capture_output=True,
                         text=True).stdout
    assert f"{other}: not paired: its test images or labels differ from {run}'s" in out
    names = subprocess.run(cli + ["list", "algorithms"], check=True, capture_output=True, text=True).stdout.split()
    assert "supervised" in names and "fixmatch" in names
    bad = subprocess.run(cli + ["train"] + tiny + ["train.bogus=1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "train.bogus" in bad.stderr


@pytest.mark.parametrize("algorithm", ["fixmatch", "dst"])   # dst: heads outside DDP, their gradients averaged by hooks
def test_torchrun_two_processes(tiny, tmp_path, algorithm):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "semifer.cli", "train"] + tiny + [f"algorithm.name={algorithm}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["iterations"] == 6
