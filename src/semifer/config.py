"""Typed configuration: dataclass defaults, then a YAML recipe, then ``key=value`` overrides.

Unknown keys are errors that name the key (a silently ignored typo can disable a feature).
Algorithm and model options are free-form mappings here and are checked against the
algorithm's / model's keyword arguments when those are built.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class DataConfig:
    train: str = "synthetic:"          # dataset spec whose train split is used, e.g. fer2013:/data/fer2013
    test: str = ""                     # spec evaluated after training; "" = the train dataset's test split
    test_split: str = "test"           # split name read from ``test`` (fer2013 folders: "val")
    size: int = 48                     # images are decoded once to size x size
    channels: int = 0                  # 0 = keep the dataset's (1 for gray data), 1 or 3 to force
    protocol: str = "labels_per_class"  # labels_per_class | ratio | budget | all | kfold
    labels_per_class: int = 100        # protocol labels_per_class
    ratio: float = 0.1                 # protocol ratio: max(1, round(ratio * n_c)) per class
    budget: int = 1000                 # protocol budget: total labels spread over the classes
    folds: int = 5                     # protocol kfold: number of folds
    fold: int = 0                      # protocol kfold: which fold is held out as the test set
    kfold_labels: str = "all"          # protocol kfold: labels kept in the training folds (all |
                                       # labels_per_class | ratio | budget); with ``unlabelled`` rest
                                       # the other training-fold images are the unlabelled set
    unlabelled: str = "rest"           # rest (train minus labelled) | all (whole train split) | none
    label_noise: float = 0.0           # share of labelled items whose label is flipped (seeded)
    val_fraction: float = 0.0          # > 0: a validation split of round(val_fraction * n_c) train items per
                                       # class (seeded by ``seed``), neither labelled nor unlabelled. 0: the
                                       # train dataset's own val split when it has one that is not the test
                                       # split (synthetic; FER2013/FERPlus PublicTest unless test_split=val; not
                                       # RAF-DB, nor SFEW/AffectNet whose only val is their test), else none.
                                       # Periodic evaluation and ckpt/best use the val split, and the test split
                                       # is scored once, at the end. Without one, periodic evaluation monitors
                                       # the test split (logged as test) but chooses nothing: best = last weights.
    seed: int = 0                      # seed of the label protocol (independent of train.seed)
    sampler: str = "random"            # labelled sampler: random | balanced (class-balanced batches)
    weak: str = "padcrop"              # weak view: padcrop | rrc
    strong: str = "custom"             # strong view preset: custom (strong_ops, strong_magnitude, Cutout 0.5) |
                                       # fixmatch (full-range magnitudes, Cutout side U(0, 0.5)) | timm_m9_mstd05
    strong_ops: int = 2                # RandAugment ops per strong view (strong=custom)
    strong_magnitude: int = 10         # RandAugment magnitude (0-30), drawn uniformly in [0, it] (strong=custom)
    mean: float | list[float] = 0.5    # normalisation after /255: one value or one per channel
    std: float | list[float] = 0.5     # (SSFER's faces: mean [0.588, 0.459, 0.402], std [0.228, 0.202, 0.190])
    cache_dir: str = ".cache/semifer"  # decoded uint8 arrays, keyed by dataset, split, size, channels
    strict: bool = False               # True: a corrupt image stops the run instead of being skipped


@dataclass
class ModelConfig:
    name: str = "resnet18_small"       # any registered model or timm name
    pretrained: bool = False           # timm pretrained weights (needs them downloadable or cached)
    checkpoint_path: str = ""          # local backbone weights (safetensors / torch state dict)
    init: str = ""                     # a semifer encoder/run checkpoint to start from (head is new)
    init_head: bool = False            # also take the head from ``init`` (warm start on the same classes)
    drop_rate: float = 0.0
    options: dict = field(default_factory=dict)  # extra keyword arguments for the model


@dataclass
class TrainConfig:
    iterations: int = 2000             # optimiser steps (global: every rank takes each step)
    epochs: float = 0.0                # > 0: iterations = ceil(epochs * labelled / global batch) instead
    epoch_over: str = "labelled"       # labelled | unlabelled (one epoch = the unlabelled set at batch x uratio)
    few_label_epochs: float = 0.0      # > 0 (with epochs): these epochs instead when fewer than few_labels
    few_labels: int = 500              # are labelled (SSFER stage II: 100 epochs, 1000 below 500 labels)
    warmup_epochs: float = 0.0         # > 0 (with epochs): warmup = these epochs, converted as epochs are
    batch_size: int = 64               # labelled images per step and per process
    uratio: int = 3                    # unlabelled images per labelled image (semi-supervised algorithms)
    optimizer: str = "sgd"             # sgd | adamw
    lr: float = 0.03
    momentum: float = 0.9              # sgd momentum (adamw: beta1)
    beta2: float = 0.999               # adamw
    nesterov: bool = True
    weight_decay: float = 5e-4
    layer_decay: float = 0.0           # > 0: layer-wise lr decay, lr x this^(depth - layer) (ViTs; MAE
                                       # fine-tuning: 0.75); 0 = one lr for every layer
    warmup: int = 0                    # linear warm-up iterations
    warmup_lr: float = 0.0             # lr at the first warm-up step (SSFER: 5e-5); 0 = linear from 0
    min_lr: float = 0.0                # cosine floor
    schedule: str = "cosine"           # cosine (warm-up, half cosine to min_lr) | fixmatch (lr cos(7 pi k / 16 K))
    clip_grad: float = 0.0             # max grad norm; 0 disables
    amp: str = "auto"                  # auto (bf16 on CUDA, none on CPU) | fast (bf16 on CUDA and on CPUs
                                       # with native bf16: AVX512-BF16 / AMX) | bf16 | fp16 | none
    channels_last: bool = False        # NHWC weights and activations: with bf16 on CPU, 1.5x the images/s
                                       # of NCHW for the CNNs (benchmarks/throughput.py)
    ema: float = 0.999                 # EMA of weights (0 disables); evaluated when eval_ema
    eval_ema: bool = True
    eval_flip: bool = False            # evaluate on the mean of each image's and its mirror's probabilities
    eval_shift: float = 0.0            # the final evaluation also averages 8 copies moved by this share of
                                       # the side (0.08: 4 px at 48), reflect-padded: 9x the views, so the
                                       # periodic evaluations skip it; 0 = off
    eval_every: int = 500
    ckpt_every: int = 500
    log_every: int = 50
    eval_batch_size: int = 256
    seed: int = 0
    deterministic: bool = False        # torch.use_deterministic_algorithms, for exact resume tests
    threads: int = 0                   # torch CPU threads; 0 = torch default
    device: str = "auto"               # auto | cpu | cuda


@dataclass
class Config:
    out: str = "runs/default"          # run folder
    resume: bool = False               # continue the run in ``out`` from its last checkpoint
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    algorithm: dict = field(default_factory=lambda: {"name": "supervised"})


class ConfigError(ValueError):
    pass


def _coerce(value, tp, key: str):
    """Cast a YAML/CLI value to the field's declared type, or raise naming the key."""
    if isinstance(tp, str):
        tp = eval(tp, vars(typing), {})  # annotations are strings under `from __future__`
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        for arg in args[:-1]:                # the first type that takes the value
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        return _coerce(value, args[-1], key)
    if origin is list:                       # list[float]: a YAML / CLI list of numbers
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} expects a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, key) for v in value]
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} expects a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
    elif tp is int and not isinstance(value, bool):
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return int(value)
    elif tp is float and not isinstance(value, bool):
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    elif tp is str:
        return "" if value is None else str(value)
    raise ConfigError(f"config key {key!r} expects {tp.__name__}, got {value!r}")


