"""Checkpoints that resume or fail loudly.

``ckpt/<tag>.safetensors`` holds the weights (``model.*`` and ``ema.*``) with the model's
preprocessing in its metadata; ``ckpt/<tag>_state.pt`` holds optimiser, scheduler, scaler,
step, RNG and sampler states and the algorithm's state, loaded with ``weights_only=True``.
Both are written to a temporary file and renamed, so an interrupted write never leaves a
half checkpoint behind. The pair is committed by the weights' rename, which comes last: the
weights' metadata records the step and the sha256 of the state file they go with, so a writer
killed between the two renames (state at step 15, weights at step 10) is refused on resume
instead of training a hybrid. Every weights file also records the sha256 of its tensors,
checked on load: a corrupted file is an error, not a run that quietly trains on NaN.
"""
from __future__ import annotations

import hashlib
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


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().to("cpu").contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_weights(path: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    metadata = {"semifer": json.dumps(meta), "sha256": tensors_sha256(flat)}
    _atomic(path, lambda p: save_file(flat, p, metadata=metadata))


def load_weights(path: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a weights file and its metadata; raises naming the file when it is missing or bad."""
    from safetensors import safe_open

    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(path, framework="pt") as f:
            header = f.metadata() or {}
        meta = json.loads(header.get("semifer", "{}"))
        tensors = load_file(path)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    if "sha256" in header:  # files written by other tools have none; nothing to check them against
        found = tensors_sha256(tensors)
        if found != header["sha256"]:
            raise CheckpointError(f"checkpoint {path} is corrupt: its tensors hash to sha256 {found[:16]}..., "
                                  f"the file recorded {header['sha256'][:16]}... when it was written")
    return tensors, meta


def save_state(path: str, state: dict) -> None:
    _atomic(path, lambda p: torch.save(state, p))


def load_state(path: str) -> dict:
    if not os.path.exists(path):
        raise CheckpointError(f"training state {path} does not exist")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"training state {path} is empty (0 bytes); expected a torch.save file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # some (EOFError) carry no message: the type is the reason
        raise CheckpointError(f"cannot read training state {path}: {type(e).__name__}: {e}") from None


def check_pair(weights_file: str, meta: dict, state_file: str, state: dict) -> None:
    """Refuse weights and training state that were not saved together (see the module notes)."""
    if meta.get("step") != state.get("step"):
        raise CheckpointError(
            f"{weights_file} holds step {meta.get('step')} but {state_file} holds step {state.get('step')}: "
            "a writer was stopped between the two files, which cannot resume together. Start a new run "
            f"(another out=) with model.init={weights_file} model.init_head=true to keep the weights")
    recorded = meta.get("state_sha256")
    if recorded is not None and file_sha256(state_file) != recorded:
        raise CheckpointError(f"{state_file} is corrupt or was replaced: its sha256 differs from the one "
                              f"{weights_file} recorded at step {meta.get('step')}")


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
