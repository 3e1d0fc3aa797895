"""Published encoders as semifer backbones: MAE / SSFER ViT checkpoints and open_clip image towers.

Both load through ``model.checkpoint_path`` (``create_model(..., checkpoint_path=...)``), whose
``load_backbone_checkpoint`` calls :func:`adapt_state_dict` to turn the published format into
the backbone's keys, then prints a report of the keys loaded, dropped, missing and unexpected.

* MAE (He et al. 2022) and SSFER (Song et al., arXiv 2410.17622; docs/methods.md section 1) publish a torch file
  ``{"model": state_dict}`` with timm-style ViT keys (``cls_token``, ``pos_embed``,
  ``patch_embed.proj.*``, ``blocks.N.*``, ``norm.*``), plus, in the pre-training checkpoints,
  the decoder (``decoder_*``) and ``mask_token``. The decoder and mask token are dropped; the
  position embeddings are resampled (bicubic, timm's ``resample_abs_pos_embed``) when the model
  is built for another image size, and the RGB patch projection is summed to one channel for
  gray inputs (timm's ``adapt_input_conv``). Use ``model.name=vit_base_patch16_224`` (or any
  timm ViT of the same width and patch size).
* open_clip publishes a whole CLIP state dict (``open_clip_pytorch_model.bin`` /
  ``open_clip_model.safetensors``): the image tower's keys start with ``visual.`` and the text
  tower's do not. ``openclip_vit_b16`` wraps the image tower; the text keys are dropped, and
  ``visual.positional_embedding`` is resampled for another image size (open_clip's
  ``resize_pos_embed``). Needs ``pip install semifer[clip]``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from semifer.models.backbones import register_model

MAE_ONLY = ("decoder_", "decoder.", "mask_token")  # MAE pre-training keys the encoder lacks


def adapt_state_dict(backbone: nn.Module, state: dict[str, torch.Tensor]
                     ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A published state dict -> (the backbone's keys and shapes, keys dropped on purpose)."""
    if isinstance(backbone, OpenCLIPImageTower):
        return _adapt_openclip(backbone, state)
    if isinstance(backbone, VisionTransformer):
        return _adapt_mae_vit(backbone, state)
    return state, []


def _adapt_mae_vit(vit: VisionTransformer, state: dict) -> tuple[dict, list[str]]:
    """Drop the MAE decoder and mask token; resample pos_embed [1, P + L, D] to the model's
    grid; sum RGB patch weights to one channel for a gray model."""
    dropped = [k for k in state if k.startswith(MAE_ONLY)]
    state = {k: v for k, v in state.items() if not k.startswith(MAE_ONLY)}
    pos, own = state.get("pos_embed"), vit.pos_embed
    if pos is not None and own is not None and pos.shape[1] != own.shape[1] and pos.shape[2] == own.shape[2]:
        from timm.layers import resample_abs_pos_embed

        prefix = 0 if getattr(vit, "no_embed_class", False) else vit.num_prefix_tokens
        side = math.isqrt(pos.shape[1] - prefix)                      # old grid, square
        if side * side == pos.shape[1] - prefix:
            state["pos_embed"] = resample_abs_pos_embed(pos, list(vit.patch_embed.grid_size), [side, side],
                                                        num_prefix_tokens=prefix)
            print(f"pretrained: pos_embed resampled from a {side}x{side} grid to "
                  f"{vit.patch_embed.grid_size[0]}x{vit.patch_embed.grid_size[1]}")
    w, own_w = state.get("patch_embed.proj.weight"), getattr(vit.patch_embed.proj, "weight", None)
    if w is not None and own_w is not None and w.shape[1] != own_w.shape[1] and w.shape[2:] == own_w.shape[2:]:
        from timm.models._manipulate import adapt_input_conv

        state["patch_embed.proj.weight"] = adapt_input_conv(own_w.shape[1], w)
    return state, dropped


