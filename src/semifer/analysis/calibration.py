"""Temperature scaling (Guo et al. 2017): one scalar T > 0, p = softmax(z / T), fitted by
minimising the NLL of a held-out labelled split. T leaves every argmax, hence accuracy, unchanged.

``calibrate`` stores T in ``<weights>.temperature.json`` beside the checkpoint;
``models.io.load_model`` folds it into the head, so ``semifer eval``, ``Predictor`` and
ONNX export all give calibrated probabilities.
"""
from __future__ import annotations

import json
import math

import numpy as np
import torch
import torch.nn.functional as F

from semifer.data.transforms import normalize
from semifer.evaluation.metrics import expected_calibration_error
from semifer.io import atomic_path


@torch.no_grad()
def collect_logits(model, images: np.ndarray, mean=0.5, std=0.5, batch_size: int = 256,
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """Logits [N, K] (float32, CPU) of uint8 images [N, H, W, C]."""
    model = model.to(device).eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).permute(0, 3, 1, 2).to(device)
        out.append(model(normalize(x, mean, std))[1].float().cpu())
    return torch.cat(out)


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(z / T)."""
    return float(F.cross_entropy(logits / temperature, labels))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200,
                    bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """argmin_T NLL(softmax(z / T), y), optimised over log T (keeps T > 0) with L-BFGS.

    T is kept within ``bounds``: on a split the model separates perfectly the NLL keeps falling
    as T -> 0, and a fit there would say nothing about new images."""
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.clamp(lo, hi).exp(), labels)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return float(log_t.detach().clamp(lo, hi).exp())


def calibration_summary(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> dict:
    """NLL and ECE before (T = 1) and after scaling."""
    y = labels.numpy()
    return {
        "nll_before": round(nll(logits, labels), 5), "nll_after": round(nll(logits, labels, temperature), 5),
        "ece_before": round(expected_calibration_error(torch.softmax(logits, 1).numpy(), y), 5),
        "ece_after": round(expected_calibration_error(torch.softmax(logits / temperature, 1).numpy(), y), 5),
        "accuracy": round(float((logits.argmax(1) == labels).float().mean()), 5), "num_images": int(len(y)),
    }


def calibrate(checkpoint: str, images: np.ndarray, labels: np.ndarray, weights: str = "auto",
              holdout: float = 0.5, seed: int = 0, device: str | torch.device = "cpu",
              info: dict | None = None) -> dict:
    """Fit T on ``images``/``labels`` (a validation split, not the test set) and store it beside
    the checkpoint's weights. A seeded ``holdout`` share is kept out of the fit and reported on,
    so the ECE after scaling is measured on images T was not fitted to (0 = fit on all)."""
    from semifer import checkpoint as ckpt
    from semifer.models.io import load_model, temperature_path, weights_fingerprint

    model, meta = load_model(checkpoint, weights=weights, device=device, calibrated=False, adapted=False)
    logits = collect_logits(model, images, meta["mean"], meta["std"], device=device)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    order = np.random.default_rng(seed).permutation(len(y))
    n_held = int(round(holdout * len(y))) if len(y) > 1 else 0
    held, fit = order[:n_held], order[n_held:]
    if len(fit) == 0:
        raise ValueError(f"holdout={holdout} leaves no image to fit the temperature on")
    t = fit_temperature(logits[fit], y[fit])
    which = meta.get("eval_weights", "model") if weights == "auto" else weights
    result = {"temperature": round(t, 5), "weights": which, "fingerprint": weights_fingerprint(model.state_dict()),
              "fit": calibration_summary(logits[fit], y[fit], t), **(info or {})}
    if len(held):
        result["holdout"] = calibration_summary(logits[held], y[held], t)
    path = temperature_path(ckpt.find_weights(checkpoint, "last"))
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    result["path"] = path
    return result
