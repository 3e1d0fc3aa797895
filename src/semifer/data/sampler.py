"""Endless index batches with a saveable position, so a resumed run draws the same batches."""
from __future__ import annotations

import numpy as np


class BatchStream:
    """Batches of ``batch_size`` indices from ``indices``.

    Random: epoch-wise permutations (every item once per epoch). Balanced: each slot draws a
    class uniformly, then an item of that class, so rare classes appear as often as common ones.
    All randomness comes from the stream's own generator, whose state is saved in checkpoints."""

    def __init__(self, indices: np.ndarray, batch_size: int, seed: int,
                 labels: np.ndarray | None = None, balanced: bool = False, name: str = ""):
        if len(indices) == 0:
            raise ValueError(f"cannot draw {name + ' ' if name else ''}batches from an empty index set")
        self.name = name  # what the stream draws ("labelled", "unlabelled"), for errors and tests
        self.indices = np.asarray(indices)
        self.batch_size = batch_size
        self.balanced = balanced
        self.rng = np.random.default_rng(seed)
        self.order = np.zeros(0, dtype=np.int64)
        self.pos = 0
        if balanced:
            cls = labels[self.indices]
            self.by_class = [self.indices[cls == c] for c in np.unique(cls)]

    def next(self) -> np.ndarray:
        if self.balanced:
            picks = self.rng.integers(len(self.by_class), size=self.batch_size)
            return np.array([self.by_class[c][self.rng.integers(len(self.by_class[c]))] for c in picks])
        out = []
        need = self.batch_size
        while need:
            if self.pos >= len(self.order):
                self.order, self.pos = self.rng.permutation(self.indices), 0
            take = self.order[self.pos:self.pos + need]
            self.pos += len(take)
            need -= len(take)
            out.append(take)
        return np.concatenate(out)

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "order": self.order.tolist(), "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.order = np.asarray(state["order"], dtype=np.int64)
        self.pos = int(state["pos"])
