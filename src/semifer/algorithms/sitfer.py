"""SIT-FER (Ding et al., "SIT-FER: Integration of Semantic-, Instance-, Text-level Information for
Semi-supervised Facial Expression Recognition", arXiv 2503.18463).

A projection head g maps the image feature into the space of a text encoder; f = g(h)/||g(h)||
and the class embeddings t_c (descriptions of each expression, encoded once) are unit vectors.
For the weak view of an unlabelled image three class distributions are formed:

    p_sem  = softmax(z)                              the classifier (semantic level)
    p_text = softmax(<f, t_c> / T)                   the text level
    p_ins  = softmax(max_{m in M_c} <f, m> / T)      the instance level: M is the Instance Memory
                                                     Buffer of labelled (and confidently
                                                     pseudo-labelled) features; or a k-NN vote

fused into p^ = (p_sem + p_text + p_ins) / 3 (paper) or softmax(sum_l w_l s_l) over raw scores
(the authors' code, instance term after a warm-up); y^ = argmax p^, used when max p^ >= tau.
Loss: L = L_s + lambda_t L_t + lambda_u L_u with L_s = CE(z(x), y), the text co-supervision
L_t = CE(<f(x), t_c> / T, y) and L_u = masked CE(z(u_s), y^) on the strong view.

``levels`` and ``lambda_t`` switch levels and the co-supervision on and off for the ablation;
every level's pseudo-labels are returned (``StepOutput.levels``) whatever is switched on, and the
engine logs their accuracy against the hidden truth.
See docs/sitfer.md.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

from semifer.algorithms.base import Algorithm, StepOutput, register_algorithm
from semifer.algorithms.common import all_gather_cat, confidence_mask, masked_ce
from semifer.text import DEFAULT_TEMPLATE, class_embeddings, class_texts, create_text_encoder, text_encoder_options

LEVELS = ("sem", "text", "ins")


# ---- pure maths ----------------------------------------------------------------------------

def text_scores(f: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """s_text = <f, t_c>: cosine of unit features [B, d] and unit class embeddings [K, d] -> [B, K]."""
    return f @ t.t()


def instance_scores(f: torch.Tensor, mem: torch.Tensor, mem_labels: torch.Tensor, num_classes: int,
                    aggregation: str = "max", k: int = 10, temperature: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(s_ins, p_ins) [B, K] from unit features f [B, d] and the buffer's valid entries mem [N, d].

    ``max`` (authors' code): s_c = max_{m in M_c} <f, m> (-1, the lowest cosine, for a class with
    no entry), p_ins = softmax(s / T). ``knn``: the k most similar entries vote with weights
    softmax(<f, m> / T) over those k; p_ins = s_ins = the votes summed per class.
    An empty buffer gives s = 0 and a uniform p_ins."""
    B = f.shape[0]
    if mem.shape[0] == 0:
        s = f.new_zeros(B, num_classes)
        return s, s.softmax(-1)
    sims = f @ mem.t()                                                       # [B, N]
    labels = mem_labels.long().unsqueeze(0).expand(B, -1)                    # [B, N]
    if aggregation == "max":
        s = f.new_full((B, num_classes), -1.0).scatter_reduce(1, labels, sims, "amax", include_self=True)
        return s, (s / temperature).softmax(-1)
    if aggregation == "knn":
        top = sims.topk(min(k, sims.shape[1]), dim=1)                         # [B, k]
        w = (top.values / temperature).softmax(-1)
        p = f.new_zeros(B, num_classes).scatter_add(1, labels.gather(1, top.indices), w)
        return p, p
    raise ValueError(f"sitfer: aggregation={aggregation!r}; expected max or knn")


def fuse_mean(probs: list[torch.Tensor]) -> torch.Tensor:
    """p^ = (1/L) sum_l p_l over the active levels (paper: (p_sem + p_text + p_ins) / 3)."""
    return torch.stack(probs).mean(0)


