"""``FERClassifier`` (backbone -> neck -> pool -> linear head, returning features and logits)
and ``create_model``, which builds one from a semifer or timm model name."""
from __future__ import annotations

import logging
import os

import timm
import torch
import torch.nn as nn

from semifer.models.backbones import MODELS, list_models

_logger = logging.getLogger(__name__)


def _fixed_img_size(backbone: nn.Module) -> tuple[int, int] | None:
    # ViT-style patch embeddings with a learned position grid only accept their build size;
    # CNNs take any size, which None records.
    patch_embed = getattr(backbone, "patch_embed", None)
    if patch_embed is not None and getattr(patch_embed, "strict_img_size", False):
        return tuple(patch_embed.img_size)
    return None


class FERClassifier(nn.Module):
    """A backbone with a linear head; ``forward(x)`` returns ``(feat [B, D], logits [B, K])``.

    ``forward`` is split as ``pool(neck(forward_features(x)))`` so add-ons that work on the
    unpooled map or tokens (local attention, feature-map dropout) replace ``neck``, an identity
    by default. ``feat`` is exactly what the head sees: in training it includes the backbone's
    head dropout (``drop_rate``), as timm's ``pre_logits`` output does.

    ``backbone`` must follow timm's interface: ``forward_features``, ``forward_head(x,
    pre_logits=True)`` and ``num_features`` (or ``head_hidden_size`` where pooling projects).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, in_chans: int = 1):
        super().__init__()
        self.backbone = backbone
        self.neck = nn.Identity()
        self.num_features = getattr(backbone, "head_hidden_size", None) or backbone.num_features
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.head = nn.Linear(self.num_features, num_classes)
        # What a predictor needs to feed the model; img_size None means any size works.
        self.input_info = dict(in_chans=in_chans, img_size=_fixed_img_size(backbone))
        # Set by create_model(checkpoint_path=...): which backbone keys the file filled.
        self.checkpoint_report: dict | None = None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled backbone output: [B, C, h, w] for CNNs, [B, N, D] tokens for ViTs."""
        return self.backbone.forward_features(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone's own pooling (global average, class token, ...) -> [B, D]."""
        return self.backbone.forward_head(x, pre_logits=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.pool(self.neck(self.forward_features(x)))
        return feat, self.head(feat)


def _read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Tensors of a safetensors or torch file, unwrapped to the backbone's key names.

    Accepts a bare backbone state dict, a trainer checkpoint holding it under ``state_dict`` or
    ``model``, a DDP ``module.`` prefix, and a whole ``FERClassifier`` state dict, whose
    non-backbone keys (head, neck) are returned separately since they are not loaded."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        import argparse

        # MAE-style training checkpoints keep their argparse.Namespace ``args`` beside ``model``
        with torch.serialization.safe_globals([argparse.Namespace]):
            state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    skipped: list[str] = []
    if any(k.startswith("backbone.") for k in state):
        skipped = [k for k in state if not k.startswith("backbone.")]
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    return state, skipped


def load_backbone_checkpoint(backbone: nn.Module, path: str | os.PathLike) -> dict:
    """Load a local state dict into ``backbone`` with ``strict=False``.

    Published MAE / open_clip files are first adapted (``pretrained.adapt_state_dict``: decoder
    and text keys dropped, position embeddings resampled). Returns ``dict(path, loaded, missing,
    unexpected, dropped)`` (lists of key names) and prints it. A key
    present on both sides with different shapes raises ``ValueError`` naming it and both shapes,
    since loading around it would silently leave that layer random."""
    from semifer.models.pretrained import adapt_state_dict, format_report  # MAE / open_clip formats

    state, skipped = _read_state_dict(path)
    own = backbone.state_dict()
    if not any(k.startswith("encoder.") for k in own) and any(k.startswith("encoder.") for k in state):
        # ``semifer pretrain``'s encoder.safetensors (its keys under ``encoder.``, MAE-wrapper style)
        skipped += [k for k in state if not k.startswith("encoder.")]
        state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    state, dropped = adapt_state_dict(backbone, state)
    for key, tensor in state.items():
        if key in own and own[key].shape != tensor.shape:
            raise ValueError(f"checkpoint {os.fspath(path)!r}: {key!r} has shape {tuple(tensor.shape)} "
                             f"but the model expects {tuple(own[key].shape)}")
    if state and not any(k in own for k in state):
        # training on from random weights after a wrong file would waste the whole run
        raise ValueError(f"checkpoint {os.fspath(path)!r}: none of its {len(state)} tensors matches the "
                         f"backbone's keys (its first: {', '.join(list(state)[:3])}; the backbone's first: "
                         f"{', '.join(list(own)[:3])}); wrong model.name, or a wrong file?")
    result = backbone.load_state_dict(state, strict=False)
    report = dict(path=os.fspath(path), loaded=[k for k in state if k in own],
                  missing=list(result.missing_keys), unexpected=list(result.unexpected_keys) + skipped,
                  dropped=dropped)
    print(format_report(report))
    _logger.info("loaded %d tensors into the backbone from %s", len(report["loaded"]), report["path"])
    for kind in ("missing", "unexpected"):
        if report[kind]:
            _logger.warning("%d %s keys loading %s: %s", len(report[kind]), kind, report["path"],
                            ", ".join(report[kind][:10]) + (" ..." if len(report[kind]) > 10 else ""))
    return report


def check_model_name(name: str) -> None:
    """Raise for a name that is neither a semifer nor a timm model (builds nothing)."""
    if name in MODELS or ":" in name or timm.is_model(name):  # "hf-hub:..." / "local-dir:..." are timm's
        return
    raise ValueError(f"unknown model {name!r}: neither a semifer model ({', '.join(list_models())}) "
                     "nor a timm model; see `semifer list models` and `timm.list_models()`")


def create_model(name: str, num_classes: int, in_chans: int = 1, pretrained: bool = False,
                 checkpoint_path: str | os.PathLike | None = None, drop_rate: float = 0.0,
                 **kwargs) -> FERClassifier:
    """Build a ``FERClassifier`` from a semifer model name or any timm model name.

    ``pretrained=True`` asks timm for its published weights (network or cache); semifer's own
    backbones without published weights refuse it. ``checkpoint_path`` then loads a local
    backbone state dict (see ``load_backbone_checkpoint``); the report is kept on
    ``model.checkpoint_report``. Keyword arguments left at None are dropped, as in timm, so
    config files can leave options unset."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    check_model_name(name)
    if name in MODELS:
        backbone = MODELS.get(name)(in_chans=in_chans, pretrained=pretrained, drop_rate=drop_rate, **kwargs)
    else:
        backbone = timm.create_model(name, pretrained=pretrained, num_classes=0, in_chans=in_chans,
                                     drop_rate=drop_rate, **kwargs)
    model = FERClassifier(backbone, num_classes, in_chans=in_chans)
    if checkpoint_path is not None:
        model.checkpoint_report = load_backbone_checkpoint(model.backbone, checkpoint_path)
    return model
