"""DTA + SNL (Cai et al., "Semi-Supervised Facial Expression Recognition based on Dynamic
Threshold and Negative Learning", arXiv 2601.05556; docs/methods.md section 3).

Only the abstract and an overview of the paper are public, so each component takes its
established form, every constant is an option and each part can be switched off for ablation
(docs/dta_snl.md gives the choices, their reasons and the ablation commands):

- Student S and EMA teacher T (``uses_teacher``; the engine updates T with ``teacher_momentum``
  from step 0). q = softmax(T(u_w)) with T in eval mode; y^ = argmax q. The paper's
  class-balanced labelled batches are the engine's ``data.sampler=balanced``.
- Dynamic Threshold Adjustment, per-class thresholds tau(c), a sample passing when
  max q >= tau(y^):
  ``dta="self_adaptive"``: FreeMatch (Wang et al., ICLR 2023) eqs. 4-6 on the teacher's weak
  predictions, tau(c) = MaxNorm(p~)(c) tau_g, clipped to [tau_min, tau_max];
  ``dta="labelled"``: Ada-CM (Li et al., CVPR 2022): tau(c) is the confidence of the labelled
  samples of class c that the model classifies correctly (the student's weak-view labelled
  logits, no extra forward), here an EMA over steps instead of a per-epoch mean, clipped too;
  ``dta="fixed"``: tau(c) = tau (FixMatch), the ablation without DTA.
- L_pos = (1/muB) sum_b 1[max q_b >= tau(y^_b)] CE(S(u_s)_b, y^_b) (FixMatch eq. 4).
- Selective Negative Learning on the samples below their class threshold (otherwise discarded):
  complementary labels are the classes with q_c < tau_neg (UPS, Rizve et al., ICLR 2021) or the
  ``snl_k`` least likely classes (``snl_mode="topk"``; NLNL, Kim et al., ICCV 2019, uses one);
  L_neg = mean over the selected (b, c) of -log(1 - p_bc), p = softmax(S(u_s)) (NLNL eq. 2).
- L = L_s + lambda_u L_pos + lambda_n L_neg.

State (registered buffers, checkpointed): ``thresholds`` [K] (the last step's), and the EMAs
that drive them: ``tau_global`` and ``p_model`` (self_adaptive, from 1/K as in FreeMatch) or
``class_conf`` (labelled, from 1/K). Batch statistics are all-reduced (mean) before the EMA
update, so every rank holds identical thresholds, as in ``freematch``.

Momenta: the defaults 0.999 (teacher, SSFER/Mean Teacher; DTA EMAs, FreeMatch) suit long
schedules. After n steps the initial value still weighs m^n (0.999^800 = 0.45), so CPU budgets
of about a thousand iterations want ``teacher_momentum=0.99 momentum=0.99``.

Logs: ``loss_u`` is L_pos and ``loss_neg`` is L_neg, both with their graph; ``tau/<c>`` and
``tau_mean``; ``snl_samples`` (below-threshold samples given at least one complementary label),
``snl_labels`` (complementary labels). The complementary labels are returned
(``StepOutput.negatives``) and the engine scores them against the hidden truth: ``snl_wrong``
(complementary labels that are the true class) and ``snl_precision`` = 1 - snl_wrong / snl_labels
(1 when there is none).
"""
import torch
import torch.nn.functional as F

from semifer.algorithms import freematch
from semifer.algorithms.base import Algorithm, StepOutput, register_algorithm
from semifer.algorithms.common import (all_reduce_mean_, confidence_mask, forward_views, masked_ce, probs_of,
                                       teacher_probs)

DTA_MODES = ("self_adaptive", "labelled", "fixed")
SNL_MODES = ("threshold", "topk")