def fuse_weighted(scores: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """p^ = softmax(sum_l w_l s_l) over raw scores (logits z, cosines s_text, s_ins): the
    authors' code (0.6 z + 0.4 s_text before the instance warm-up, 0.3 / 0.2 / 0.5 after)."""
    return sum(w * s for w, s in zip(weights, scores)).softmax(-1)


def cosupervision_loss(f_x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, temperature: float) -> torch.Tensor:
    """L_t = CE(<f(x), t_c> / T, y): text co-supervision of the labelled batch."""
    return F.cross_entropy(text_scores(f_x, t) / temperature, y)


def parse_levels(levels) -> tuple[str, ...]:
    """"sem,text,ins" (or a list) -> the active levels in canonical order; sem is required."""
    names = [s.strip() for s in (levels.split(",") if isinstance(levels, str) else levels) if s.strip()]
    bad = sorted(set(names) - set(LEVELS))
    if bad or "sem" not in names:
        raise ValueError(f"sitfer: levels={levels!r}; expected a comma list of {', '.join(LEVELS)} including sem")
    return tuple(lv for lv in LEVELS if lv in names)


# ---- the fused predictor (shared by training and by prediction from a checkpoint) ------------

class FusedPredictor(nn.Module):
    """(backbone feature h, logits z) -> the three level distributions and their fusion.

    Holds the projection head g, the class embeddings t and the buffer; saved with the
    checkpoint so that ``semifer eval`` reproduces the fused prediction."""

    def __init__(self, in_dim: int, text_dim: int, num_classes: int, levels=LEVELS, fusion: str = "mean",
                 fusion_weights=(0.3, 0.2, 0.5), temperature: float = 0.1, aggregation: str = "max",
                 knn_k: int = 10, proj_hidden: int = 0):
        super().__init__()
        self.proj = (nn.Linear(in_dim, text_dim) if proj_hidden <= 0 else
                     nn.Sequential(nn.Linear(in_dim, proj_hidden), nn.ReLU(inplace=True), nn.Linear(proj_hidden, text_dim)))
        self.register_buffer("text_emb", torch.zeros(num_classes, text_dim))   # t_c, unit rows
        self.register_buffer("mem_feat", torch.zeros(0, text_dim))             # valid buffer entries
        self.register_buffer("mem_label", torch.zeros(0, dtype=torch.long))
        self.num_classes, self.levels, self.fusion = num_classes, parse_levels(levels), fusion
        self.fusion_weights, self.temperature = list(fusion_weights), temperature
        self.aggregation, self.knn_k, self.proj_hidden = aggregation, knn_k, proj_hidden
        if fusion not in ("mean", "weighted"):
            raise ValueError(f"sitfer: fusion={fusion!r}; expected mean or weighted")
        if aggregation not in ("max", "knn"):
            raise ValueError(f"sitfer: aggregation={aggregation!r}; expected max or knn")

    def options(self) -> dict:
        return dict(in_dim=self.proj[0].in_features if self.proj_hidden > 0 else self.proj.in_features,
                    text_dim=self.text_emb.shape[1], num_classes=self.num_classes, levels=list(self.levels),
                    fusion=self.fusion, fusion_weights=self.fusion_weights, temperature=self.temperature,
                    aggregation=self.aggregation, knn_k=self.knn_k, proj_hidden=self.proj_hidden)

    def embed(self, h: torch.Tensor) -> torch.Tensor:
        """f = g(h) / ||g(h)|| [B, text_dim]."""
        return F.normalize(self.proj(h.float()), dim=-1)

    def level_scores(self, f, z, mem=None, mem_label=None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{level: (raw score, probability)} [B, K] each, for unit features f and logits z."""
        mem = self.mem_feat if mem is None else mem
        mem_label = self.mem_label if mem_label is None else mem_label
        z = z.float()
        s_text = text_scores(f, self.text_emb)
        return {"sem": (z, z.softmax(-1)),
                "text": (s_text, (s_text / self.temperature).softmax(-1)),
                "ins": instance_scores(f, mem, mem_label, self.num_classes, self.aggregation, self.knn_k,
                                       self.temperature)}

    def fuse(self, scores: dict, levels, weights=None) -> torch.Tensor:
        if self.fusion == "mean":
            return fuse_mean([scores[lv][1] for lv in levels])
        w = self.fusion_weights if weights is None else weights
        return fuse_weighted([scores[lv][0] for lv in LEVELS], [w[i] if lv in levels else 0.0
                                                               for i, lv in enumerate(LEVELS)])

    @torch.no_grad()
    def forward(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Fused class probabilities [B, K] of the model's output (h, z)."""
        with torch.autocast(h.device.type, enabled=False):
            return self.fuse(self.level_scores(self.embed(h), z), self.levels)


# ---- the algorithm -------------------------------------------------------------------------

@register_algorithm("sitfer")
class SITFER(Algorithm):
    views = {"u_w": "weak", "u_s": "strong"}

    def __init__(self, tau: float = 0.75, lambda_t: float = 1.0, lambda_u: float = 1.0, temperature: float = 0.1,
                 levels: str = "sem,text,ins", fusion: str = "mean", fusion_weights=(0.3, 0.2, 0.5),
                 warmup_weights=(0.6, 0.4, 0.0), ins_warmup: float = 0.0, aggregation: str = "max", knn_k: int = 10,
                 ins_pseudo_cap: int = 100, ins_tau: float | None = None, proj_hidden: int = 0,
                 text_encoder: str = "minilm", text_template: str | None = DEFAULT_TEMPLATE,
                 descriptions: str | None = None, text_model: str | None = None, text_checkpoint: str | None = None,
                 text_pretrained: str | None = None, text_dim: int | None = None, text_cache_dir: str | None = None, **kw):
        super().__init__(**kw)
        self.tau, self.lambda_t, self.lambda_u, self.temperature = tau, lambda_t, lambda_u, temperature
        self.levels = parse_levels(levels)
        self.fusion, self.fusion_weights, self.warmup_weights = fusion, list(fusion_weights), list(warmup_weights)
        if len(self.fusion_weights) != 3 or len(self.warmup_weights) != 3:
            raise ValueError("sitfer: fusion_weights and warmup_weights take three numbers (sem, text, ins), "
                             f"got {fusion_weights!r} and {warmup_weights!r}")
        self.ins_warmup, self.aggregation, self.knn_k = ins_warmup, aggregation, knn_k
        self.ins_pseudo_cap, self.ins_tau, self.proj_hidden = ins_pseudo_cap, tau if ins_tau is None else ins_tau, proj_hidden
        self.text_template, self.descriptions, self.text_cache_dir = text_template, descriptions, text_cache_dir
        given = dict(model=text_model, checkpoint_path=text_checkpoint, pretrained=text_pretrained, dim=text_dim)
        self.encoder = create_text_encoder(text_encoder, **text_encoder_options(text_encoder, given))
        self.predictor: FusedPredictor | None = None

    # hooks ------------------------------------------------------------------------------------
    def setup(self, model):
        """Projection head g: feature width -> text width."""
        self.predictor = FusedPredictor(model.num_features, self.encoder.dim, self.num_classes, self.levels,
                                        self.fusion, self.fusion_weights, self.temperature, self.aggregation,
                                        self.knn_k, self.proj_hidden)

    def setup_data(self, data):
        """Class embeddings t_c from the class names, and an empty buffer: one slot per labelled image."""
        if self.predictor is None:
            raise RuntimeError("sitfer: setup(model) must run before setup_data(data)")
        texts = class_texts(data.classes, self.text_template, self.descriptions)
        self.predictor.text_emb.copy_(class_embeddings(self.encoder, texts, self.text_cache_dir))
        self._alloc_buffer(sorted(int(i) for i in data.labelled), self.encoder.dim, max(self.ins_pseudo_cap, 0))

    def _alloc_buffer(self, labelled: list[int], d: int, cap: int) -> None:
        K = self.num_classes
        self.register_buffer("lab_index", torch.as_tensor(labelled, dtype=torch.long))  # train index per slot
        self.register_buffer("mem_feat", torch.zeros(len(labelled), d))
        self.register_buffer("mem_label", torch.zeros(len(labelled), dtype=torch.long))
        self.register_buffer("mem_valid", torch.zeros(len(labelled), dtype=torch.bool))
        self.register_buffer("pl_feat", torch.zeros(K, cap, d))        # pseudo-labelled, FIFO per class
        self.register_buffer("pl_valid", torch.zeros(K, cap, dtype=torch.bool))
        self.register_buffer("pl_ptr", torch.zeros(K, dtype=torch.long))

    def _ensure_ready(self, h: torch.Tensor) -> None:
        """Used without the engine's hooks (a bare ``step``): size g from the features, name the
        classes "class i", and let labelled features share the per-class FIFO buffer."""
        if self.predictor is None:
            self.setup(SimpleNamespace(num_features=h.shape[1]))
            self.predictor.to(h.device)
        if "lab_index" not in self._buffers:
            self.setup_data(SimpleNamespace(classes=[f"class {i}" for i in range(self.num_classes)], labelled=[]))
            self.to(h.device)

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        """Also into a fresh instance: the head and the buffer are sized from ``state``."""
        if self.predictor is None:
            w = state.get("predictor.proj.weight", state.get("predictor.proj.0.weight"))
            self.setup(SimpleNamespace(num_features=w.shape[1]))
        if "lab_index" not in self._buffers and "lab_index" in state:
            self._alloc_buffer(state["lab_index"].tolist(), state["pl_feat"].shape[2], state["pl_feat"].shape[1])
        return super().load_state_dict(state, strict, assign)

    # buffer -----------------------------------------------------------------------------------
    @torch.no_grad()
    def update_labelled(self, f: torch.Tensor, y: torch.Tensor, idx: torch.Tensor | None) -> None:
        """Write labelled features into their slots (one per labelled image, overwritten); into
        the per-class FIFO when there are no slots (no ``setup_data``) or no ``x_idx``."""
        if idx is None or len(self.lab_index) == 0:
            self.insert_pseudo(f, y, torch.ones_like(y, dtype=torch.bool))
            return
        slot = torch.searchsorted(self.lab_index, idx).clamp(max=len(self.lab_index) - 1)
        if not bool((self.lab_index[slot] == idx).all()):
            raise ValueError("sitfer: a labelled batch index is not in the labelled set given to setup_data")
        self.mem_feat[slot], self.mem_label[slot], self.mem_valid[slot] = f.float(), y, True

    @torch.no_grad()
    def insert_pseudo(self, f: torch.Tensor, pseudo: torch.Tensor, keep: torch.Tensor) -> None:
        """Append confidently pseudo-labelled features, at most ``ins_pseudo_cap`` per class (the
        oldest are overwritten)."""
        cap = self.pl_feat.shape[1]
        if cap == 0:
            return
        for c in pseudo[keep].unique().tolist():
            fc = f[keep & (pseudo == c)][-cap:]
            pos = (self.pl_ptr[c] + torch.arange(len(fc), device=f.device)) % cap
            self.pl_feat[c, pos], self.pl_valid[c, pos] = fc.float(), True
            self.pl_ptr[c] = (self.pl_ptr[c] + len(fc)) % cap

    def memory(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Valid buffer entries: features [N, d] and labels [N]."""
        K, cap, d = self.pl_feat.shape
        feats = torch.cat([self.mem_feat[self.mem_valid], self.pl_feat.reshape(-1, d)[self.pl_valid.reshape(-1)]])
        classes = torch.arange(K, device=feats.device).repeat_interleave(cap)[self.pl_valid.reshape(-1)]
        return feats, torch.cat([self.mem_label[self.mem_valid], classes])

    def active_levels(self, step: int) -> tuple[tuple[str, ...], list[float]]:
        """The instance level joins after ``ins_warmup`` (a fraction of the iterations)."""
        if "ins" in self.levels and step < self.ins_warmup * self.total_steps:
            return tuple(lv for lv in self.levels if lv != "ins"), self.warmup_weights
        return self.levels, self.fusion_weights

    # the loss ---------------------------------------------------------------------------------
    def step(self, model, batch, step, teacher=None):
        x, y, u_w, u_s = batch["x"], batch["y"], batch["u_w"], batch["u_s"]
        B, uB = len(x), len(u_w)
        h, z = model(torch.cat([x, u_w, u_s]))                       # one forward, as FixMatch
        self._ensure_ready(h)
        z_x, z_w, z_s = z.split([B, uB, uB])
        pred = self.predictor
        with torch.autocast(h.device.type, enabled=False):
            f = pred.embed(h[:B + uB])                               # [B + uB, d]; u_s needs none
            f_x, f_w = f[:B], f[B:].detach()
            loss_s = F.cross_entropy(z_x.float(), y)
            loss_t = cosupervision_loss(f_x, pred.text_emb, y, self.temperature)
            x_idx = batch.get("x_idx")
            self.update_labelled(all_gather_cat(f_x.detach()), all_gather_cat(y),
                                 None if x_idx is None else all_gather_cat(x_idx))
            with torch.no_grad():
                scores = pred.level_scores(f_w, z_w.detach(), *self.memory())
                levels, weights = self.active_levels(step)
                p_hat = pred.fuse(scores, levels, weights)           # [uB, K]
            conf, pseudo = p_hat.max(-1)
            mask = confidence_mask(conf, self.tau)
            loss_u = masked_ce(z_s, pseudo, mask)
            if "ins" in self.levels:                                  # buffer entry: max p^ >= ins_tau
                self.insert_pseudo(all_gather_cat(f_w), all_gather_cat(pseudo), all_gather_cat(conf >= self.ins_tau))
        loss = loss_s + self.lambda_u * loss_u + (self.lambda_t * loss_t if self.lambda_t > 0 else 0.0)
        logs = {"loss_x": loss_s.detach(), "loss_t": loss_t.detach(), "loss_u": loss_u,
                "buffer_size": float(self.mem_valid.sum() + self.pl_valid.sum())}
        return StepOutput(loss, logs, pseudo, mask, levels=self.level_pseudo_labels(scores, p_hat))

    @torch.no_grad()
    def level_pseudo_labels(self, scores: dict, p_hat: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Each level's pseudo-labels and the fused ones, with whether their own confidence
        reaches tau: {level: (labels [uB], mask [uB])}. The engine scores them against the hidden
        truth (``pl_acc_<level>``, ``pl_acc_<level>_masked``, ``mask_<level>``); diagnostics only."""
        out = {}
        for name, p in [*((lv, scores[lv][1]) for lv in LEVELS), ("fused", p_hat)]:
            conf, lab = p.max(-1)
            out[name] = (lab, conf >= self.tau)
        return out

    # prediction -------------------------------------------------------------------------------
    def export_predictor(self):
        """The fused predictor with the buffer's current valid entries, for the checkpoint."""
        pred = self.predictor
        mem, labels = self.memory()
        state = {k: v for k, v in pred.state_dict().items() if not k.startswith("mem_")}
        return {**state, "mem_feat": mem, "mem_label": labels}, pred.options()

    @classmethod
    def load_predictor(cls, tensors, options):
        pred = FusedPredictor(**options)
        pred.mem_feat = torch.zeros_like(tensors["mem_feat"])
        pred.mem_label = torch.zeros_like(tensors["mem_label"])
        pred.load_state_dict(tensors)
        return pred.eval()
