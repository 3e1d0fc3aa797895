"""FreeMatch (Wang et al., "FreeMatch: Self-adaptive Thresholding for Semi-supervised Learning",
ICLR 2023): thresholds that follow the model's own confidence, plus a class-fairness term.

State (registered buffers, checkpointed), all EMAs with momentum lambda (``momentum``):
- tau_t: global threshold, EMA of the batch's mean max confidence, tau_0 = 1/K (eq. 4);
- p~_t: EMA of the batch's mean probability vector, p~_0 = 1/K (eq. 5);
- h~_t: EMA of the histogram of weak-view pseudo-labels, h~_0 = 1/K (eq. 8).
Per-class thresholds tau_t(c) = MaxNorm(p~_t)(c) tau_t (eq. 6); a sample passes when
max q >= tau_t(argmax q) (eq. 7). L = L_x + lambda_u L_u + lambda_f L_f (eq. 11).

Order, as in the authors' code: the EMAs take in this step's weak predictions, then mask it.
The batch statistics (mean confidence, mean probabilities, histogram) are all-reduced (mean)
before the EMA update, so every rank holds identical state (equal batch sizes per rank make the
mean of rank means the global mean).

Initial values follow the paper (1/K), as USB's released code does too
(``FreeMatchThresholingHook``: p~ and h~ start at ones / K and tau at mean(p~) = 1/K; some
forks drop the / K). ``lambda_f`` 0.01 is the default of the authors' USB code (its CIFAR/STL configs set 0.001).
L_f's sign is the paper's and the code's: minimising sum_c a(c) log b(c).

``tau_min`` (not in the paper; default 0 = the paper) floors every tau_t(c), as DTA's clip does
(``dta_snl``). tau_t starts at 1/K and follows the model's mean confidence, so a weak model in a
short schedule pseudo-labels nearly everything; on FER2013 that costs 10 points against
supervised training (docs/benchmarks.md, table 1).

Forward: one forward of [x, u_w, u_s] with the weak logits detached (see ``fixmatch``).
"""
import torch
import torch.nn.functional as F

from semifer.algorithms.base import Algorithm, StepOutput, register_algorithm
from semifer.algorithms.common import all_reduce_mean_, confidence_mask, forward_views, masked_ce, probs_of


def self_adaptive_thresholds(tau_global: torch.Tensor, p_model: torch.Tensor, tau_min: float = 0.0) -> torch.Tensor:
    """tau_t(c) = MaxNorm(p~_t)(c) * tau_t = p~_t(c) / max_c p~_t(c) * tau_t (eq. 6), floored at
    ``tau_min``; [K]."""
    return (p_model / p_model.max() * tau_global).clamp(min=tau_min)


def safe_inverse(t: torch.Tensor) -> torch.Tensor:
    """1 / t with 1/0 := 0, so a class absent from a histogram gets no weight (authors' code)."""
    inv = 1.0 / t
    return torch.where(torch.isinf(inv), torch.zeros_like(inv), inv)


def sum_norm(t: torch.Tensor) -> torch.Tensor:
    """SumNorm(t) = t / sum(t)."""
    return t / t.sum()


def fairness_loss(logits_s: torch.Tensor, mask: torch.Tensor, p_model: torch.Tensor,
                  label_hist: torch.Tensor) -> torch.Tensor:
    """L_f = -H(SumNorm(p~_t / h~_t), SumNorm(p_bar / h_bar)) = sum_c a(c) log b(c) (eq. 10),
    where p_bar is the mean softmax of the strong views that pass the mask and h_bar the
    normalised histogram of their argmax (eq. 9). 0 when no sample passes."""
    keep = mask.bool()
    if not keep.any():
        return logits_s.new_zeros((), dtype=torch.float32)
    probs = logits_s[keep].float().softmax(-1)                            # [n, K]
    hist = torch.bincount(probs.argmax(-1), minlength=probs.shape[1]).float() / len(probs)
    target = sum_norm(p_model * safe_inverse(label_hist))                  # [K]
    pred = sum_norm(probs.mean(0) * safe_inverse(hist))                    # [K]
    return (target * torch.log(pred + 1e-12)).sum()


@register_algorithm("freematch")
class FreeMatch(Algorithm):
    views = {"u_w": "weak", "u_s": "strong"}

    def __init__(self, lambda_u: float = 1.0, lambda_f: float = 0.01, momentum: float = 0.999,
                 tau_min: float = 0.0, **kw):
        super().__init__(**kw)
        self.lambda_u, self.lambda_f, self.momentum, self.tau_min = lambda_u, lambda_f, momentum, tau_min
        k = self.num_classes
        self.register_buffer("tau_global", torch.tensor(1.0 / k))
        self.register_buffer("p_model", torch.full((k,), 1.0 / k))
        self.register_buffer("label_hist", torch.full((k,), 1.0 / k))

    @torch.no_grad()
    def update_statistics(self, probs: torch.Tensor) -> None:
        """tau_t = l tau_{t-1} + (1-l) mean_b max q_b (eq. 4); p~_t = l p~_{t-1} + (1-l) mean_b q_b
        (eq. 5); h~_t = l h~_{t-1} + (1-l) Hist(argmax q_b) (eq. 8); batch terms averaged over ranks."""
        k = self.num_classes
        conf, pseudo = probs.max(-1)
        hist = torch.bincount(pseudo, minlength=k).float() / len(pseudo)
        stats = all_reduce_mean_(torch.cat([conf.mean()[None], probs.mean(0), hist]))   # [1 + 2K]
        m = self.momentum
        self.tau_global.mul_(m).add_(stats[0], alpha=1 - m)
        self.p_model.mul_(m).add_(stats[1:k + 1], alpha=1 - m)
        self.label_hist.mul_(m).add_(stats[k + 1:], alpha=1 - m)

    def step(self, model, batch, step, teacher=None):
        logits_x, logits_w, logits_s = forward_views(model, batch["x"], batch["u_w"], batch["u_s"])
        loss_x = F.cross_entropy(logits_x, batch["y"])
        probs = probs_of(logits_w)                                             # [uB, K]
        self.update_statistics(probs)
        conf, pseudo = probs.max(-1)
        thresholds = self_adaptive_thresholds(self.tau_global, self.p_model, self.tau_min)   # [K]
        mask = confidence_mask(conf, thresholds[pseudo])
        loss_u = masked_ce(logits_s, pseudo, mask)
        loss_f = fairness_loss(logits_s, mask, self.p_model, self.label_hist)
        loss = loss_x + self.lambda_u * loss_u + self.lambda_f * loss_f
        return StepOutput(loss, {"loss_x": loss_x.detach(), "loss_u": loss_u, "loss_f": loss_f.detach(),
                                 "tau_global": self.tau_global.clone(), "tau_mean": thresholds.mean()},
                          pseudo, mask)
