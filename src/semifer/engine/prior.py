"""Store the class prior of unlabelled target faces beside a checkpoint (label shift; Saerens et
al. 2002, ``analysis/prior.py`` explains the correction). Engine-level so that a pipeline (the
``ssl`` layer) and ``semifer adapt-prior`` (``analysis``) run the one estimate."""
from __future__ import annotations

import json

import numpy as np
import torch

from semifer.evaluation.prior import em_prior
from semifer.io import atomic_path


def source_prior_of(meta: dict, checkpoint: str) -> np.ndarray:
    """The class frequencies of the labels the model was trained on: ``train_prior`` in the
    checkpoint's metadata, else the run folder's ``data.json`` (runs saved before it was stored)."""
    import os

    from semifer import checkpoint as ckpt

    if meta.get("train_prior"):
        return np.asarray(meta["train_prior"], dtype=np.float64)
    run = os.path.dirname(os.path.dirname(os.path.abspath(ckpt.find_weights(checkpoint, "last"))))
    path = os.path.join(run, "data.json")
    if os.path.exists(path):
        with open(path) as f:
            counts = json.load(f).get("labelled")
        if counts and len(counts) == len(meta["classes"]):
            counts = np.asarray(counts, dtype=np.float64)
            return counts / counts.sum()
    raise ValueError(f"{checkpoint}: no training class prior in its metadata nor a data.json beside it; "
                     "pass --source-prior with one frequency per class in the model's order "
                     f"{list(meta['classes'])}")


def adapt_prior(checkpoint: str, images: np.ndarray, weights: str = "auto", device: str | torch.device = "cpu",
                source_images: np.ndarray | None = None, source_prior=None, info: dict | None = None) -> dict:
    """Estimate the class prior of ``images`` (uint8 [N, S, S, C], unlabelled target faces) under
    the checkpoint's model and store it beside the weights -> what was stored, plus ``path``.

    The prior the model predicts under (pi_s) is, in order: the model's mean probability on
    ``source_images`` (its labelled training faces), ``source_prior``, or the frequencies of its
    training labels. The first is the safe one: a model trained with label smoothing or on few
    labels is not calibrated, and EM from label frequencies then drifts toward whatever class its
    probabilities over-state (a rare class's smoothing floor summed over thousands of faces);
    measured against its own mean prediction, a model adapted to its own training faces is left
    unchanged. Both are in the stored JSON (``reference``)."""
    from semifer import checkpoint as ckpt
    from semifer.engine.evaluate import predict_probs
    from semifer.models.io import load_model, prior_path

    model, meta = load_model(checkpoint, weights=weights, device=device, adapted=False)
    probs_of = lambda x: predict_probs(model, x, torch.device(device), meta["mean"], meta["std"])
    if source_images is not None:
        pi_s, reference = probs_of(source_images).mean(0).astype(np.float64), f"mean prediction on {len(source_images)} source images"
    elif source_prior is not None:
        pi_s, reference = np.asarray(source_prior, dtype=np.float64), "given"
    else:
        pi_s, reference = source_prior_of(meta, checkpoint), "training label frequencies"
    if len(pi_s) != len(meta["classes"]):
        raise ValueError(f"a training prior of {len(pi_s)} values for the model's {len(meta['classes'])} classes")
    probs = probs_of(images)
    pi_t, iters = em_prior(probs, pi_s)
    which = meta.get("eval_weights", "model") if weights == "auto" else weights
    result = {"prior": [round(float(v), 6) for v in pi_t], "train_prior": [round(float(v), 6) for v in pi_s / pi_s.sum()],
              "reference": reference, "classes": list(meta["classes"]),
              "mean_prediction": [round(float(v), 6) for v in probs.mean(0)],
              "em_iterations": iters, "num_images": int(len(images)), "weights": which,
              "fingerprint": meta["fingerprint"], **(info or {})}
    path = prior_path(ckpt.find_weights(checkpoint, "last"))
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    result["path"] = path
    return result
