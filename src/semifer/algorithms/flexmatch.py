"""FlexMatch (Zhang et al., "FlexMatch: Boosting Semi-Supervised Learning with Curriculum Pseudo
Labeling", NeurIPS 2021): FixMatch with per-class thresholds that follow each class's learning
effect.

State: ``selected_label`` [num_unlabelled], the last confident prediction of every unlabelled
image (-1 = never confident), a registered buffer so it is checkpointed. From it,
sigma(c) = #{n : selected_n = c} (eq. 3), the normalised learning effect beta(c) (eq. 4, or eq. 7
with threshold warm-up) and the thresholds T(c) = M(beta(c)) tau (eq. 8). A sample passes when
max q >= T(argmax q) (eq. 6).

``tau_min`` (not in the paper; default 0 = the paper) floors every T(c). With warm-up, beta(c)
divides by the number of never-confident images, so on a large unlabelled set in a short
schedule every T(c) stays near 0 and every pseudo-label is used; on FER2013 that costs 10 points
against supervised training (docs/benchmarks.md, table 1). A floor of 0.7 keeps the curriculum
above the level where a weak model's errors dominate. While every T(c) is below the floor, the
floor is every class's threshold and this is FixMatch with tau = tau_min: on FER2013 at 2,400
steps the two runs agreed to the last digit on four label splits (docs/benchmarks.md, section 1d).

Order, as in the authors' code (TorchSSL): a step masks with the thresholds of the state so far;
its own confident predictions (max q > tau) update ``selected_label`` afterwards, in ``sync()``.
Under DDP ``sync()`` all-gathers every rank's (index, pseudo-label, confident) triples and
applies them in rank order, so every rank holds the same state (ranks draw different unlabelled
batches of the same size).

Forward: one forward of [x, u_w, u_s] with the weak logits detached (see ``fixmatch``).
"""
import torch
import torch.nn.functional as F

from semifer.algorithms.base import Algorithm, StepOutput, register_algorithm
from semifer.algorithms.common import all_gather_cat, confidence_mask, forward_views, masked_ce, probs_of

MAPPINGS = ("convex", "linear")


def learning_effect(selected: torch.Tensor, num_classes: int, warmup: bool) -> torch.Tensor:
    """beta(c) = sigma(c) / max_c sigma (eq. 4), or with threshold warm-up
    beta(c) = sigma(c) / max(max_c sigma, N - sum_c sigma) (eq. 7), where N - sum_c sigma counts
    the images never predicted confidently. 0 for every class while nothing has been selected."""
    counts = torch.bincount(selected + 1, minlength=num_classes + 1).float()   # [K + 1], slot 0: unused
    sigma, unused = counts[1:], counts[0]
    denom = torch.maximum(sigma.max(), unused) if warmup else sigma.max()
    return sigma / denom.clamp(min=1.0)


def flexible_thresholds(beta: torch.Tensor, tau: float, mapping: str) -> torch.Tensor:
    """T(c) = M(beta(c)) tau (eq. 8), M(x) = x / (2 - x) ("convex") or M(x) = x ("linear", eq. 5)."""
    return tau * (beta / (2.0 - beta) if mapping == "convex" else beta)


def last_write(idx: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique indices and, for each, the value of its last occurrence: a deterministic update
    when two ranks drew the same image (CUDA index_put_ with repeated indices is not)."""
    uniq, inverse = torch.unique(idx, return_inverse=True)
    order = torch.arange(len(idx), device=idx.device)
    last = torch.zeros_like(uniq).scatter_reduce_(0, inverse, order, "amax", include_self=False)
    return uniq, values[last]


@register_algorithm("flexmatch")
class FlexMatch(Algorithm):
    views = {"u_w": "weak", "u_s": "strong"}

    def __init__(self, tau: float = 0.95, lambda_u: float = 1.0, threshold_warmup: bool = True,
                 mapping: str = "convex", tau_min: float = 0.0, **kw):
        super().__init__(**kw)
        if mapping not in MAPPINGS:
            raise ValueError(f"flexmatch mapping={mapping!r}; expected one of {', '.join(MAPPINGS)}")
        self.tau, self.lambda_u = tau, lambda_u
        self.threshold_warmup, self.mapping, self.tau_min = threshold_warmup, mapping, tau_min
        self.register_buffer("selected_label", torch.full((self.num_unlabelled,), -1, dtype=torch.long))
        self._pending: torch.Tensor | None = None   # [uB, 3] (index, pseudo-label, confident) of the last step

    def class_thresholds(self) -> torch.Tensor:
        """max(T(c), tau_min) for every class [K] from the current state."""
        beta = learning_effect(self.selected_label, self.num_classes, self.threshold_warmup)
        return flexible_thresholds(beta, self.tau, self.mapping).clamp(min=self.tau_min)

    def step(self, model, batch, step, teacher=None):
        logits_x, logits_w, logits_s = forward_views(model, batch["x"], batch["u_w"], batch["u_s"])
        loss_x = F.cross_entropy(logits_x, batch["y"])
        conf, pseudo = probs_of(logits_w).max(-1)                  # [uB]
        thresholds = self.class_thresholds()                       # [K]
        mask = confidence_mask(conf, thresholds[pseudo])
        self._pending = torch.stack([batch["u_idx"].long(), pseudo, (conf > self.tau).long()], 1)
        loss_u = masked_ce(logits_s, pseudo, mask)
        loss = loss_x + self.lambda_u * loss_u
        return StepOutput(loss, {"loss_x": loss_x.detach(), "loss_u": loss_u,
                                 "tau_mean": thresholds.mean()}, pseudo, mask)

    @torch.no_grad()
    def sync(self) -> None:
        """selected_n = argmax q_n for the last step's images with max q_n > tau, from all ranks."""
        if self._pending is None:
            return
        idx, pseudo, confident = all_gather_cat(self._pending).unbind(1)   # [world * uB] each
        self._pending = None
        keep = confident.bool()
        idx, pseudo = last_write(idx[keep], pseudo[keep])
        self.selected_label[idx] = pseudo
