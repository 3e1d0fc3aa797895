"""Model weights shipped inside the package, so prediction works with no checkpoint of one's own.

``fer2013_cnn_fer.safetensors``: the default model of ``semifer predict`` and
``Predictor.from_checkpoint()``, a semifer training checkpoint (safetensors with semifer's
metadata) holding only the weights prediction uses: ``cnn_fer`` trained by
``recipes/fer2013_cpu_hour.yaml`` on all FER2013 training labels (66.4 % on PublicTest, 67.9 %
with the test-time mirror), written by ``scripts/ship_model.py``; docs/benchmarks.md has the
command that reproduces it.
"""
from __future__ import annotations

import os

DEFAULT_MODEL = os.path.join(os.path.dirname(__file__), "fer2013_cnn_fer.safetensors")


def default_model() -> str:
    """The shipped default model's path; FileNotFoundError naming it when this install lacks it."""
    if not os.path.isfile(DEFAULT_MODEL):
        raise FileNotFoundError(
            f"the default model {DEFAULT_MODEL} is not in this install of semifer; pass a checkpoint "
            f"(--checkpoint RUN_FOLDER or FILE.safetensors, from `semifer train`), or reinstall semifer")
    return DEFAULT_MODEL
