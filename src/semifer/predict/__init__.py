"""Inference on photos, folders and videos: ``Predictor`` (Python API), ``semifer predict`` and
``semifer export`` (CLI, ONNX)."""
from semifer.predict.predictor import FacePrediction, Predictor

__all__ = ["FacePrediction", "Predictor"]
