"""``Predictor``: a trained checkpoint plus a face detector, answering one row per face.

    p = Predictor.from_checkpoint("runs/fer2013")   # or () for the model shipped in the package
    for face in p.predict(["a.jpg", pil_image, array]):
        print(face.name, face.box, face.label, face.probs["happy"])

Inputs are prepared exactly as the checkpoint's training data was (its metadata gives the
size, the channel count and the normalisation; resizing and gray conversion are the training
cache's own function), so a model never sees differently prepared pixels.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from semifer.data.cache import fit_image  # the resize/convert that built the training cache
from semifer.data.faces import Face, create_detector, detect_faces, face_crops
from semifer.data.transforms import normalize
from semifer.evaluation.views import view_probs
from semifer.models.io import load_model, resolve_device
from semifer.predict.inputs import as_items, image_name, to_rgb
from semifer.weights import default_model


@dataclass
class FacePrediction:
    """One face of one input image."""

    image: int                          # index of the input image (or frame) it came from
    name: str                           # the input's path, or "#<index>"
    face: int                           # index of the face in that image, most confident first
    box: tuple[int, int, int, int]      # x, y, w, h in the input's pixels
    score: float | None                 # detector confidence; None when detection was off
    probs: dict[str, float]             # class name -> probability, in the model's class order
    label: str                          # the most probable class
    landmarks: tuple[tuple[float, float], ...] | None = None  # when the detector gives them


class Predictor:
    """Detect faces, crop them with ``margin``, classify them in batches.

    ``detector``: a registered detector name (built on first use, so ``detect=False`` never
    needs one), a detector object with ``detect(rgb) -> list[Face]``, or None (no detection).
    Images are shrunk to ``max_side`` for detection only; crops come from full resolution.
    ``flip`` and ``shift``: test-time views (the mirror; 8 copies moved by ``shift`` of the side),
    each multiplying the compute per face (``semifer.engine.evaluate.view_probs``)."""

    def __init__(self, model: torch.nn.Module, meta: dict, device: str | torch.device = "cpu",
                 detector: Any = "auto", margin: float = 0.2, max_side: int = 1280, flip: bool = False,
                 shift: float = 0.0, **detector_kw):
        if not 0 <= shift < 0.5:
            raise ValueError(f"shift={shift}; expected a share of the face crop's side in [0, 0.5), e.g. 0.06")
        self.model, self.meta = model.eval(), meta
        self.device = resolve_device(device)
        self.model.to(self.device)
        self.classes: list[str] = list(meta["classes"])
        self.margin, self.max_side, self.flip, self.shift = margin, max_side, flip, shift
        self._detector, self._detector_kw = detector, detector_kw
        self.checkpoint: str | None = None  # the file or folder from_checkpoint loaded

    @classmethod
    def from_checkpoint(cls, path: str | None = None, device: str = "auto", detector: Any = "auto",
                        weights: str = "auto", **kw) -> "Predictor":
        """Load a run folder or .safetensors file (``weights``: "auto", "ema" or "model"); with
        no ``path``, the model shipped in the package (:mod:`semifer.weights`), saying so on
        stderr. Further keywords go to the constructor: ``margin``, ``max_side``, ``flip``,
        ``shift``, and detector options such as ``min_score`` or ``model_path``."""
        shipped = path is None
        path = default_model() if shipped else path
        dev = resolve_device(device)
        model, meta = load_model(path, weights=weights, device=dev)
        if shipped:  # the user did not choose it, so say what answers them
            print(f"semifer: no checkpoint given; using the shipped model {path} ({meta['model']}, "
                  f"{meta['size']} px, {meta['in_chans']} channel(s); classes: {', '.join(meta['classes'])})",
                  file=sys.stderr)
        predictor = cls(model, meta, dev, detector, **kw)
        predictor.checkpoint = path
        return predictor

    @property
    def detector(self):
        """The face detector, built from its name on first use."""
        if isinstance(self._detector, str):
            self._detector = create_detector(self._detector, **self._detector_kw)
        if self._detector is None:
            raise ValueError("this Predictor has no face detector; pass detect=False for crops")
        return self._detector

    def find_faces(self, rgb: np.ndarray) -> list[Face]:
        """Faces of an RGB uint8 image, most confident first."""
        return sorted(detect_faces(self.detector, rgb, self.max_side), key=lambda f: -f.score)

    def prepare(self, crops: list[np.ndarray]) -> torch.Tensor:
        """RGB uint8 crops [h, w, 3] of any size -> normalised float [N, C, S, S] on the device."""
        size, chans = self.meta["size"], self.meta["in_chans"]
        x = np.stack([fit_image(c, size, chans) for c in crops])            # [N, S, S, C]
        x = torch.from_numpy(x).to(self.device).permute(0, 3, 1, 2)             # [N, C, S, S]
        return normalize(x, self.meta["mean"], self.meta["std"])

    @torch.inference_mode()
    def classify(self, crops: list[np.ndarray]) -> np.ndarray:
        """Class probabilities [N, K] for RGB uint8 face crops."""
        return view_probs(self.model, self.prepare(crops), self.flip, self.shift).cpu().numpy()

    def predict(self, images: Any, detect: bool = True, batch_size: int = 64) -> list[FacePrediction]:
        """One image or many (paths, PIL images, numpy arrays, uint8/uint16 tensors) -> one
        prediction per face. ``detect=False``: each input is one already-cropped face."""
        return list(self.iter_predict(images, detect, batch_size))

    def crops(self, rgb: np.ndarray, detect: bool = True) -> list[tuple[Face | None, np.ndarray]]:
        """(face, crop) per face of an RGB uint8 image; with ``detect=False`` the whole image
        is the one crop and the face is None."""
        if not detect:
            return [(None, rgb)]
        return face_crops(self.detector, rgb, self.margin, self.max_side)

    def iter_predict(self, images: Any, detect: bool = True,
                     batch_size: int = 64) -> Iterator[FacePrediction]:
        """Lazy :meth:`predict`: reads inputs one by one and classifies every ``batch_size``
        faces, so an iterator of frames or paths runs in constant memory."""
        pending: list[tuple] = []   # (image, name, face index, Face | None, crop, image shape)
        for i, item in enumerate(as_items(images)):
            rgb = to_rgb(item)
            for j, (f, crop) in enumerate(self.crops(rgb, detect)):
                pending.append((i, image_name(item, i), j, f, crop, rgb.shape))
            while len(pending) >= batch_size:
                yield from self._flush(pending[:batch_size])
                pending = pending[batch_size:]
        if pending:
            yield from self._flush(pending)

    def _flush(self, pending: list[tuple]) -> Iterator[FacePrediction]:
        probs = self.classify([p[4] for p in pending])
        for (i, name, j, f, _, shape), p in zip(pending, probs):
            box = (0, 0, shape[1], shape[0]) if f is None else f.box
            yield FacePrediction(i, name, j, box, None if f is None else f.score,
                                 dict(zip(self.classes, p.tolist())), self.classes[int(p.argmax())],
                                 None if f is None else f.landmarks)
