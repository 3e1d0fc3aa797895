import os
import signal
import socket

import pytest
import torch
import torch.distributed as dist

# Every engine test trains this small model on the embedded synthetic faces at 32 px.
TINY = [
    "data.train=synthetic:?n=240", "data.size=32", "data.labels_per_class=6",
    "model.name=cnn_small", "train.batch_size=8", "train.uratio=2", "train.iterations=6",
    "train.eval_every=3", "train.ckpt_every=3", "train.log_every=2", "train.threads=1",
]


@pytest.fixture
def tiny(tmp_path):
    """Overrides for a seconds-long run; the cache and run folders live in tmp_path."""
    return TINY + [f"data.cache_dir={tmp_path / 'cache'}", f"out={tmp_path / 'run'}"]


@pytest.fixture(autouse=True)
def _quiet_threads():
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _gloo_worker(rank: int, world: int, port: int, out_dir: str, fn) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save(fn(rank), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture
def on_ranks(tmp_path):
    """``on_ranks(fn, world=2)``: run module-level ``fn(rank)`` in ``world`` gloo processes (a
    real process group, as under torchrun) and return each rank's result."""
    def run(fn, world: int = 2) -> list:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        torch.multiprocessing.spawn(_gloo_worker, args=(world, port, str(tmp_path), fn), nprocs=world, join=True)
        return [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    return run


@pytest.fixture
def interrupt_at(monkeypatch):
    """``interrupt_at(n)``: deliver a real SIGINT from inside the training loop when the labelled
    stream is drawn the n-th time; ``monkeypatch.undo()`` removes it."""
    import semifer.engine.train as train_mod

    def arm(n_calls: int) -> None:
        original, calls = train_mod.BatchStream.next, {"n": 0}

        def next_(self):
            if self.name == "labelled":
                calls["n"] += 1
                if calls["n"] == n_calls:
                    os.kill(os.getpid(), signal.SIGINT)
            return original(self)

        monkeypatch.setattr(train_mod.BatchStream, "next", next_)
    return arm


@pytest.fixture
def noise_folder(tmp_path):
    """``noise_folder(side)``: a ``folder:`` dataset of random gray PNGs, ``train`` and ``test``
    splits, classes happy and sad, 6 images each; returns its root."""
    import numpy as np
    from PIL import Image

    def make(side: int):
        root = tmp_path / "faces"
        rng = np.random.default_rng(0)
        for split in ("train", "test"):
            for cls in ("happy", "sad"):
                (root / split / cls).mkdir(parents=True)
                for i in range(6):
                    Image.fromarray(rng.integers(0, 255, (side, side), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
        return root
    return make
