"""``semifer pipeline ssfer``: SSFER's three stages in one run folder, resumable stage by stage.

    RUN/1_pretrain     MAE (or SimCLR, ``pretrain.method``) on the unlabelled faces (stage I, ``semifer pretrain``)
    RUN/2_facemix      supervised fine-tuning from the encoder with FaceMix (stage II)
    RUN/3_ema_teacher  semi-supervised fine-tuning from stage II with an EMA teacher (stage III)
    RUN/4_adapt_prior  with ``adapt: {prior: true}``: stage III's model moved to the class prior of its
                       unlabelled faces (``semifer adapt-prior``, not in the paper) and scored again

A stage whose ``summary.json`` exists is skipped; one with a checkpoint but no summary is
resumed; so re-running the same command after an interruption continues where it stopped.

A recipe has up to five sections: ``shared`` (a ``semifer train`` config applied to stages II and
III; its data size / channels / normalisation and model are mirrored into stage I so the encoder
fits the classifier), ``pretrain`` (a ``semifer pretrain`` config), ``finetune`` and ``semi`` (train
configs of stages II and III), and ``adapt`` (``prior: true`` adds the last step). Stage III starts
from stage II's whole classifier unless ``semi.model.init_head`` says false (a fresh head).
Overrides ``pretrain.K=V``, ``finetune.K=V``, ``semi.K=V`` go to one stage; any other ``K=V`` goes to ``shared`` *and* to every stage that has the key, after the
stage's recipe section, so ``train.iterations=30`` shortens all three stages (a recipe's per-stage
value once silently won). Precedence: shared recipe < stage recipe < plain K=V < stage K=V.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os

import yaml

from semifer.config import Config, ConfigError, merge, parse_override, to_dict
from semifer.io import atomic_path

STAGES = ("pretrain", "finetune", "semi")
ADAPT_KEYS = {"prior": False}   # the ``adapt`` section's keys and defaults
RUN_SETTINGS = ("amp", "channels_last", "threads", "device", "seed", "deterministic")   # shared -> stage I unless it sets them
FOLDERS = {"pretrain": "1_pretrain", "finetune": "2_facemix", "semi": "3_ema_teacher", "adapt": "4_adapt_prior"}


def _deep_update(base: dict, extra: dict) -> dict:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def load_recipe(path: str | None, data: str | None, overrides: list[str]) -> dict[str, dict]:
    """Recipe sections after overrides: {"shared": ..., "pretrain": ..., "finetune": ..., "semi": ..., "adapt": ...}."""
    recipe = {"shared": {}, "pretrain": {}, "finetune": {}, "semi": {}, "adapt": dict(ADAPT_KEYS)}
    if path:
        with open(path) as f:
            loaded = yaml.safe_load(f) or {}
        unknown = sorted(set(loaded) - set(recipe))
        if unknown:
            raise ConfigError(f"{path}: unknown section {unknown[0]!r}; expected shared, pretrain, finetune, semi, adapt")
        _deep_update(recipe, loaded)
    if data:
        _deep_update(recipe["shared"], {"data": {"train": data}})
    # command-line overrides are kept apart: stage_configs applies them after the stage sections
    recipe["cli"] = {"plain": {}, **{stage: {} for stage in STAGES}}
    for text in overrides:
        nested = parse_override(text)
        (section, body), = nested.items()
        if section in STAGES:
            _deep_update(recipe["cli"][section], body)
        elif section == "adapt":
            _deep_update(recipe["adapt"], body)
        elif section == "algorithm":  # facemix and ema_teacher take different options
            raise ConfigError(f"override {text!r}: the stages run different algorithms; give "
                              f"finetune.{text} or semi.{text}")
        else:
            _deep_update(recipe["shared"], nested)
            _deep_update(recipe["cli"]["plain"], nested)
    for key, value in (recipe["adapt"] or {}).items():
        if key not in ADAPT_KEYS:
            raise ConfigError(f"adapt.{key}: unknown key; expected one of {', '.join(ADAPT_KEYS)}")
        if not isinstance(value, bool):
            raise ConfigError(f"adapt.{key}={value!r}; expected true or false")
    return recipe


def _known(obj, tree: dict) -> dict:
    """The part of ``tree`` whose keys exist in the dataclass ``obj`` (free-form dicts take all)."""
    names = {f.name for f in dataclasses.fields(obj)}
    out = {}
    for k, v in tree.items():
        if k not in names:
            continue
        current = getattr(obj, k)
        if dataclasses.is_dataclass(current) and isinstance(v, dict):
            sub = _known(current, v)
            if sub:
                out[k] = sub
        else:
            out[k] = v
    return out


def _apply_cli(cfg, recipe: dict, stage: str, skip: tuple[str, ...] = ()) -> None:
    """Plain ``K=V`` where ``cfg`` has the key (minus ``skip``), then the stage's own overrides."""
    cli = recipe.get("cli", {})
    plain = {k: v for k, v in cli.get("plain", {}).items() if k not in skip}
    merge(cfg, _known(cfg, plain))
    merge(cfg, copy.deepcopy(cli.get(stage, {})))


