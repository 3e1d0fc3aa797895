"""EM re-estimation of a class prior under label shift (Saerens, Latinne & Decaestecker,
Neural Computation 14(1), 2002): the model's probabilities p_s(y|x) on N unlabelled target images,
trained under the prior pi_s, iterate from pi_t = pi_s

    p_t(y|x) = p_s(y|x) pi_t(y) / pi_s(y), renormalised over y     (E step, eq. 2.6)
    pi_t(y) = (1/N) sum_x p_t(y|x)                                 (M step, eq. 2.7)

``semifer adapt-prior`` (analysis/prior.py) stores the result with a checkpoint.
"""
from __future__ import annotations

import numpy as np


def em_prior(probs: np.ndarray, source_prior: np.ndarray, max_iter: int = 1000,
             tol: float = 1e-8) -> tuple[np.ndarray, int]:
    """The target prior pi_t [K] that EM converges to from ``probs`` [N, K] (the model's
    probabilities on target images) and the prior ``source_prior`` [K] it was trained under
    -> (pi_t, iterations used)."""
    p = np.asarray(probs, dtype=np.float64)
    pi_s = np.asarray(source_prior, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(pi_s):
        raise ValueError(f"probabilities of shape {p.shape} for a prior of {len(pi_s)} classes")
    if not len(p):
        raise ValueError("no target image to estimate the class prior from")
    if (pi_s <= 0).any():
        raise ValueError(f"the training prior must be positive for every class, got {pi_s.round(4).tolist()}")
    pi_s = pi_s / pi_s.sum()
    pi_t = pi_s.copy()
    for it in range(1, max_iter + 1):
        q = p * (pi_t / pi_s)                              # E step
        q /= q.sum(1, keepdims=True)
        new = q.mean(0)                                    # M step
        done = np.abs(new - pi_t).max() < tol
        pi_t = new
        if done:
            break
    return pi_t, it
