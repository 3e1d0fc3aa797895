"""semifer: semi-supervised facial expression recognition.

``semifer.Predictor`` and ``semifer.FacePrediction`` load on first use, so ``import semifer``
does not import torch.
"""
_LAZY = {"Predictor": "semifer.predict", "FacePrediction": "semifer.predict"}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'semifer' has no attribute {name!r}")