def _start_from(encoder: str) -> dict:
    """Stage II's model keys for an encoder: a semifer one (run folder, .safetensors) through
    ``model.init``; a published torch file (MAE / SSFER ``{"model": ...}``, e.g. the authors'
    ``125w_base_warmup50_batch256_600.pth``, or a plain state dict) through
    ``model.checkpoint_path``, whose loader adapts those formats (``models/pretrained.py``)."""
    if encoder.endswith(".safetensors") or os.path.isdir(encoder):
        return {"init": encoder}
    return {"checkpoint_path": encoder, "init": ""}


def stage_configs(recipe: dict[str, dict], run: str, encoder: str | None = None):
    """Resolved configs of the three stages (PretrainConfig, Config, Config), each validated."""
    from semifer.ssl.pretrain import PretrainConfig

    shared = Config()
    merge(shared, recipe["shared"])
    sd, sm = shared.data, shared.model

    pre = PretrainConfig()
    merge(pre, {"out": os.path.join(run, FOLDERS["pretrain"]),
                "data": {"sources": sd.train, "size": sd.size, "channels": sd.channels, "mean": sd.mean,
                         "std": sd.std, "cache_dir": sd.cache_dir},
                # drop path is a fine-tuning regulariser: MAE pre-trains without it (models_mae)
                "model": {"name": sm.name, "options": {k: v for k, v in sm.options.items()
                                                       if k != "drop_path_rate"}},
                # the machine settings follow shared (``amp: fast`` there once left stage I in fp32)
                "train": {k: getattr(shared.train, k) for k in RUN_SETTINGS}})
    merge(pre, recipe["pretrain"])
    # model is mirrored above (without drop path); out / resume are the pipeline's
    _apply_cli(pre, recipe, "pretrain", skip=("model", "out", "resume"))
    for key in ("size", "channels", "mean", "std"):
        if getattr(pre.data, key) != getattr(sd, key):
            raise ConfigError(f"pretrain.data.{key}={getattr(pre.data, key)} differs from data.{key}="
                              f"{getattr(sd, key)}: the encoder must see inputs as the classifier does")
    if pre.model.name != sm.name:
        raise ConfigError(f"pretrain.model.name={pre.model.name!r} differs from model.name={sm.name!r}")

    encoder = encoder or os.path.join(pre.out, "encoder.safetensors")
    finetune = Config()
    merge(finetune, copy.deepcopy(recipe["shared"]))
    merge(finetune, {"algorithm": {"name": "facemix"}})
    merge(finetune, recipe["finetune"])
    _apply_cli(finetune, recipe, "finetune")
    merge(finetune, {"out": os.path.join(run, FOLDERS["finetune"]), "model": _start_from(encoder)})

    semi = Config()
    merge(semi, copy.deepcopy(recipe["shared"]))
    merge(semi, {"algorithm": {"name": "ema_teacher"}})
    merge(semi, recipe["semi"])
    _apply_cli(semi, recipe, "semi")
    said = [recipe["semi"], recipe.get("cli", {}).get("semi", {})]   # an explicit init_head wins
    head = [s["model"]["init_head"] for s in said if "init_head" in (s.get("model") or {})]
    merge(semi, {"out": os.path.join(run, FOLDERS["semi"]),
                 "model": {"init": finetune.out, "init_head": head[-1] if head else True}})
    return pre, finetune, semi


