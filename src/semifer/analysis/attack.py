"""FGSM restricted to the pixels a model attends to, or to the others (SSFER Table 7).

FGSM (Goodfellow et al. 2015): x_adv = clip(x + eps * sign(grad_x CE(f(x), y)), 0, 1). Here the
step is masked, x_adv = clip(x + eps * M * sign(grad_x CE), 0, 1), with M from the Grad-CAM map
of the predicted class on the clean image: ``focused`` M = [cam > 0.3], ``unfocused``
M = [cam <= 0.3], ``all`` M = 1 (plain FGSM).

Units: x is the image in [0, 1] (uint8 / 255) *before* the model's mean/std normalisation, so
eps = 0.03 moves a pixel by at most 0.03 * 255 ≈ 7.65 grey levels, whatever the normalisation.
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch
import torch.nn.functional as F

from semifer.analysis.cam import grad_cam

REGIONS = ("focused", "unfocused", "all")


def region_mask(cams: np.ndarray, region: str, threshold: float = 0.3) -> np.ndarray:
    """[N, H, W] float mask M of the pixels FGSM may change."""
    if region == "focused":
        return (cams > threshold).astype(np.float32)
    if region == "unfocused":
        return (cams <= threshold).astype(np.float32)
    if region == "all":
        return np.ones_like(cams, dtype=np.float32)
    raise ValueError(f"region {region!r}: expected one of {', '.join(REGIONS)}")


def _norm(x01: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=torch.float32, device=x01.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x01.device).view(-1, 1, 1)
    return (x01 - m) / s


def input_gradient_sign(model, x01: torch.Tensor, y: torch.Tensor, mean, std) -> torch.Tensor:
    """sign(grad_x CE(f(x), y)) for x in [0, 1], [B, C, H, W]."""
    x = x01.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(_norm(x, mean, std))[1].float(), y)
        (grad,) = torch.autograd.grad(loss, x)
    return grad.sign()


@torch.no_grad()
def fgsm_accuracy(model, images: np.ndarray, labels: np.ndarray, eps: list[float], region: str = "all",
                  mean=0.5, std=0.5, threshold: float = 0.3, layer: str = "", batch_size: int = 128,
                  device: str | torch.device = "cpu", progress: bool = False) -> dict:
    """Accuracy on uint8 images [N, H, W, C] under masked FGSM for each eps (in [0, 1] pixel units).

    Returns {"eps": [...], "accuracy": [...], "region": ..., "region_share": mean share of
    pixels in M, "num_images": N}. ``progress``: a tqdm bar on stderr, one tick per batch."""
    from tqdm import tqdm

    if any(not 0 <= e <= 1 for e in eps):
        raise ValueError(f"eps values {eps} must lie in [0, 1] (pixel units: 0.03 = 7.65 grey levels)")
    model = model.to(device).eval()
    correct, share = np.zeros(len(eps), dtype=np.int64), 0.0
    # the map is made batch by batch too, so the bar also covers Grad-CAM's share of the time
    with tqdm(total=len(images), unit="img", desc=f"FGSM {region}", disable=not progress,
              dynamic_ncols=True) as bar:
        for i in range(0, len(images), batch_size):
            batch = images[i:i + batch_size]
            if region == "all":  # plain FGSM needs no map
                mask = np.ones(batch.shape[:3], dtype=np.float32)
            else:
                cams, _ = grad_cam(model, batch, mean, std, layer=layer, batch_size=batch_size, device=device)
                mask = region_mask(cams, region, threshold)                   # [B, H, W]
            share += float(mask.sum())
            x01 = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).to(device)
            x01 = x01.float() / 255                                           # [B, C, H, W] in [0, 1]
            y = torch.from_numpy(labels[i:i + batch_size]).to(device)
            m = torch.from_numpy(mask).to(device)[:, None]                    # [B, 1, H, W]
            step = m * input_gradient_sign(model, x01, y, mean, std)
            for j, e in enumerate(eps):
                x_adv = (x01 + e * step).clamp(0, 1)
                correct[j] += int((model(_norm(x_adv, mean, std))[1].argmax(1) == y).sum())
            bar.update(len(batch))
    return {"region": region, "threshold": threshold, "eps": [float(e) for e in eps],
            "accuracy": (correct / max(len(images), 1)).round(5).tolist(),
            "region_share": round(share / max(int(np.prod(images.shape[:3])), 1), 4),
            "num_images": int(len(images))}


def parse_eps(text: str) -> list[float]:
    """``"0,0.02,...,0.1"`` (an arithmetic range spelled with ``...``) or ``"0,0.01,0.05"``."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        if "..." in parts:
            k = parts.index("...")
            if k < 2 or k != len(parts) - 2:
                raise ValueError
            a, b, end = float(parts[k - 2]), float(parts[k - 1]), float(parts[k + 1])
            n = int(round((end - a) / (b - a)))
            head = [float(p) for p in parts[:k - 2]]
            return head + [round(a + i * (b - a), 10) for i in range(n + 1)]
        return [float(p) for p in parts]
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"--eps {text!r}: expected numbers separated by commas, e.g. 0,0.02,...,0.1") from None


def fgsm_table(results: list[dict]) -> list[str]:
    """Markdown rows of accuracy % per region (with its share of pixels) and eps."""
    eps = results[0]["eps"]
    lines = ["| region (share of pixels) | " + " | ".join(f"eps {e:g}" for e in eps) + " |",
             "|---|" + "---|" * len(eps)]
    lines += [f"| {r['region']} ({100 * r['region_share']:.0f}%) | " +
              " | ".join(f"{100 * a:.2f}" for a in r["accuracy"]) + " |" for r in results]
    return lines


def write_fgsm(out: str, record: dict) -> list[str]:
    """``fgsm.json`` (``record``, whose ``results`` are ``fgsm_accuracy``'s) and ``fgsm.md`` (its
    table) in ``out``; returns the table's lines."""
    lines = fgsm_table(record["results"])
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "fgsm.json"), "w") as f:
        json.dump(record, f, indent=2)
    with open(os.path.join(out, "fgsm.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return lines