def _adapt_openclip(tower: "OpenCLIPImageTower", state: dict) -> tuple[dict, list[str]]:
    """Keep ``visual.*`` (the text tower is dropped); resize the position embedding [L, D]."""
    dropped = [k for k in state if not k.startswith("visual.")]
    state = {k: v for k, v in state.items() if k.startswith("visual.")}
    if tower.visual.proj is None and "visual.proj" in state:          # project=False
        dropped.append("visual.proj")
        del state["visual.proj"]
    pos = state.get("visual.positional_embedding")
    if pos is not None and pos.shape != tower.visual.positional_embedding.shape:
        from open_clip.model import resize_pos_embed

        resize_pos_embed(state, tower)                                # in place, reads tower.visual
        print(f"pretrained: visual.positional_embedding resized from {tuple(pos.shape)} to "
              f"{tuple(state['visual.positional_embedding'].shape)}")
    return state, dropped


def format_report(report: dict) -> str:
    """One line per kind of key, the first few names each."""
    lines = [f"checkpoint {report['path']}: {len(report['loaded'])} tensors loaded"]
    for kind in ("dropped", "missing", "unexpected"):
        keys = report.get(kind) or []
        if keys:
            more = f" ... (+{len(keys) - 6})" if len(keys) > 6 else ""
            lines.append(f"  {len(keys)} {kind}: {', '.join(keys[:6])}{more}")
    return "\n".join(lines)


# ---------------------------------------------------------------- open_clip image tower

class OpenCLIPImageTower(nn.Module):
    """An open_clip image tower behind timm's interface (``forward_features`` / ``forward_head``
    / ``num_features``). ``forward_features`` gives the pooled embedding [B, D] (CLIP's joint
    image-text space when ``project``, else the tower's width), so neck add-ons that need the
    token map do not apply. Gray inputs [B, 1, H, W] are repeated to RGB."""

    def __init__(self, visual: nn.Module, project: bool = True, drop_rate: float = 0.0):
        super().__init__()
        self.visual = visual
        if not project:
            self.visual.proj = None
        self.num_features = visual.output_dim if project else visual.transformer.width
        self.drop_rate = drop_rate

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)                               # [B, 3, H, W]
        return self.visual(x)                                         # [B, D]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return F.dropout(x, p=self.drop_rate, training=self.training) if self.drop_rate else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("openclip_vit_b16", takes_img_size=True)
def openclip_vit_b16(in_chans: int = 3, pretrained: bool = False, drop_rate: float = 0.0, img_size: int = 224,
                     clip_model: str = "ViT-B-16", quick_gelu: bool = False, project: bool = True,
                     layers: int | None = None, width: int | None = None, head_width: int | None = None,
                     patch_size: int | None = None, embed_dim: int | None = None, **kwargs) -> nn.Module:
    """open_clip's ViT-B/16 image tower (``clip_model`` names another open_clip config), random
    until ``model.checkpoint_path`` loads a published open_clip file. ``quick_gelu=True`` for
    OpenAI's weights (open_clip's ``ViT-B-16-quickgelu``). ``layers``, ``width``,
    ``head_width``, ``patch_size`` and ``embed_dim`` override the config's (flat options, so a
    run's metadata can rebuild it; the tests build a tiny tower this way); ``img_size`` is the
    input side."""
    if pretrained:
        raise ValueError("openclip_vit_b16: no download here; pass model.checkpoint_path=<open_clip weights file>")
    if kwargs:
        raise TypeError(f"openclip_vit_b16: unknown options {', '.join(sorted(kwargs))}")
    try:
        import open_clip
        from open_clip.model import _build_vision_tower
    except ImportError as e:
        raise ImportError("openclip_vit_b16 needs open_clip: pip install 'semifer[clip]'") from e
    cfg = open_clip.get_model_config(clip_model)
    if cfg is None:
        raise ValueError(f"openclip_vit_b16: unknown open_clip model {clip_model!r}")
    override = dict(layers=layers, width=width, head_width=head_width, patch_size=patch_size)
    vcfg = {**cfg["vision_cfg"], **{k: v for k, v in override.items() if v is not None}, "image_size": img_size}
    visual = _build_vision_tower(embed_dim or cfg["embed_dim"], vcfg, quick_gelu=quick_gelu)
    return OpenCLIPImageTower(visual, project=project, drop_rate=drop_rate)
