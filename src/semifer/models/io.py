"""Models rebuilt from a configuration or from saved weights, and the device they run on.

Everything a later user of the weights needs (label names, input size, channels, normalisation)
travels in the safetensors metadata, so evaluation and prediction prepare inputs exactly as
training did.

That metadata is untrusted: anyone can write a .safetensors file. Loading one never downloads
and never reads another file (``trusted_spec``): only registered semifer models and plain timm
architecture names are built, always with ``pretrained=False``, and model options that could
name a file, URL or hub (``pretrained_cfg_overlay={"file": ...}``) are dropped.
"""
from __future__ import annotations

import os
import re
import sys

import timm
import torch

from semifer import checkpoint as ckpt
from semifer.models.addons import attach_addons, split_addon_options
from semifer.models.backbones import MODELS, takes_img_size
from semifer.models.classifier import create_model


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: the GPU when there is one, else the CPU; any other name as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_kwargs(mc, size: int) -> dict:
    """The model options of ``mc`` (a ``ModelConfig``), with ``img_size`` set to the data size
    for models built for one input size (``takes_img_size``)."""
    kw = dict(mc.options)
    if takes_img_size(mc.name) and "img_size" not in kw:
        kw["img_size"] = size
    return kw


def _create_with_addons(name: str, options: dict, **kw) -> torch.nn.Module:
    """``create_model`` with ``options`` minus the neck add-on keys (local_attention, feature_dropout,
    dropout_mode, addon_grid, attention_reduction), which then set ``model.neck`` (models/addons.py)."""
    addons, options = split_addon_options(options)
    return attach_addons(create_model(name, **kw, **options), **addons)


# timm options that load weights or configs from somewhere: a file, a URL, a hub, a cache
_SOURCE_OPTIONS = {"pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir",
                   "pretrained_strict", "hf_hub_id", "url", "file"}
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?")  # arch[.tag]: no "hf-hub:", "local-dir:", "/"


def _names_a_source(value) -> bool:
    """A mapping (timm configs carry files and URLs in them), or a string that could be a
    path or URL; lists of numbers (``img_size``, ``addon_grid``) are fine."""
    if isinstance(value, dict):
        return True
    if isinstance(value, (list, tuple)):
        return any(_names_a_source(v) for v in value)
    return isinstance(value, str) and any(c in value for c in "/\\:~")


def trusted_spec(file: str, name, options) -> tuple[str, dict]:
    """(model name, options) from a checkpoint's metadata, made safe to build: see the module
    notes. Raises naming the file for a model name that is not plainly a known architecture."""
    if not (isinstance(name, str) and _PLAIN_NAME.fullmatch(name) and (name in MODELS or timm.is_model(name))):
        raise ckpt.CheckpointError(f"{file}: metadata model={name!r} is not a registered semifer model or a "
                                   "plain timm architecture name; refusing to build it (a hub or path "
                                   "source would download or read other files)")
    if not isinstance(options, dict):
        raise ckpt.CheckpointError(f"{file}: metadata model_options={options!r}; expected a mapping")
    dropped = sorted(k for k, v in options.items() if k in _SOURCE_OPTIONS or _names_a_source(v))
    if dropped:
        print(f"note: {file}: ignored model options {dropped} from its metadata: they could name a file, "
              "URL or hub, and a checkpoint's metadata is not trusted", file=sys.stderr)
    return name, {k: v for k, v in options.items() if k not in dropped}


def init_from(model: torch.nn.Module, path: str, head: bool = False) -> dict:
    """Load an encoder (a semifer run, a ``semifer pretrain`` output, or a plain state dict) into
    ``model.backbone``. The classification head stays new. Returns the key report; a key present
    in both with a different shape is an error."""
    if path.endswith((".pt", ".pth")):
        if not os.path.isfile(path):
            raise ckpt.CheckpointError(f"model.init={path}: no such file")
        try:
            weights = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a pickle that is more than tensors (UnpicklingError), or not a torch file
            raise ckpt.CheckpointError(f"model.init={path}: expected a state dict of tensors (torch.save, loaded "
                                       f"with weights_only=True), got {type(e).__name__}: "
                                       f"{str(e).splitlines()[0] if str(e) else ''}") from None
        if not isinstance(weights, dict) or not all(torch.is_tensor(v) for v in weights.values()):
            raise ckpt.CheckpointError(f"model.init={path}: expected a state dict of tensors, got {type(weights).__name__}")
    else:
        weights, _ = ckpt.load_weights(ckpt.find_weights(path, "last"))
    if head:  # warm start: the classifier too, which must cover the same classes
        for prefix in ("ema.head.", "model.head."):
            sub = ckpt.split_prefix(weights, prefix)
            if sub:
                if sub["weight"].shape != model.head.weight.shape:
                    raise ckpt.CheckpointError(f"{path}: head has shape {tuple(sub['weight'].shape)}, "
                                               f"the model needs {tuple(model.head.weight.shape)}")
                model.head.load_state_dict(sub)
                break
    for prefix in ("ema.backbone.", "model.backbone.", "encoder.", "backbone."):
        sub = ckpt.split_prefix(weights, prefix)
        if sub:
            weights = sub
            break
    own = model.backbone.state_dict()
    for k, v in weights.items():
        if k in own and own[k].shape != v.shape:
            raise ckpt.CheckpointError(f"{path}: key {k!r} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}")
    result = model.backbone.load_state_dict(weights, strict=False)
    report = {"loaded": sorted(set(weights) & set(own)), "missing": sorted(result.missing_keys),
              "unexpected": sorted(result.unexpected_keys)}
    print(f"init from {path}: {len(report['loaded'])} backbone tensors loaded, {len(report['missing'])} missing "
          f"{report['missing'][:5]}, {len(report['unexpected'])} unexpected {report['unexpected'][:5]}")
    if not report["loaded"]:
        raise ckpt.CheckpointError(f"{path}: no tensor matches the backbone of the model; wrong file?")
    return report