def adapt_stage(semi, out: str) -> dict:
    """Stage III's model moved to the class prior of its unlabelled training faces, then its test
    split scored again with the run's test-time views -> the metrics.

    The prior is what ``semifer adapt-prior`` estimates (EM, ``engine/prior.py``) against the
    model's mean prediction on its labelled faces, and it is stored beside stage III's weights, so
    ``semifer eval`` / ``predict`` / ``export`` of that run use it too. ``out`` is laid out as a
    training run's final test (summary.json, test_predictions.csv), so ``semifer compare
    RUN/3_ema_teacher RUN/4_adapt_prior`` pairs the two."""
    import time

    from semifer.data.prepare import prepare
    from semifer.engine.evaluate import predict_probs, write_eval
    from semifer.engine.prior import adapt_prior
    from semifer.models.io import load_model, resolve_device

    t0 = time.time()
    data = prepare(semi.data)
    if len(data.test_images) == 0:
        raise ConfigError("adapt.prior: stage III's data has no test split to score (data.test or data.test_split)")
    target = data.unlabelled if len(data.unlabelled) else slice(None)   # all training faces when none is unlabelled
    device = resolve_device(semi.train.device)
    stored = adapt_prior(semi.out, data.train_images[target], device=device,
                         source_images=data.train_images[data.labelled],
                         info={"data": semi.data.train, "split": "train (unlabelled)"})
    model, meta = load_model(semi.out, device=device)   # with the prior just stored
    probs = predict_probs(model, data.test_images, device, meta["mean"], meta["std"],
                          flip=semi.train.eval_flip, shift=semi.train.eval_shift)
    metrics = write_eval(out, probs, data.test_labels, data.classes, name="test", ids=data.test_ids,
                         extra={"run": semi.out, "prior": stored["prior"], "train_prior": stored["train_prior"],
                                "test_time": {"flip": semi.train.eval_flip, "shift": semi.train.eval_shift}})
    with open(os.path.join(semi.out, "summary.json")) as f:
        labels_used = json.load(f).get("labels_used")
    with atomic_path(os.path.join(out, "summary.json")) as tmp, open(tmp, "w") as f:
        json.dump({"algorithm": "adapt_prior", "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
                   "labels_used": labels_used, "wall_s": time.time() - t0, "prior": stored["prior"],
                   "run": semi.out}, f, indent=2)
    return metrics


def _state(folder: str) -> str:
    if os.path.exists(os.path.join(folder, "summary.json")):
        return "done"
    return "resume" if os.path.exists(os.path.join(folder, "ckpt", "last_state.pt")) else "new"


def iterations_note(folder: str, iterations: int) -> str | None:
    """A line when ``folder``'s recorded ``train.iterations`` differs from ``iterations``."""
    try:
        with open(os.path.join(folder, "config.yaml")) as f:
            was = (yaml.safe_load(f) or {}).get("train", {}).get("iterations")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    if was is None or was == iterations:
        return None
    if os.path.exists(os.path.join(folder, "summary.json")):
        return (f"{folder} finished with train.iterations={was}; the {iterations} asked now apply only "
                f"to a new --out")
    return f"{folder} started with train.iterations={was}; it now continues to {iterations}"


