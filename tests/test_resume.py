"""One resume path for training and MAE pre-training (``engine/run.py``): a run stopped by a real
SIGINT and resumed ends bit for bit where the uninterrupted run ends, logs each step once with the
same numbers, and both kinds of run refuse the same things (docs/reliability.md)."""
import json
import os
import signal

import numpy as np
import pytest
from safetensors.torch import load_file

from semifer.checkpoint import CheckpointError
from semifer.config import load_config
from semifer.data.sampler import BatchStream
from semifer.engine.run_dir import RunFolderError
from semifer.engine.train import train
from semifer.ssl import pretrain as pre

# A two-block MAE on the synthetic faces at 32 px, 6 iterations like conftest's TINY.
PRETRAIN = ["data.sources=synthetic:?n=240", "data.size=32", "model.name=vit_tiny_p8",
            "model.options={depth: 2, embed_dim: 32, num_heads: 2}", "mae.decoder_dim=16", "mae.decoder_depth=1",
            "mae.decoder_heads=2", "train.batch_size=8", "train.iterations=6", "train.warmup=1",
            "train.log_every=2", "train.vis_every=3", "train.ckpt_every=100", "train.threads=1"]


def _job(kind: str, tiny: list[str], tmp_path):
    """``(config(name, *overrides), run)`` for a run of ``kind`` (an algorithm, or "pretrain") in
    ``tmp_path/name``; deterministic, fp32, a checkpoint only when stopped or finished."""
    exact = ["train.deterministic=true", "train.amp=none"]
    if kind.startswith("pretrain"):
        base = PRETRAIN + exact + [f"data.cache_dir={tmp_path / 'cache'}"]
        if kind == "pretrain_simclr":  # a CNN, two RandAugment views a face, batch norm in the head
            base = [o for o in base if not o.startswith(("model.", "mae."))]
            base += ["method=simclr", "model.name=cnn_small", "model.options={widths: [8, 16]}"]
        return (lambda name, *extra: pre.load_pretrain_config(None, base + [f"out={tmp_path / name}", *extra]),
                pre.pretrain)
    algorithm = [f"algorithm.name={kind}"]
    if kind == "ema_teacher_online_prior":   # state beyond the model: the estimated prior pi
        algorithm = ["algorithm.name=ema_teacher", "algorithm.prior=online", "algorithm.prior_momentum=0.5"]
    if kind == "ema_teacher_contrast":       # state beyond the model: the key head's EMA
        algorithm = ["algorithm.name=ema_teacher", "algorithm.contrast=1.0"]
    if kind == "cross_teacher":              # state beyond the model: the peer, its teacher, the prior
        algorithm = ["algorithm.name=cross_teacher", "algorithm.prior=online", "algorithm.prior_momentum=0.5"]
    base = tiny + exact + algorithm + ["train.ckpt_every=100", "train.eval_every=100"]
    return lambda name, *extra: load_config(None, base + [f"out={tmp_path / name}", *extra]), train


def _interrupt_at(monkeypatch, n: int) -> None:
    """A real SIGINT while step ``n`` draws its first batch (the labelled one in training, the
    pool's in pre-training); ``monkeypatch.undo()`` removes it."""
    original, seen = BatchStream.next, {"stream": None, "draws": 0}

    def next_(self):
        seen["stream"] = seen["stream"] or self   # the first stream drawn from: once per step
        if self is seen["stream"]:
            seen["draws"] += 1
            if seen["draws"] == n:
                os.kill(os.getpid(), signal.SIGINT)
        return original(self)

    monkeypatch.setattr(BatchStream, "next", next_)


def _metrics(run) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "images_per_s"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind", ["supervised", "fixmatch", "ema_teacher_online_prior", "ema_teacher_contrast", "cross_teacher", "pretrain",
                                  "pretrain_simclr"])
def test_resume_equals_the_uninterrupted_run(kind, tiny, tmp_path, monkeypatch):
    config, run = _job(kind, tiny, tmp_path)
    run(config("straight"))
    _interrupt_at(monkeypatch, 4)   # the step finishes, is saved, and the run stops
    assert run(config("resumed")) == {"interrupted": True, "step": 4, "run": str(tmp_path / "resumed")}
    monkeypatch.undo()
    assert run(config("resumed", "resume=true"))["resumed_at"] == 4

    a, b = (load_file(tmp_path / r / "ckpt" / "last.safetensors") for r in ("straight", "resumed"))
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k].numpy(), b[k].numpy()), k
    assert _metrics(tmp_path / "resumed") == _metrics(tmp_path / "straight")   # each step once, same numbers


@pytest.mark.parametrize("kind", ["supervised", "pretrain"])
def test_resume_refuses_what_it_cannot_continue(kind, tiny, tmp_path, monkeypatch):
    config, run = _job(kind, tiny, tmp_path)
    with pytest.raises(CheckpointError, match="last_state.pt does not exist; nothing to resume"):
        run(config("run", "resume=true"))
    _interrupt_at(monkeypatch, 4)
    assert run(config("run"))["interrupted"]
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="already holds a run; pass resume=true"):
        run(config("run"))   # a fresh run never overwrites one
    other = "mae.mask_ratio=0.5" if kind == "pretrain" else "model.name=resnet18_small"
    with pytest.raises(RunFolderError, match=f"differ from .*config.yaml:\n  {other.split('=')[0]}: "):
        run(config("run", "resume=true", other))
    run(config("run", "resume=true"))
    summary = (tmp_path / "run" / "summary.json").read_bytes()
    with pytest.raises(CheckpointError, match="is finished"):
        run(config("run", "resume=true"))
    assert (tmp_path / "run" / "summary.json").read_bytes() == summary
