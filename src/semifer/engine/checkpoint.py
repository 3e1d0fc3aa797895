"""Checkpoints that resume or fail loudly.

``ckpt/<tag>.safetensors`` holds the weights (``model.*`` and ``ema.*``) with the model's
preprocessing in its metadata; ``ckpt/<tag>_state.pt`` holds optimiser, scheduler, scaler,
step, RNG and sampler states and the algorithm's state, loaded with ``weights_only=True``.
Both are written to a temporary file and renamed, so an interrupted write never leaves a
half checkpoint behind.
"""
from __future__ import annotations

import json
import os

import torch
from safetensors.torch import load_file, save_file

from semifer.io import atomic_path


class CheckpointError(RuntimeError):
    pass


def _atomic(path: str, write) -> None:
    with atomic_path(path) as tmp:
        write(tmp)


def save_weights(path: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    _atomic(path, lambda p: save_file(flat, p, metadata={"semifer": json.dumps(meta)}))


def load_weights(path: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a weights file and its metadata; raises naming the file when it is missing or bad."""
    from safetensors import safe_open

    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(path, framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("semifer", "{}"))
        return load_file(path), meta
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None


def save_state(path: str, state: dict) -> None:
    _atomic(path, lambda p: torch.save(state, p))


def load_state(path: str) -> dict:
    if not os.path.exists(path):
        raise CheckpointError(f"training state {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read training state {path}: {e}") from None


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def find_weights(path: str, tag: str = "best") -> str:
    """Accept a run folder, its ckpt folder, or a .safetensors file."""
    if os.path.isdir(path):
        for cand in (os.path.join(path, "ckpt", f"{tag}.safetensors"), os.path.join(path, f"{tag}.safetensors"),
                     os.path.join(path, "ckpt", "last.safetensors")):
            if os.path.exists(cand):
                return cand
        raise CheckpointError(f"no {tag}.safetensors or last.safetensors under {path}")
    return path
