"""ONNX export of a trained checkpoint, with a JSON beside it saying how to prepare inputs.

The graph takes the *normalised* float input [B, C, S, S] (``(pixel / 255 - mean) / std``,
after resizing the face crop to S x S and converting it to C channels) and has two outputs:
``logits`` [B, K] and ``probs`` [B, K] (their softmax), in the order of the JSON's ``classes``.
"""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import torch

from semifer.models.io import load_model


class _LogitsAndProbs(torch.nn.Module):
    """The classifier without its feature output: x -> (logits, softmax(logits))."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, logits = self.model(x)
        return logits, torch.softmax(logits, 1)


def default_output(checkpoint: str) -> str:
    """RUN/export/model.onnx for a run folder, else the weights file's name with .onnx."""
    if os.path.isdir(checkpoint):
        return os.path.join(checkpoint, "export", "model.onnx")
    return os.path.splitext(checkpoint)[0] + ".onnx"


def _per_channel(v, c: int) -> list[float]:
    return [float(v)] * c if np.isscalar(v) else [float(x) for x in v]


def preprocessing(meta: dict) -> dict:
    """What the JSON tells a non-semifer runtime about inputs."""
    c = meta["in_chans"]
    return {
        "classes": list(meta["classes"]), "size": meta["size"], "channels": c,
        "mean": _per_channel(meta["mean"], c), "std": _per_channel(meta["std"], c),
        "input": "float32 [B, C, size, size], (uint8 / 255 - mean) / std per channel",
        "channels_from_rgb": "C=1: luminance 0.299 R + 0.587 G + 0.114 B (cv2 RGB2GRAY); C=3: RGB",
        "resize": "square around the face box, side max(w, h) * (1 + 2 * margin) (margin 0.2 by "
                  "default), border replicated, -> size x size: cv2 INTER_AREA when shrinking, "
                  "INTER_LINEAR when enlarging",
        "outputs": {"logits": "[B, K]", "probs": "[B, K] softmax of logits"},
        "model": meta["model"], "step": meta.get("step"),
    }


def export_onnx(checkpoint: str, output: str | None = None, dynamic_batch: bool = False,
                weights: str = "auto", opset: int = 17) -> tuple[str, str, float]:
    """Write the ONNX file and its JSON; returns (onnx path, json path, largest |ONNX Runtime -
    PyTorch| difference over both outputs on a random batch). Raises when above 1e-4."""
    model, meta = load_model(checkpoint, weights=weights, device="cpu")
    net = _LogitsAndProbs(model).eval()
    path = output or default_output(checkpoint)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    x = torch.randn(2 if dynamic_batch else 1, meta["in_chans"], meta["size"], meta["size"])
    axes = {n: {0: "batch"} for n in ("input", "logits", "probs")} if dynamic_batch else None
    with warnings.catch_warnings():
        # The TorchScript exporter needs no onnxscript and handles every semifer backbone;
        # torch warns that it is no longer the default.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (x,), path, dynamo=False, input_names=["input"],
                          output_names=["logits", "probs"], dynamic_axes=axes, opset_version=opset)
    diff = max_difference(net, path, x.shape)
    if diff > 1e-4:
        raise RuntimeError(f"{path}: ONNX Runtime and PyTorch differ by {diff:.2e}")
    side = os.path.splitext(path)[0] + ".json"
    with open(side, "w") as f:
        json.dump({**preprocessing(meta), "dynamic_batch": dynamic_batch, "opset": opset,
                   "max_abs_difference_vs_pytorch": diff}, f, indent=2)
    return path, side, diff


def max_difference(net: torch.nn.Module, path: str, shape: torch.Size) -> float:
    """Largest absolute difference between ONNX Runtime and PyTorch outputs on random input."""
    import onnxruntime as ort

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = [t.numpy() for t in net(x)]
    got = sess.run(None, {"input": x.numpy()})
    return float(max(np.abs(a - b).max() for a, b in zip(ref, got)))
