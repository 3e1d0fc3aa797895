"""FaceMix: SSFER stage II (Song et al., "Bridging the Gaps: Utilizing Unlabeled Face Recognition
Datasets to Boost Semi-Supervised Facial Expression Recognition", arXiv 2410.17622;
docs/methods.md section 1).

Mixup pairs image i with the reversed batch's j (eq. 6, see ``mixup.py``). When the two faces
barely overlap, the mixed image shows two faces and its soft label is a poor target, so the
losses of the two ORIGINAL images are added with weight kappa = 1 - IoU(B_i, B_j) (eqs. 8-9):

    L = L_v + kappa (L_i + L_j)                                             (eq. 10, = L4)

L_v: soft-target CE of the mixed image on the label-smoothed y~; L_i, L_j: plain CE of the
un-mixed images (the mixed batch is a new tensor, so the originals stay intact; the authors' code
mixed in place and so computed L_i, L_j and the boxes on mixed images). kappa is per pair.
Ablations: ``variant`` L1-L4 (eqs. 11-14) and ``kappa`` from PSNR, SSIM or FSIM of the two
original images instead of box IoU (Table 14; ``piq``'s implementations).

Face boxes: ``setup_data`` runs a detector from ``semifer.data.faces`` once per labelled image
of the decoded train array and caches the boxes beside it (``<cache_dir>/<key>.boxes-<det>.npy``,
NaN rows = not yet computed); a picture without exactly one face gets ``default_box``.
Boxes and the augmented view: the engine hands FaceMix each weak view's crop / flip (``x_theta``,
from ``weak_view(..., return_params=True)``, since ``view_params = True``), and every cached box
is carried through the same crop, flip and resize (``boxes_through_view``) before the IoU, so
kappa is computed on the boxes of the two images as they are mixed. On aligned crops the stored
boxes are nearly equal (IoU ~ 1, kappa ~ 0, FaceMix = Mixup); the views' different crops and
flips are what separate them. Without ``x_theta`` (a bare ``step``) the stored boxes are used.
Logs: ``kappa`` (mean over the batch, per step) and ``kappa_stored`` (on the un-augmented boxes).
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from semifer.algorithms.base import Algorithm, StepOutput, register_algorithm
from semifer.algorithms.mixup import MixRNG, mix_pairs, sample_lam, soft_ce
from semifer.data.transforms import boxes_through_view
from semifer.io import atomic_path

VARIANTS = ("L1", "L2", "L3", "L4")
KAPPAS = ("iou", "psnr", "ssim", "fsim")


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of paired boxes (x0, y0, x1, y1) [B, 4] -> [B] (eq. 8)."""
    wh = (torch.minimum(a[:, 2:], b[:, 2:]) - torch.maximum(a[:, :2], b[:, :2])).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    area = lambda t: (t[:, 2] - t[:, 0]).clamp(min=0) * (t[:, 3] - t[:, 1]).clamp(min=0)  # noqa: E731
    return inter / (area(a) + area(b) - inter).clamp(min=1e-12)


def image_kappa(x_i: torch.Tensor, x_j: torch.Tensor, measure: str, psnr_max: float = 40.0) -> torch.Tensor:
    """kappa = 1 - similarity of the two original images [B, C, H, W] -> [B] in [0, 1].

    SSIM and FSIM are similarities in [0, 1] (SSIM clamped at 0); PSNR is mapped to one as
    min(PSNR, psnr_max) / psnr_max. Pixels are shifted to [0, range] of the batch first, since
    the inputs are normalised and the measures expect non-negative images."""
    import piq

    lo = torch.minimum(x_i.amin(), x_j.amin())
    rng = float((torch.maximum(x_i.amax(), x_j.amax()) - lo).clamp(min=1e-6))
    a, b = (x_i.float() - lo).clamp(0, rng), (x_j.float() - lo).clamp(0, rng)
    if measure == "psnr":
        mse = ((a - b) ** 2).flatten(1).mean(1)
        psnr = torch.where(mse > 0, 10 * torch.log10(rng ** 2 / mse.clamp(min=1e-30)), torch.inf)
        sim = psnr.clamp(max=psnr_max) / psnr_max
    elif measure == "ssim":
        sim = piq.ssim(a, b, data_range=rng, reduction="none").clamp(min=0)
    elif measure == "fsim":
        sim = piq.fsim(a, b, data_range=rng, reduction="none", chromatic=a.shape[1] == 3)
    else:
        raise ValueError(f"unknown image measure {measure!r}; expected psnr, ssim or fsim")
    return (1 - sim).clamp(0, 1)


