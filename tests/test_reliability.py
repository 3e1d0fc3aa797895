"""Semifer never loses or corrupts work: atomic checkpoint pairs, one writer per run folder,
resumes checked against the run's record, checksums, a NaN stop (docs/reliability.md)."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from semifer.algorithms import ALGORITHMS
from semifer.config import load_config
from semifer import checkpoint as ckpt
from semifer.engine import run_dir
from semifer.engine import train as train_mod
from semifer.engine.train import Diverged, train

RECORD = ("config.yaml", "labelled.txt", "data.json")


def _interrupted(tiny, tmp_path, monkeypatch, interrupt_at, extra=(), at: int = 4):
    """A run stopped by a real SIGINT after step ``at``: checkpoints at steps 3 and 4."""
    interrupt_at(at)
    assert train(load_config(None, tiny + list(extra)))["interrupted"]
    monkeypatch.undo()
    return tmp_path / "run"


def _snapshot(run) -> dict:
    return {name: (run / name).read_bytes() for name in RECORD}


# ---------------------------------------------------------------- weights and state as one unit

def test_weights_and_state_of_different_steps_are_refused(tiny, tmp_path, monkeypatch):
    """A kill between the two renames left weights at step 15 and state at step 10; the resume
    trained a hybrid and exited 0."""
    real = ckpt.save_weights

    def killed_before_weights(path, tensors, meta):
        if meta["step"] == 6 and path.endswith("last.safetensors"):
            raise KeyboardInterrupt  # as if killed between the state's rename and the weights'
        real(path, tensors, meta)

    monkeypatch.setattr(ckpt, "save_weights", killed_before_weights)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(None, tiny))
    monkeypatch.undo()
    run = tmp_path / "run"
    orphan = run / "ckpt" / "last.tmp-0123abcd.safetensors"  # what kill -9 inside atomic_path leaves
    orphan.write_bytes(b"half a file")
    with pytest.raises(ckpt.CheckpointError, match=r"last.safetensors holds step 3 but .*last_state.pt holds step 6"):
        train(load_config(None, tiny + ["resume=true"]))
    assert not orphan.exists()


def test_corrupt_state_file_is_refused(tiny, tmp_path, monkeypatch, interrupt_at):
    run = _interrupted(tiny, tmp_path, monkeypatch, interrupt_at)
    raw = bytearray((run / "ckpt" / "last_state.pt").read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # torch.load does not notice: the zip's CRCs are not checked
    (run / "ckpt" / "last_state.pt").write_bytes(bytes(raw))
    with pytest.raises(ckpt.CheckpointError, match="last_state.pt is corrupt or was replaced"):
        train(load_config(None, tiny + ["resume=true"]))


def test_zero_byte_state_file_names_the_reason(tmp_path):
    (tmp_path / "s.pt").write_bytes(b"")
    with pytest.raises(ckpt.CheckpointError, match=r"s.pt is empty \(0 bytes\)"):
        ckpt.load_state(str(tmp_path / "s.pt"))


# ---------------------------------------------------------------- integrity

def test_corrupted_weights_file_is_an_error(tmp_path):
    """4 KB overwritten inside last.safetensors was accepted and trained on as NaN."""
    path = str(tmp_path / "w.safetensors")
    ckpt.save_weights(path, {"a": torch.randn(4096), "b": torch.arange(10)}, {"step": 1})
    tensors, meta = ckpt.load_weights(path)
    assert meta == {"step": 1} and torch.equal(tensors["b"], torch.arange(10))
    raw = bytearray(open(path, "rb").read())
    raw[-8000:-4000] = os.urandom(4000)  # inside the tensor bytes; the header still parses
    open(path, "wb").write(bytes(raw))
    with pytest.raises(ckpt.CheckpointError, match=r"w.safetensors is corrupt: its tensors hash to sha256"):
        ckpt.load_weights(path)


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny, tmp_path, monkeypatch):
    cls = ALGORITHMS.get("supervised")
    step_ = cls.step

    def poisoned(self, model, batch, step, teacher=None):
        out = step_(self, model, batch, step, teacher)
        if step >= 4:  # the 5th step
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(cls, "step", poisoned)
    with pytest.raises(Diverged, match=r"loss is nan at step 5 .*keeps the last good checkpoint \(step 3\)"):
        train(load_config(None, tiny))
    run = tmp_path / "run"
    tensors, meta = ckpt.load_weights(str(run / "ckpt" / "last.safetensors"))
    assert meta["step"] == 3 and all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
    assert not (run / "summary.json").exists()


# ---------------------------------------------------------------- one writer per run folder

def test_second_run_on_a_locked_folder_fails_naming_the_holder(tiny, tmp_path):
    """Two `semifer train --out r` 2 s apart both exited 0 and interleaved metrics.jsonl."""
    run = tmp_path / "run"
    with run_dir.locked(str(run)):
        with pytest.raises(run_dir.RunFolderError, match=f"in use by process {os.getpid()}"):
            train(load_config(None, tiny))
        proc = subprocess.run([sys.executable, "-m", "semifer.cli", "train"] + tiny, capture_output=True,
                              text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert proc.returncode == 2 and f"in use by process {os.getpid()}" in proc.stderr
    assert os.listdir(run) == [".lock"]  # neither wrote anything
    assert train(load_config(None, tiny))["iterations"] == 6  # released


# ---------------------------------------------------------------- resume against the run's record

@pytest.mark.parametrize("change, named", [
    ("model.name=resnet18_small", "model.name: 'cnn_small' in the run, 'resnet18_small' now"),
    ("algorithm.name=fixmatch", "algorithm.name: 'supervised' in the run, 'fixmatch' now"),
    ("data.train=synthetic:?n=200", "data.train: 'synthetic:?n=240' in the run, 'synthetic:?n=200' now"),
])
def test_incompatible_resume_is_refused_before_writing(tiny, tmp_path, monkeypatch, change, named, interrupt_at):
    run = _interrupted(tiny, tmp_path, monkeypatch, interrupt_at)
    before = _snapshot(run)
    with pytest.raises(run_dir.RunFolderError, match="differ from .*config.yaml") as e:
        train(load_config(None, tiny + ["resume=true", change]))
    assert named in str(e.value) and "train.iterations" in str(e.value)  # lists what may change
    assert _snapshot(run) == before


def test_resume_on_changed_data_names_the_differences(tmp_path, monkeypatch, interrupt_at, noise_folder):
    """Same spec, other files: the record catches what the config cannot."""
    root = noise_folder(16)
    tiny = [f"data.train=folder:{root}", "data.size=16", "data.labels_per_class=2", "model.name=cnn_small",
            "train.batch_size=8", "train.iterations=6", "train.ckpt_every=3", "train.eval_every=3",
            "train.threads=1", f"data.cache_dir={tmp_path / 'c'}", f"out={tmp_path / 'run'}"]
    run = _interrupted(tiny, tmp_path, monkeypatch, interrupt_at)
    before = _snapshot(run)
    os.rename(root / "train" / "happy" / "0.png", root / "train" / "sad" / "9.png")
    with pytest.raises(run_dir.RunFolderError, match="other data than") as e:
        train(load_config(None, tiny + ["resume=true"]))
    assert "data.json train_fingerprint" in str(e.value) and "data.json unlabelled" in str(e.value)
    assert _snapshot(run) == before


def test_safe_changes_resume_and_metrics_are_not_repeated(tiny, tmp_path, monkeypatch, capsys, interrupt_at):
    run = _interrupted(tiny, tmp_path, monkeypatch, interrupt_at)
    with open(run / "metrics.jsonl", "a") as f:  # logged after the checkpoint by a run then killed
        f.write(json.dumps({"step": 6, "loss": 9.0}) + "\n")
    summary = train(load_config(None, tiny + ["resume=true", "train.iterations=8", "train.eval_every=4"]))
    assert summary["resumed_at"] == 4 and summary["iterations"] == 8
    assert "train.iterations: 6 in the run, 8 now" in capsys.readouterr().out
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == [2, 4, 6, 8]
    assert "iterations: 8" in (run / "config.yaml").read_text()


# A finished run, an empty folder or another run's folder: test_resume.py, for training and
# pre-training alike.


# ---------------------------------------------------------------- untrusted checkpoint metadata

_OPENED: list = []


def _record_opens(event, args):
    if event == "open" and _OPENED and isinstance(args[0], str):
        _OPENED.append(args[0])


sys.addaudithook(_record_opens)  # an audit hook cannot be removed: it records only while armed


def _checkpoint(tmp_path, name: str, options: dict, **meta) -> str:
    """A weights file with real tensors for ``name`` and the metadata an attacker chose."""
    from semifer.models import create_model

    model = create_model(name, num_classes=7, in_chans=1)
    path = str(tmp_path / "hostile.safetensors")
    ckpt.save_weights(path, {f"model.{k}": v for k, v in model.state_dict().items()}, {
        "model": name, "model_options": options, "classes": list("abcdefg"), "in_chans": 1, "size": 32,
        "mean": 0.5, "std": 0.5, "eval_weights": "model", **meta})
    return path


@pytest.mark.parametrize("name", ["hf-hub:attacker/fer-model", "local-dir:/tmp/x", "resnet10t/../../x",
                                  "timm/resnet10t", "no_such_arch"])
def test_hostile_model_names_are_refused(tmp_path, monkeypatch, name):
    import timm

    from semifer.models.io import load_model

    path = _checkpoint(tmp_path, "cnn_small", {})
    tensors, meta = ckpt.load_weights(path)
    ckpt.save_weights(path, tensors, {**meta, "model": name})
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: pytest.fail(f"timm.create_model{a}{k}"))
    with pytest.raises(ckpt.CheckpointError, match=r"hostile.safetensors: metadata model=.* is not a registered"):
        load_model(path)


def test_hostile_model_options_never_read_another_file(tmp_path, capsys):
    from semifer.models.io import load_model

    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"not for you")
    path = _checkpoint(tmp_path, "resnet10t", {
        "pretrained": True, "pretrained_cfg_overlay": {"file": str(secret)}, "checkpoint_path": str(secret),
        "pretrained_cfg": {"url": "https://attacker.example/w.pth", "hf_hub_id": "attacker/x"}, "drop_path_rate": 0.0})
    _OPENED.append(None)  # arm the hook
    try:
        model, meta = load_model(path)
    finally:
        opened = [p for p in _OPENED[1:]]
        _OPENED.clear()
    assert str(secret) not in opened
    assert not any(p.startswith(("http", "attacker")) for p in opened)
    assert "ignored model options ['checkpoint_path', 'pretrained', 'pretrained_cfg', 'pretrained_cfg_overlay']" \
        in capsys.readouterr().err
    assert meta["model"] == "resnet10t" and model(torch.zeros(1, 1, 32, 32))[1].shape == (1, 7)


def test_model_init_with_a_pickle_payload_is_a_clear_error(tmp_path):
    """``model.init=evil.pt`` gave a raw UnpicklingError traceback."""
    import pickle

    from semifer.models.io import init_from
    from semifer.models import create_model

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"w": Payload()}))
    with pytest.raises(ckpt.CheckpointError, match=r"model.init=.*evil.pt: expected a state dict of tensors"):
        init_from(create_model("cnn_small", num_classes=7), str(tmp_path / "evil.pt"))
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("spec, match", [
    ("synthetic:?size=3000000", r"8 <= size <= 1024, got n=\d+, size=3000000"),
    ("synthetic:?n=100000000000", r"0 <= n <= 10000000 .*, got n=100000000000,"),
    ("synthetic:?imbalance=nan", r"imbalance=nan: expected a finite number"),
    ("synthetic:?imbalance=inf", r"imbalance=inf: expected a finite number"),
])
def test_absurd_synthetic_options_are_clear_errors(spec, match):
    from semifer.data.base import DataError, open_split

    with pytest.raises(DataError, match=match):
        open_split(spec)


def test_macro_f1_averages_over_the_classes_present():
    """A 2-class test folder read by a 7-class model at 70 % accuracy reported macro-F1 0.118."""
    from semifer.evaluation.metrics import classification_metrics

    classes = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger")
    labels = np.array([1] * 5 + [2] * 5)
    pred = np.array([1, 1, 1, 1, 2, 2, 2, 2, 1, 0])   # 7 of 10 right
    m = classification_metrics(labels, np.eye(7)[pred], classes)
    assert m["accuracy"] == pytest.approx(0.7) and m["macro_f1_classes"] == ["happy", "sad"]
    f1_happy, f1_sad = 2 * 4 / (2 * 4 + 1 + 1), 2 * 3 / (2 * 3 + 1 + 2)
    assert m["macro_f1"] == pytest.approx((f1_happy + f1_sad) / 2)


# ---------------------------------------------------------------- DDP: stop together

_SIGNAL_ONE_RANK = """
import os, signal, sys
from semifer.engine import train as t
original, calls = t.BatchStream.next, [0]
def next_(self):
    if self.name == "labelled" and os.environ["RANK"] == "1":  # only rank 1 is signalled
        calls[0] += 1
        if calls[0] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
    return original(self)
t.BatchStream.next = next_
from semifer.cli import main
sys.exit(main(["train", *sys.argv[1:]]))
"""


def test_ddp_stop_on_one_rank_stops_all_ranks(tiny, tmp_path):
    """SIGTERM to one rank only: it stopped alone and left the others waiting in an all-reduce."""
    script = tmp_path / "signal_one_rank.py"
    script.write_text(_SIGNAL_ONE_RANK)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541", str(script)]
    proc = subprocess.Popen(cmd + tiny + ["train.ckpt_every=100", "train.eval_every=100"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        out, _ = proc.communicate(timeout=600)  # minutes on a loaded 2-core machine
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the ranks did not stop together: one waits forever")
    assert "interrupted after step 3" in out, out[-3000:]
    _, meta = ckpt.load_weights(str(tmp_path / "run" / "ckpt" / "last.safetensors"))
    assert meta["step"] == 3 and not (tmp_path / "run" / "summary.json").exists()
