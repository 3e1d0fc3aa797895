"""Batched inference over a decoded uint8 array, and the run's final evaluation files."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import torch

from semifer.data.transforms import normalize
from semifer.evaluation.metrics import classification_metrics
from semifer.evaluation.plots import plot_confusion, plot_reliability
from semifer.evaluation.views import autocast, view_probs  # noqa: F401  (autocast: the engine imports it here)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): there bf16 autocast speeds a
    48 px CNN up ~1.45x (docs/benchmarks.md, throughput); on AVX2-only CPUs it is several times
    slower than fp32, since oneDNN then emulates it."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_amp(amp: str, device: torch.device) -> str:
    """``train.amp`` -> what autocast runs: "auto" is bf16 on CUDA and fp32 on CPU; "fast" is bf16
    wherever the hardware has it (CUDA, or a CPU with native bf16) and fp32 elsewhere."""
    if amp == "auto":
        return "bf16" if device.type == "cuda" else "none"
    if amp == "fast":
        return "bf16" if device.type == "cuda" or cpu_has_native_bf16() else "none"
    if amp not in ("bf16", "fp16", "none"):
        raise ValueError(f"train.amp={amp!r}; expected auto, fast, bf16, fp16 or none")
    return amp


@torch.no_grad()
def predict_probs(model, images: np.ndarray, device: torch.device, mean=0.5, std=0.5,
                  batch_size: int = 256, amp: str = "none", temperature: float = 1.0,
                  flip: bool = False, shift: float = 0.0) -> np.ndarray:
    """Softmax probabilities [N, K] for uint8 images [N, H, W, C], in batches; ``flip`` and
    ``shift``: the test-time views of :func:`view_probs`."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).permute(0, 3, 1, 2).to(device)
        out.append(view_probs(model, normalize(x, mean, std), flip, shift, temperature, amp).cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def write_eval(out_dir: str, probs: np.ndarray, labels: np.ndarray, classes, extra: dict | None = None,
               name: str = "eval", ids: list[str] | None = None) -> dict:
    """Metrics JSON plus confusion-matrix and reliability PNGs; returns the metrics. With ``ids``
    (one per image) also ``{name}_predictions.csv``, what ``semifer compare`` pairs runs on."""
    metrics = classification_metrics(labels, probs, classes)
    metrics.update(extra or {})
    os.makedirs(out_dir, exist_ok=True)
    plot_confusion(metrics["confusion_matrix"], classes, os.path.join(out_dir, f"{name}_confusion.png"),
                   title=f"accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}")
    plot_reliability(probs, labels, os.path.join(out_dir, f"{name}_reliability.png"))
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    if ids is not None:
        write_predictions(os.path.join(out_dir, f"{name}_predictions.csv"), ids, probs, labels, classes)
    return metrics


def write_predictions(path: str, ids: list[str], probs: np.ndarray, labels: np.ndarray, classes) -> None:
    """One row per image: id, true and predicted class names, the predicted class's probability."""
    if len(ids) != len(probs):
        raise ValueError(f"{path}: {len(ids)} ids for {len(probs)} predictions")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", "pred", "confidence"])
        for i, p, y in zip(ids, probs, labels):
            w.writerow([i, classes[y], classes[int(p.argmax())], f"{p.max():.4f}"])


def read_predictions(path: str) -> dict[str, tuple[str, str]]:
    """``{id: (label, pred)}`` from a ``*_predictions.csv``."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][:3] != ["id", "label", "pred"]:
        raise ValueError(f"{path}:1: expected a header id,label,pred,confidence")
    return {r[0]: (r[1], r[2]) for r in rows[1:]}


def correctness(preds: dict[str, tuple[str, str]]) -> tuple[str, np.ndarray]:
    """``(fingerprint, right)`` of ``read_predictions`` output: ``right[i]`` says whether the
    i-th image in id order was classified correctly; the fingerprint (sha1 of the sorted id and
    label pairs) is equal for two runs exactly when a paired test between them is valid."""
    import hashlib

    ids = sorted(preds)
    fingerprint = hashlib.sha1("\n".join(f"{i}\t{preds[i][0]}" for i in ids).encode()).hexdigest()
    return fingerprint, np.array([preds[i][0] == preds[i][1] for i in ids], dtype=bool)