def self_adaptive_thresholds(tau_global: torch.Tensor, p_model: torch.Tensor, tau_min: float = 0.0,
                             tau_max: float = 1.0) -> torch.Tensor:
    """tau(c) = clip(p~(c) / max_c p~(c) * tau_g, tau_min, tau_max) (FreeMatch eq. 6, clipped); [K].

    tau_g is the EMA of the mean max confidence (eq. 4), p~ the EMA of the mean probability
    vector (eq. 5); the defaults [0, 1] are FreeMatch unchanged."""
    return freematch.self_adaptive_thresholds(tau_global, p_model).clamp(tau_min, tau_max)


def correct_class_confidence(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[2, K]: per class c, the sum of max p_i over labelled i with y_i = c = argmax p_i, and
    how many such i there are."""
    conf, pred = probs.max(-1)                                   # [B]
    right = (pred == labels).to(probs.dtype)                     # [B]
    k = probs.shape[1]
    sums = probs.new_zeros(k).index_add_(0, labels, conf * right)
    counts = probs.new_zeros(k).index_add_(0, labels, right)
    return torch.stack([sums, counts])


def labelled_confidence_thresholds(class_conf: torch.Tensor, conf_sum: torch.Tensor, count: torch.Tensor,
                                   momentum: float) -> torch.Tensor:
    """Ada-CM-style per-class thresholds [K], an EMA of the confidence on correctly classified
    labelled samples: a_t(c) = m a_{t-1}(c) + (1 - m) conf_sum(c) / count(c) where count(c) > 0,
    else a_{t-1}(c) (a class with no correct sample in the batch keeps its threshold)."""
    seen = count > 0
    batch_conf = conf_sum / count.clamp(min=1e-12)
    return torch.where(seen, momentum * class_conf + (1 - momentum) * batch_conf, class_conf)


def complementary_mask(probs: torch.Tensor, tau_neg: float = 0.05, mode: str = "threshold",
                       k: int = 1) -> torch.Tensor:
    """Complementary labels [B, K] (bool) from teacher probabilities q [B, K]:
    ``threshold``: {c : q_c < tau_neg} (UPS's negative pseudo-labels); ``topk``: the k classes
    of smallest q_c. A class with q_c >= tau_neg is never selected in ``threshold`` mode."""
    if mode == "threshold":
        return probs < tau_neg
    least = probs.topk(k, dim=-1, largest=False).indices         # [B, k]
    return torch.zeros_like(probs, dtype=torch.bool).scatter_(1, least, True)


def negative_loss(student_probs: torch.Tensor, comp_mask: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """L_neg = (1 / |S|) sum_{(b, c) in S} -log(max(1 - p_bc, eps)), S the selected pairs of
    ``comp_mask`` (NLNL eq. 2; the clamp at eps is NLNL's code, avoiding log 0); 0 when S is empty."""
    terms = -torch.log((1 - student_probs).clamp(min=eps))      # [B, K]
    return (terms * comp_mask).sum() / comp_mask.sum().clamp(min=1)


def snl_logs(comp_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """How many samples and labels SNL used (their precision needs the hidden truth, which only
    the engine holds: ``semifer.engine.diagnostics.negative_scores``)."""
    return {"snl_samples": comp_mask.any(1).sum(), "snl_labels": comp_mask.sum()}


@register_algorithm("dta_snl")
class DTASNL(Algorithm):
    views = {"u_w": "weak", "u_s": "strong"}
    uses_teacher = True

    def __init__(self, lambda_u: float = 1.0, lambda_n: float = 1.0, teacher_momentum: float = 0.999,
                 dta: str = "self_adaptive", tau: float = 0.95, momentum: float = 0.999,
                 tau_min: float = 0.0, tau_max: float = 1.0, snl: bool = True, snl_mode: str = "threshold",
                 tau_neg: float = 0.05, snl_k: int = 1, **kw):
        super().__init__(**kw)
        k = self.num_classes
        if dta not in DTA_MODES:
            raise ValueError(f"dta_snl dta={dta!r}; expected one of {', '.join(DTA_MODES)}")
        if snl_mode not in SNL_MODES:
            raise ValueError(f"dta_snl snl_mode={snl_mode!r}; expected one of {', '.join(SNL_MODES)}")
        if not 1 <= snl_k < k:
            raise ValueError(f"dta_snl snl_k={snl_k} must lie in [1, {k - 1}] so the likeliest class is never negative")
        self.lambda_u, self.lambda_n, self.teacher_momentum = lambda_u, lambda_n, teacher_momentum
        self.dta, self.tau, self.momentum, self.tau_min, self.tau_max = dta, tau, momentum, tau_min, tau_max
        self.snl, self.snl_mode, self.tau_neg, self.snl_k = snl, snl_mode, tau_neg, snl_k
        if dta == "self_adaptive":
            self.register_buffer("tau_global", torch.tensor(1.0 / k))
            self.register_buffer("p_model", torch.full((k,), 1.0 / k))
        elif dta == "labelled":
            self.register_buffer("class_conf", torch.full((k,), 1.0 / k))
        self.register_buffer("thresholds", self.class_thresholds())

    def class_thresholds(self) -> torch.Tensor:
        """tau(c) for every class [K] from the current state."""
        if self.dta == "self_adaptive":
            return self_adaptive_thresholds(self.tau_global, self.p_model, self.tau_min, self.tau_max)
        if self.dta == "labelled":
            return self.class_conf.clamp(self.tau_min, self.tau_max)
        return torch.full((self.num_classes,), float(self.tau))

    @torch.no_grad()
    def update_thresholds(self, probs_u: torch.Tensor, probs_x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Fold this step's statistics (averaged over ranks) into the EMAs, then return tau [K].
        self_adaptive: tau_g <- m tau_g + (1-m) mean_b max q_b, p~ <- m p~ + (1-m) mean_b q_b
        (FreeMatch eqs. 4-5) on the teacher's weak predictions q; labelled: see
        ``labelled_confidence_thresholds`` on the student's labelled predictions."""
        m = self.momentum
        if self.dta == "self_adaptive":
            stats = all_reduce_mean_(torch.cat([probs_u.max(-1).values.mean()[None], probs_u.mean(0)]))   # [1 + K]
            self.tau_global.mul_(m).add_(stats[0], alpha=1 - m)
            self.p_model.mul_(m).add_(stats[1:], alpha=1 - m)
        elif self.dta == "labelled":
            conf_sum, count = all_reduce_mean_(correct_class_confidence(probs_x, labels))      # [K], [K]
            self.class_conf.copy_(labelled_confidence_thresholds(self.class_conf, conf_sum, count, m))
        self.thresholds.copy_(self.class_thresholds())
        return self.thresholds.clone()

    def step(self, model, batch, step, teacher=None):
        probs_u = teacher_probs(teacher, batch["u_w"])                        # [uB, K]
        logits_x, logits_s = forward_views(model, batch["x"], batch["u_s"])
        loss_x = F.cross_entropy(logits_x, batch["y"])
        thresholds = self.update_thresholds(probs_u, probs_of(logits_x), batch["y"])   # [K]
        conf, pseudo = probs_u.max(-1)
        mask = confidence_mask(conf, thresholds[pseudo])                      # [uB]
        loss_pos = masked_ce(logits_s, pseudo, mask)
        loss = loss_x + self.lambda_u * loss_pos
        logs = {"loss_x": loss_x.detach(), "loss_u": loss_pos, "tau_mean": thresholds.mean(),
                **{f"tau/{c}": t for c, t in enumerate(thresholds)}}
        comp = None
        if self.snl:
            below = mask == 0
            comp = complementary_mask(probs_u, self.tau_neg, self.snl_mode, self.snl_k) & below[:, None]   # [uB, K]
            loss_neg = negative_loss(logits_s.float().softmax(-1), comp)
            loss = loss + self.lambda_n * loss_neg
            logs.update(loss_neg=loss_neg, **snl_logs(comp))
        return StepOutput(loss, logs, pseudo, mask, negatives=comp)