def build_model(mc, num_classes: int, in_chans: int, size: int) -> torch.nn.Module:
    """A classifier from a run's ``ModelConfig`` (``mc``), started from ``mc.init`` when set."""
    model = _create_with_addons(mc.name, model_kwargs(mc, size), num_classes=num_classes, in_chans=in_chans,
                                pretrained=mc.pretrained, checkpoint_path=mc.checkpoint_path or None,
                                drop_rate=mc.drop_rate)
    if mc.init:
        init_from(model, mc.init, head=mc.init_head)
    return model


def temperature_path(weights_file: str) -> str:
    """Where ``semifer calibrate`` stores the fitted temperature of a weights file."""
    return weights_file.removesuffix(".safetensors") + ".temperature.json"


def prior_path(weights_file: str) -> str:
    """Where ``semifer adapt-prior`` stores the target class prior of a weights file."""
    return weights_file.removesuffix(".safetensors") + ".prior.json"


def weights_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """Short hash of the head, so a temperature fitted before training went on is not applied."""
    import hashlib

    return hashlib.sha1(b"".join(state[k].float().cpu().numpy().tobytes() for k in sorted(state)
                                 if k.startswith("head."))).hexdigest()[:16]


def _stored_fit(path: str, which: str, state: dict, command: str) -> dict | None:
    """The JSON a command stored beside the weights (``semifer calibrate``, ``adapt-prior``), or
    None when there is none or it was fitted on other weights (then with a note)."""
    import json

    if not os.path.exists(path):
        return None
    with open(path) as f:
        fit = json.load(f)
    if fit.get("weights") != which or fit.get("fingerprint") != weights_fingerprint(state):
        print(f"note: {path} was fitted on other weights ({fit.get('weights')}, before the last save?); "
              f"not applied. Run `semifer {command}` again", file=sys.stderr)
        return None
    return fit


def _apply_temperature(model: torch.nn.Module, file: str, which: str, state: dict, meta: dict) -> None:
    """Fold a fitted temperature T into the head (W / T, b / T, so logits / T everywhere: eval,
    Predictor, ONNX export)."""
    cal = _stored_fit(temperature_path(file), which, state, "calibrate")
    if cal is None:
        return
    t = float(cal["temperature"])
    with torch.no_grad():
        model.head.weight.div_(t)
        if model.head.bias is not None:
            model.head.bias.div_(t)
    meta["temperature"] = t
    print(f"note: probabilities calibrated with temperature {t:.3f} from {temperature_path(file)}", file=sys.stderr)


def _apply_prior(model: torch.nn.Module, file: str, which: str, state: dict, meta: dict) -> None:
    """Add log(pi_t / pi_s) to the head's bias (analysis/prior.py: the model then predicts under
    the target prior pi_t)."""
    path = prior_path(file)
    est = _stored_fit(path, which, state, "adapt-prior")
    if est is None:
        return
    if est.get("classes") != list(meta["classes"]) or getattr(model.head, "bias", None) is None:
        raise ckpt.CheckpointError(f"{path}: its classes {est.get('classes')} are not the model's "
                                   f"{list(meta['classes'])}, or the model's head has no bias to shift")
    with torch.no_grad():
        # softmax(z + log pi_t - log pi_s) = p_s(y|x) pi_t / pi_s renormalised; the floor keeps a
        # class that EM drove to 0 predictable
        t, s = (torch.tensor(est[k], dtype=torch.float64).clamp_min(1e-6) for k in ("prior", "train_prior"))
        model.head.bias.add_(((t / t.sum()).log() - (s / s.sum()).log()).to(model.head.bias.dtype))
    meta["target_prior"] = est["prior"]
    print(f"note: predictions adapted to the class prior estimated in {path}", file=sys.stderr)


def load_model(path: str, weights: str = "auto", device: str | torch.device = "cpu",
               calibrated: bool = True, adapted: bool = True) -> tuple[torch.nn.Module, dict]:
    """Rebuild a trained model from a run folder or .safetensors file -> (model in eval mode, meta).

    ``weights``: "auto" (what the run evaluated: EMA or raw), "ema" or "model". ``calibrated``:
    apply the temperature ``semifer calibrate`` stored beside the weights, if any
    (``meta["temperature"]`` then holds it). ``adapted``: shift the head to the class prior
    ``semifer adapt-prior`` stored beside the weights, if any (``meta["target_prior"]``)."""
    file = ckpt.find_weights(path, "last")
    tensors, meta = ckpt.load_weights(file)
    if "classes" not in meta:
        raise ckpt.CheckpointError(f"{file} has no semifer metadata; is it a semifer training checkpoint?")
    which = meta.get("eval_weights", "model") if weights == "auto" else weights
    state = ckpt.split_prefix(tensors, f"{which}.")
    if not state:
        raise ckpt.CheckpointError(f"{file} holds no {which!r} weights")
    name, options = trusted_spec(file, meta.get("model"), meta.get("model_options", {}))
    model = _create_with_addons(name, options, num_classes=len(meta["classes"]), in_chans=meta["in_chans"],
                                pretrained=False, checkpoint_path=None)
    model.load_state_dict(state)
    meta["fingerprint"] = weights_fingerprint(state)   # of the weights as saved: what stored fits check
    if calibrated:
        _apply_temperature(model, file, which, state, meta)
    if adapted:  # after T: Saerens' correction acts on calibrated probabilities
        _apply_prior(model, file, which, state, meta)
    return model.to(device).eval(), meta
