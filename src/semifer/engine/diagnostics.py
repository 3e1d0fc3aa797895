"""Pseudo-label quality against the hidden truth, which only the engine holds.

An algorithm returns what it used (``StepOutput``: pseudo-labels and mask, per-level
pseudo-labels, complementary labels); the engine scores them against the true labels of the
unlabelled batch ``truth`` [uB]. Diagnostics only: nothing here reaches a loss.
"""
from __future__ import annotations

import torch


def pseudo_label_scores(pseudo: torch.Tensor, mask: torch.Tensor | None, truth: torch.Tensor) -> dict[str, float]:
    """``mask``: share of the batch used; ``pl_acc_all``: accuracy of every pseudo-label;
    ``pl_acc``: accuracy of the used ones, sum(right * mask) / max(1, sum(mask)). No mask = all used."""
    mask = mask.float() if mask is not None else torch.ones_like(truth, dtype=torch.float)
    right = (pseudo == truth).float()
    return {"mask": float(mask.mean()), "pl_acc_all": float(right.mean()),
            "pl_acc": float((right * mask).sum() / mask.sum().clamp(min=1))}


def level_scores(levels: dict[str, tuple[torch.Tensor, torch.Tensor]], truth: torch.Tensor) -> dict[str, float]:
    """Per name (e.g. a SIT-FER level) of ``levels`` = {name: (labels [uB], mask [uB])}:
    ``pl_acc_<name>`` (all), ``pl_acc_<name>_masked`` (where the mask is set) and ``mask_<name>``."""
    out = {}
    for name, (labels, mask) in levels.items():
        right, m = (labels == truth).float(), mask.float()
        out[f"pl_acc_{name}"] = float(right.mean())
        out[f"pl_acc_{name}_masked"] = float((right * m).sum() / m.sum().clamp(min=1))
        out[f"mask_{name}"] = float(m.mean())
    return out


def negative_scores(negatives: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Complementary labels [uB, K] (bool, "not this class"): ``snl_wrong``, how many are the true
    class, and ``snl_precision`` = 1 - wrong / labels (1 when there is none)."""
    wrong = negatives.gather(1, truth.long()[:, None]).sum()
    return {"snl_wrong": float(wrong), "snl_precision": float(1 - wrong / negatives.sum().clamp(min=1))}


def step_scores(out, truth: torch.Tensor) -> dict[str, float]:
    """Every score of one ``StepOutput`` ``out``: its levels, its complementary labels, then its
    pseudo-labels (the order in which they are logged)."""
    scores = level_scores(out.levels, truth) if out.levels else {}
    if out.negatives is not None:
        scores.update(negative_scores(out.negatives, truth))
    if out.pseudo_labels is not None:
        scores.update(pseudo_label_scores(out.pseudo_labels, out.mask, truth))
    return scores
