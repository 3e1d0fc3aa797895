"""SSFER stage III: semi-supervised fine-tuning with an EMA teacher (Song et al., "Bridging the
Gaps: Utilizing Unlabeled Face Recognition Datasets to Boost Semi-Supervised Facial Expression
Recognition", Neurocomputing / arXiv 2410.17622; docs/methods.md section 1).

The teacher T is the engine's exponential moving average of the student (eq. 1) with momentum
``teacher_momentum`` from step 0. q = softmax(T(u_w)) (teacher in eval mode, no gradient),
y^ = argmax q (eq. 3), L_u = (1/muB) sum 1[max q > tau] CE(S(u_s), y^) (eq. 4),
L = L_l + mu L_u (eq. 5).

Defaults are the authors' released code (tau 0.7, mu 5, momentum 0.999); the paper gives no
other values. Two options are not in the paper: ``teacher_flip`` makes q the mean over u_w and its
mirror image; ``label_smoothing`` smooths L_l's targets, so the 100-odd labels per class are not
fitted to one-hot confidence that the teacher then passes to the unlabelled faces; ``prior="online"``
estimates the unlabelled faces' class prior while training and logit-adjusts L_l to it
(``semifer.algorithms.label_shift``), so pseudo-labels follow that prior and not the labels';
``gce_q`` > 0 replaces L_u's cross-entropy by the generalised cross-entropy with that q (Zhang &
Sabuncu 2018), robust to the wrong pseudo-labels; ``contrast`` > 0 adds CoMatch's graph-contrastive
term L_c with that weight (``semifer.algorithms.contrast``): L = L_l + mu L_u + contrast L_c. With ``teacher_momentum`` 0
the teacher is the student: the FixMatch ablation of the paper's Table 12.

Forward: x and u_s share the student's one gradient forward; u_w goes only through the teacher.
"""
import torch.nn.functional as F

from semifer.algorithms.base import Algorithm, StepOutput, register_algorithm
from semifer.algorithms.common import forward_views, masked_ce, masked_gce, teacher_probs
from semifer.algorithms.contrast import GraphContrast
from semifer.algorithms.label_shift import labelled_prior_from, make_prior, shift_labelled_logits


def teacher_mask(conf, tau: float):
    """mask_b = 1[max q_b > tau], strict as in SSFER's mask (docs/methods.md section 1, eq. 4)."""
    return (conf > tau).float()


@register_algorithm("ema_teacher")
class EMATeacher(Algorithm):
    views = {"u_w": "weak", "u_s": "strong"}
    uses_teacher = True

    def __init__(self, tau: float = 0.7, mu: float = 5.0, teacher_momentum: float = 0.999,
                 teacher_flip: bool = False, label_smoothing: float = 0.0, prior: str = "labelled",
                 prior_momentum: float = 0.999, contrast: float = 0.0, contrast_temperature: float = 0.2,
                 contrast_graph_tau: float = 0.8, contrast_dim: int = 64, gce_q: float = 0.0, **kw):
        super().__init__(**kw)
        self.tau, self.mu, self.teacher_flip = tau, mu, teacher_flip
        self.label_smoothing = label_smoothing
        self.teacher_momentum = teacher_momentum
        self.prior = make_prior(prior, self.num_classes, prior_momentum)
        if contrast < 0:
            raise ValueError(f"algorithm.contrast={contrast}; expected >= 0 (0 = off)")
        self.contrast = contrast
        if not 0.0 <= gce_q <= 1.0:
            raise ValueError(f"algorithm.gce_q={gce_q}; expected 0 (cross-entropy) to 1")
        self.gce_q = gce_q
        self.contrast_opts = dict(proj_dim=contrast_dim, temperature=contrast_temperature,
                                  graph_tau=contrast_graph_tau, momentum=teacher_momentum)
        self.graph = None  # GraphContrast, sized to the backbone's features in setup()

    def unlabelled_loss(self, logits, pseudo, mask):
        """L_u (eq. 4): CE, or the generalised cross-entropy when ``gce_q`` > 0."""
        return masked_gce(logits, pseudo, mask, self.gce_q) if self.gce_q > 0 else masked_ce(logits, pseudo, mask)

    def setup(self, model):
        if self.contrast > 0:
            self.graph = GraphContrast(model.num_features, **self.contrast_opts)

    def setup_data(self, data):
        if self.prior is not None:
            self.prior.set_labelled(labelled_prior_from(data))

    def step(self, model, batch, step, teacher=None):
        if self.contrast > 0:  # features of both views for L_c
            probs, h_t = teacher_probs(teacher, batch["u_w"], self.teacher_flip, features=True)  # [uB, K], [uB, D]
            (_, h_s), (logits_x, logits_s) = forward_views(model, batch["x"], batch["u_s"], features=True)
        else:
            probs = teacher_probs(teacher, batch["u_w"], self.teacher_flip)                      # [uB, K]
            logits_x, logits_s = forward_views(model, batch["x"], batch["u_s"])
        conf, pseudo = probs.max(-1)
        mask = teacher_mask(conf, self.tau)
        logits_x, logs = shift_labelled_logits(self.prior, logits_x, probs)
        loss_x = F.cross_entropy(logits_x, batch["y"], label_smoothing=self.label_smoothing)
        loss_u = self.unlabelled_loss(logits_s, pseudo, mask)
        loss = loss_x + self.mu * loss_u
        if self.contrast > 0:
            if self.graph is None:  # a bare step() without the engine's setup()
                self.setup(model)
                self.graph.to(h_s.device)
            loss_c, contrast_logs = self.graph(h_s, h_t, probs)
            loss = loss + self.contrast * loss_c
            logs = logs | contrast_logs
        return StepOutput(loss, {"loss_x": loss_x.detach(), "loss_u": loss_u, "tau_mean": self.tau} | logs, pseudo, mask)
