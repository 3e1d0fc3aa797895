"""What the engine adds to a model's weights: the metadata saved with them, and an algorithm's
own predictor (e.g. SIT-FER's fused one) rebuilt beside the model.

Building and loading plain models lives in :mod:`semifer.models.io`; this module stays in the
engine because only the algorithm that exported a predictor can rebuild it.
"""
from __future__ import annotations

import numpy as np
import torch

from semifer import checkpoint as ckpt
from semifer.algorithms import ALGORITHMS
from semifer.models.io import load_model, model_kwargs


def model_meta(cfg, data, algo) -> dict:
    """What a user of the weights needs to rebuild the model and prepare its inputs."""
    return {
        "model": cfg.model.name, "model_options": model_kwargs(cfg.model, cfg.data.size),
        "classes": list(data.classes), "in_chans": data.channels, "size": cfg.data.size,
        "mean": cfg.data.mean, "std": cfg.data.std, "algorithm": cfg.algorithm.get("name"),
        "eval_weights": "ema" if (cfg.train.ema > 0 or algo.uses_teacher) and cfg.train.eval_ema else "model",
        # the class frequencies of the labels it learnt from: `semifer adapt-prior` corrects from them
        "train_prior": train_prior(data.train_labels[data.labelled], len(data.classes)),
    }


def train_prior(labels, num_classes: int) -> list[float]:
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    return [round(float(c), 6) for c in counts / max(counts.sum(), 1.0)]


class FusedModel(torch.nn.Module):
    """A model plus an algorithm's exported predictor (e.g. SIT-FER's fused one). ``forward``
    returns ``(feat, log p)``, so everything that softmaxes a model's logits (evaluation,
    prediction) gets the predictor's probabilities p."""

    def __init__(self, model: torch.nn.Module, predictor: torch.nn.Module):
        super().__init__()
        self.model, self.predictor = model, predictor

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat, logits = self.model(x)
        return feat, self.predictor(feat, logits).clamp_min(1e-12).log()


def load_predictor(algorithm: str, tensors: dict[str, torch.Tensor], options: dict) -> torch.nn.Module:
    return ALGORITHMS.get(algorithm).load_predictor(tensors, options)


def load_fused_model(path: str, device: str | torch.device = "cpu") -> tuple[FusedModel | None, dict]:
    """The run's fused predictor on the weights it was built with (``meta["predictor_weights"]``)
    -> (FusedModel in eval mode, meta), or (None, meta) when the algorithm saved none."""
    file = ckpt.find_weights(path, "last")
    tensors, meta = ckpt.load_weights(file)
    algo = ckpt.split_prefix(tensors, "algo.")
    if not algo or "predictor" not in meta:
        return None, meta
    model, meta = load_model(file, weights=meta.get("predictor_weights", "model"), device=device, calibrated=False,
                             adapted=False)
    predictor = load_predictor(meta["algorithm"], algo, meta["predictor"])
    return FusedModel(model, predictor.to(device)).eval(), meta
