"""Label-shift adaptation: re-estimate the class prior of unlabelled target images and correct a
trained model's probabilities to it (Saerens, Latinne & Decaestecker, "Adjusting the outputs of
a classifier to new a priori probabilities: a simple procedure", Neural Computation 14(1), 2002).

A model trained on labels drawn per class (the papers' labels-per-class protocols: a uniform
prior pi_s) predicts as if every expression were equally common, while FER2013's faces are 25 %
happy and 1 % disgust. EM (evaluation/prior.py) finds the prior pi_t of unlabelled target faces
under the model. No label of the target images is used. ``adapt_prior`` (engine/prior.py) stores pi_t beside the
checkpoint (``<weights>.prior.json``); ``models.io.load_model`` adds log(pi_t / pi_s) to the
head's bias, so ``semifer eval``, ``Predictor`` and ONNX export all predict under the new prior.
"""
from __future__ import annotations

import numpy as np

from semifer.engine.prior import adapt_prior, source_prior_of  # noqa: F401  (the analysis API: semifer adapt-prior)


def run_labelled_images(checkpoint: str, meta: dict, cache_dir: str = ".cache/semifer") -> np.ndarray | None:
    """The labelled faces a run folder lists in ``labelled.txt``, read from its ``data.train``;
    None when ``checkpoint`` is not such a folder or its data cannot be read here."""
    import os

    from semifer.analysis.data import model_arrays
    from semifer.config import load_config
    from semifer.data.base import DataError

    listed, config = (os.path.join(checkpoint, f) for f in ("labelled.txt", "config.yaml"))
    if not (os.path.isdir(checkpoint) and os.path.exists(listed) and os.path.exists(config)):
        return None
    spec = load_config(config).data.train
    if not isinstance(spec, str):
        return None
    with open(listed) as f:
        ids = {line.split("\t")[0] for line in f if line.strip()}
    try:
        images, _, all_ids = model_arrays(spec, meta, "train", cache_dir)
    except (DataError, OSError):
        return None
    keep = [i for i, name in enumerate(all_ids) if name in ids]
    return images[keep] if keep else None