def run_ssfer(recipe: dict[str, dict], run: str, encoder: str | None = None) -> list[dict]:
    """Run (or skip / resume) the stages; print and write ``RUN/summary.json``."""
    from semifer.engine.distributed import launch_rank, one_process_group
    from semifer.engine.train import train
    from semifer.ssl.pretrain import pretrain

    pre, finetune, semi = stage_configs(recipe, run, encoder)
    adapt_out = os.path.join(run, FOLDERS["adapt"]) if recipe.get("adapt", {}).get("prior") else None
    # Under torchrun every rank runs stages I-III together (each joins the process group); the
    # rest (stage IV's few minutes of inference, the files and the table) is rank 0's alone.
    main = launch_rank() == 0
    say = print if main else (lambda *a, **k: None)
    os.makedirs(run, exist_ok=True)
    if main:
        with open(os.path.join(run, "pipeline.yaml"), "w") as f:
            yaml.safe_dump({"pretrain": to_dict(pre) if not encoder else {"encoder": encoder},
                            "finetune": to_dict(finetune), "semi": to_dict(semi),
                            "adapt": {"prior": bool(adapt_out)}}, f, sort_keys=False)

    jobs = ([] if encoder else [("I", "pretrain", pre, pretrain)]) + [
        ("II", "finetune", finetune, train), ("III", "semi", semi, train)]
    with one_process_group():  # under torchrun, one group for stages I-III
        for roman, _, cfg, fn in jobs:
            state = _state(cfg.out)
            note = iterations_note(cfg.out, cfg.train.iterations) if state != "new" else None
            if note:
                say(f"stage {roman}: {note}")
            if state == "done":
                say(f"stage {roman}: {cfg.out} is finished; skipped")
                continue
            say(f"stage {roman}: {'resuming' if state == 'resume' else 'starting'} {cfg.out}")
            cfg.resume = state == "resume"
            result = fn(cfg)
            if result.get("interrupted"):
                raise KeyboardInterrupt
    if not main:
        return []
    if adapt_out:
        if _state(adapt_out) == "done":
            print(f"stage IV: {adapt_out} is finished; skipped")
        else:
            print(f"stage IV: the class prior of stage III's unlabelled faces -> {adapt_out}")
            adapt_stage(semi, adapt_out)

    rows = []
    if encoder:
        rows.append({"stage": "I", "what": f"encoder {encoder}", "run": ""})
    stages = ([] if encoder else [("I", pre.out)]) + [("II", finetune.out), ("III", semi.out)] + \
        ([("IV", adapt_out)] if adapt_out else [])
    for roman, out in stages:
        with open(os.path.join(out, "summary.json")) as f:
            s = json.load(f)
        if roman == "I":
            rows.append({"stage": roman, "what": f"{pre.method} {s['model']}", "run": out,
                         "final_loss": s["final_loss"], "minutes": s["wall_s"] / 60})
        else:
            rows.append({"stage": roman, "what": s["algorithm"], "run": out, "accuracy": s["accuracy"],
                         "macro_f1": s["macro_f1"]} | ({"minutes": s["wall_s"] / 60} if "wall_s" in s else {}))
    with open(os.path.join(run, "summary.json"), "w") as f:
        json.dump(rows, f, indent=2)
    print(f"\n{'stage':<7}{'what':<22}{'accuracy':>10}{'macro-F1':>10}{'minutes':>9}")
    for r in rows:
        acc = f"{r['accuracy']:.4f}" if "accuracy" in r else (f"loss {r['final_loss']:.3f}" if "final_loss" in r else "-")
        f1 = f"{r['macro_f1']:.4f}" if "macro_f1" in r else "-"
        mins = f"{r['minutes']:.1f}" if "minutes" in r else "-"
        print(f"{r['stage']:<7}{r['what'][:21]:<22}{acc:>10}{f1:>10}{mins:>9}")
    return rows