def merge(obj, updates: dict, prefix: str = ""):
    """Merge the nested mapping ``updates`` into the config dataclass ``obj`` in place (recipes,
    overrides, the pipeline's stage sections); an unknown key or a value of the wrong type raises
    ``ConfigError`` naming the key."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in updates.items():
        path = f"{prefix}{key}"
        if key not in fields:
            known = ", ".join(f"{prefix}{k}" for k in fields)
            raise ConfigError(f"unknown config key {path!r}; known keys here: {known}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {path!r} is a section; give {path}.<key>=value")
            merge(current, value, prefix=f"{path}.")
        elif isinstance(current, dict):  # free-form options: merged key by key
            current.update(_coerce(value, dict, path))
        else:
            setattr(obj, key, _coerce(value, fields[key].type, path))


def parse_override(text: str) -> dict:
    """``"train.lr=0.1"`` -> ``{"train": {"lr": 0.1}}`` (the value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, _, raw = text.partition("=")
    value = yaml.safe_load(raw) if raw.strip() else ""
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def command_overrides(args, data_key: str) -> list[str]:
    """A command's ``--out`` and ``--data`` as the ``out=`` / ``<data_key>=`` overrides they stand
    for, placed before the user's ``key=value`` arguments (which therefore win)."""
    head = [f"out={args.out}"] if args.out else []
    head += [f"{data_key}={args.data}"] if args.data else []
    return head + list(args.overrides)


def load_config(path: str | None = None, overrides: list[str] = (), root: type = Config):
    """Defaults <- YAML recipe <- overrides, in that order. ``root``: the top-level dataclass
    (``Config`` for training; other commands pass their own, e.g. pre-training's)."""
    cfg = root()
    if path:
        with open(path) as f:
            recipe = yaml.safe_load(f) or {}
        if not isinstance(recipe, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of sections")
        try:
            merge(cfg, recipe)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    from_recipe = dict(getattr(cfg, "algorithm", None) or {})
    for text in overrides:
        merge(cfg, parse_override(text))
    _drop_other_algorithms_options(cfg, from_recipe, overrides)
    _check_intervals(cfg)
    return cfg


def _check_intervals(cfg) -> None:
    """Step intervals are divisors in the loop: 0 would fail only when training reaches them."""
    train = getattr(cfg, "train", None)
    for name in ("eval_every", "ckpt_every", "log_every"):
        value = getattr(train, name, None)
        if value is not None and value < 1:
            raise ConfigError(f"train.{name}={value}; expected an interval of at least 1 step "
                              f"(the last step is always logged, evaluated and saved)")
    shift = getattr(train, "eval_shift", 0.0)
    if not 0 <= shift < 0.5:  # reaching the far edge would reflect the face onto itself
        raise ConfigError(f"train.eval_shift={shift}; expected a share of the image side in [0, 0.5), "
                          f"e.g. 0.08 (4 px at 48); 0 turns the test-time shifts off")


def _drop_other_algorithms_options(cfg, from_recipe: dict, overrides) -> None:
    """A recipe's algorithm options belong to the recipe's algorithm. When an override switches
    ``algorithm.name`` (e.g. the supervised baseline of a semi-supervised recipe), the recipe's
    options are dropped, saying which; options given as overrides are kept and checked."""
    algo = getattr(cfg, "algorithm", None)
    if not isinstance(algo, dict) or algo.get("name") == from_recipe.get("name"):
        return
    given = {k for text in overrides for k in parse_override(text).get("algorithm", {})}
    dropped = sorted(k for k in from_recipe if k != "name" and k not in given)
    for k in dropped:
        del algo[k]
    if dropped:
        print(f"note: algorithm.name={algo.get('name')} replaces the recipe's {from_recipe.get('name')}; "
              f"its options {', '.join(dropped)} are dropped")


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