def facemix_loss(l_v: torch.Tensor, l_i: torch.Tensor, l_j: torch.Tensor, kappa: torch.Tensor,
                 variant: str = "L4") -> torch.Tensor:
    """Per-pair losses [B] -> the batch mean of the chosen combination (eqs. 11-14):
    L1 = (1-k) Lv + Li + Lj, L2 = Lv + (1-k)(Li + Lj), L3 = k Lv + Li + Lj, L4 = Lv + k (Li + Lj)."""
    if variant == "L1":
        per = (1 - kappa) * l_v + l_i + l_j
    elif variant == "L2":
        per = l_v + (1 - kappa) * (l_i + l_j)
    elif variant == "L3":
        per = kappa * l_v + l_i + l_j
    elif variant == "L4":
        per = l_v + kappa * (l_i + l_j)
    else:
        raise ValueError(f"unknown FaceMix variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    return per.mean()


def detect_boxes(images: np.ndarray, indices: np.ndarray, detector) -> np.ndarray:
    """Normalised (x0, y0, x1, y1) of the face in each ``images[i]`` -> [len(indices), 4];
    rows of -1 where the detector does not find exactly one face."""
    from semifer.data.faces import as_rgb_uint8

    out = np.full((len(indices), 4), -1.0, dtype=np.float32)
    for k, i in enumerate(indices):
        img = as_rgb_uint8(np.asarray(images[i]))
        faces = detector.detect(img)
        if len(faces) == 1:
            h, w = img.shape[:2]
            x, y, bw, bh = faces[0].box
            out[k] = (x / w, y / h, (x + bw) / w, (y + bh) / h)
    return out


def cached_boxes(images: np.ndarray, indices: np.ndarray, path: str, detector) -> np.ndarray:
    """Boxes [N, 4] for the whole split, computing with ``detector`` (and caching in ``path``)
    the rows of ``indices`` not yet known; rows never asked for stay NaN."""
    boxes = np.load(path) if path and os.path.exists(path) else np.full((len(images), 4), np.nan, np.float32)
    if len(boxes) != len(images):
        raise ValueError(f"face-box cache {path} has {len(boxes)} rows for {len(images)} images; delete it")
    todo = np.asarray([i for i in indices if np.isnan(boxes[i, 0])], dtype=np.int64)
    if len(todo):
        print(f"facemix: detecting faces in {len(todo)} images with {type(detector).__name__} (cached in {path})")
        boxes[todo] = detect_boxes(images, todo, detector)
        if path:
            with atomic_path(path) as tmp:
                np.save(tmp, boxes)
    return boxes


def build_detector(name: str, options: dict | None = None):
    """The detector that finds the boxes: ``create_detector`` (``auto``: the first installed one
    that imports); its registered ``name`` keys the box cache."""
    from semifer.data.faces import create_detector

    try:
        return create_detector(name, **(options or {}))
    except RuntimeError as e:  # none installed, or the one named is not
        raise RuntimeError(f"facemix: {e}; or pass algorithm.detector=none for default boxes") from None


@register_algorithm("facemix")
class FaceMix(MixRNG, Algorithm):
    view_params = True  # the engine adds x_theta: each weak view's crop / flip, to move the boxes
    def __init__(self, alpha: float = 1.0, label_smoothing: float = 0.1, variant: str = "L4",
                 kappa: str = "iou", detector: str = "auto", detector_options: dict | None = None,
                 default_box: tuple | list = (0.1, 0.1, 0.9, 0.9), psnr_max: float = 40.0, seed: int = 0,
                 **kw):
        super().__init__(**kw)
        if variant not in VARIANTS:
            raise ValueError(f"facemix variant={variant!r}; expected one of {', '.join(VARIANTS)}")
        if kappa not in KAPPAS:
            raise ValueError(f"facemix kappa={kappa!r}; expected one of {', '.join(KAPPAS)}")
        if len(default_box) != 4:
            raise ValueError(f"facemix default_box={default_box!r}; expected (x0, y0, x1, y1) in [0, 1]")
        self.alpha, self.label_smoothing, self.variant, self.kappa = alpha, label_smoothing, variant, kappa
        self.detector, self.detector_options = detector, detector_options
        self.default_box, self.psnr_max = tuple(float(v) for v in default_box), psnr_max
        self._init_rng(seed)
        # Per-image boxes of the train split; rebuilt by setup_data, so not saved in checkpoints.
        self.register_buffer("boxes", torch.zeros(0, 4), persistent=False)

    def setup_data(self, data) -> None:
        if self.kappa != "iou":
            return  # image-similarity kappas need no boxes
        n = len(data.images)
        if self.detector == "none":  # every image gets the default box (kappa = 0 between them)
            boxes = np.full((n, 4), -1.0, np.float32)
        else:
            detector = build_detector(self.detector, self.detector_options)
            path = (os.path.join(data.cache_dir, f"{data.cache_key}.boxes-{detector.name}.npy")
                    if data.cache_dir and data.cache_key else "")
            boxes = cached_boxes(data.images, data.labelled, path, detector)
        found = boxes[data.labelled, 0] >= 0
        print(f"facemix: exactly one face in {int(found.sum())}/{len(found)} labelled images; "
              f"the rest use the default box {self.default_box}")
        boxes = np.where(boxes[:, :1] >= 0, boxes, np.asarray(self.default_box, np.float32))  # NaN -> default too
        self.boxes = torch.from_numpy(boxes.astype(np.float32)).to(self.boxes.device)

    def pair_kappa(self, x: torch.Tensor, x_idx: torch.Tensor | None,
                   x_theta: torch.Tensor | None = None) -> torch.Tensor:
        """kappa [B] of each pair (i, reversed-batch j), from the un-mixed images / their boxes;
        with ``x_theta`` [B, 2, 3] the boxes are first moved into the augmented views."""
        if self.kappa == "iou":
            if x_idx is None or len(self.boxes) == 0:
                if not getattr(self, "_warned", False):  # outside the engine (setup_data not called)
                    warnings.warn("facemix: no face boxes (setup_data not called or no x_idx); "
                                  "every image gets the default box")
                    self._warned = True
                b = torch.tensor(self.default_box, device=x.device).expand(len(x), 4)
            else:
                b = self.boxes[x_idx]                               # [B, 4]
            if x_theta is not None:
                b = boxes_through_view(b, x_theta)                  # [B, 4] in the views
            return 1 - box_iou(b, b.flip(0))                        # eq. 9
        return image_kappa(x, x.flip(0), self.kappa, self.psnr_max)

    def step(self, model, batch, step, teacher=None):
        x, y = batch["x"], batch["y"]
        theta = batch.get("x_theta")
        kappa = self.pair_kappa(x, batch.get("x_idx"), theta).to(x.device)   # [B]
        lam = sample_lam(self.alpha, self.gen)
        x_mix, y_mix = mix_pairs(x, y, lam, self.num_classes, self.label_smoothing)  # x untouched
        _, logits = model(torch.cat([x_mix, x]))                  # one forward: mixed, then originals
        logits_v, logits_o = logits.split([len(x), len(x)])
        l_v = soft_ce(logits_v, y_mix)                              # [B]
        l_i = F.cross_entropy(logits_o.float(), y, reduction="none")  # [B]
        l_j = l_i.flip(0)                                           # partner j = reversed batch
        loss = facemix_loss(l_v, l_i, l_j, kappa, self.variant)
        logs = {"loss_x": l_v.mean().detach(), "loss_orig": l_i.mean().detach(),
                "kappa": kappa.mean().detach(), "lam": lam}
        if theta is not None and self.kappa == "iou":               # what the stored boxes would give
            logs["kappa_stored"] = self.pair_kappa(x, batch.get("x_idx")).mean().detach()
        return StepOutput(loss, logs)
