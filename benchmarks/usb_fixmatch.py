"""FixMatch training throughput: USB (Microsoft's Unified SSL Benchmark, ``semilearn``) beside semifer.

    PYTHONPATH=src python benchmarks/usb_fixmatch.py [--threads 1] [--batch 32] [--uratio 2] \
        [--size 48] [--steps 20] [--repeats 5] [--warmup 3]

Prints one JSON object: images/s of each framework's FixMatch training step and the ratio
semifer / USB. Images per step are counted as semifer's logs count them: labelled + unlabelled x
views, i.e. batch + 2 x batch x uratio (32 + 2 x 64 = 160 at the defaults). Each rate is the best
of ``--repeats`` timed blocks of ``--steps`` steps after ``--warmup`` steps; the two frameworks'
blocks alternate, so a machine that is busy part of the time slows both alike. ``images_per_s``
is wall-clock (the number to quote, on an idle machine); ``images_per_cpu_s`` divides by the
process's CPU time instead (best block too), which with one thread and ``num_workers=0`` stays
close to the idle wall-clock rate when other jobs share the cores (a sanity check, not a substitute).

What is compared (same for both): semifer's ``cnn_small`` backbone
(``semifer.models.create_model("cnn_small", 7, in_chans=1)``; USB gets it through its
``net_builder`` hook, wrapped to return USB's ``{"logits", "feat"}``), 7 classes, random uint8
48x48 grayscale images, ``--batch`` labelled + ``--batch x --uratio`` unlabelled per step, one
concatenated forward of x / u_w / u_s (USB ``use_cat=True``), fp32, SGD (Nesterov, momentum 0.9,
wd 5e-4, lr 0.03, per-step cosine schedule), EMA 0.999 of the weights after every step, tau 0.95,
``torch.set_num_threads(--threads)``, CPU.

- USB: a USB user's path with custom data (its "custom dataset" example): ``get_config``,
  ``get_algorithm`` (its FixMatch), ``BasicDataset`` + ``get_data_loader`` with ``num_workers=0``
  (so its per-image PIL augmentation runs in the timed process), and per step the body of
  ``semilearn.lighting.Trainer.fit``'s loop: next batch from ``zip(lb_loader, ulb_loader)``,
  ``before_train_step`` hooks, ``train_step(**process_batch(...))``, ``after_train_step`` hooks
  (backward + optimiser + scheduler in ``ParamUpdateHook``, EMA in ``EMAHook``; evaluation,
  checkpoint and logging hooks are pushed out of range). Transforms are USB's CIFAR recipe at 48 px:
  weak = Resize, RandomCrop(48, padding 6, reflect), flip, ToTensor, Normalize; strong = the same
  plus ``RandAugment(3, 5)`` (3 ops, full-range random magnitudes, Cutout side U(0, 0.5)).
- semifer: the engine's path (``semifer.engine.train``): ``BatchStream`` indices, ``_views`` (batched
  weak / strong views of uint8 arrays), ``algorithm.step`` of ``create_algorithm("fixmatch", 7)``
  under the engine's autocast (none on CPU), the non-finite-loss check, ``backward_step``, timm
  ``ModelEmaV3`` update, ``algorithm.sync`` and the engine's per-step diagnostics. Strong view by
  default ``data.strong=custom strong_ops=3 strong_magnitude=30`` (3 ops, full-range random
  magnitudes like USB's; Cutout side always 0.5 rather than U(0, 0.5)); ``--semifer-strong fixmatch``
  gives semifer's FixMatch-paper preset (2 ops) instead.

Patches that make USB run on a CPU, inside this process only (before semilearn is imported):
- ``torchaudio``, ``wandb`` and ``aim`` are replaced by empty stub modules in ``sys.modules``
  (USB imports them for its audio datasets and loggers, none of which run here);
- ``torch.Tensor.cuda`` and ``torch.nn.Module.cuda`` return ``self``; ``torch.cuda.Event`` is a
  no-op timer, ``torch.cuda.synchronize`` and ``torch.cuda.set_device`` do nothing (USB's timer
  hooks and Trainer call them);
- USB's RandAugment works on PIL RGB images (its Cutout fills with an RGB colour), so the
  grayscale image is converted to RGB right before it and back to ``L`` right after it.

semilearn is optional and not a dependency of semifer. To install it (its declared dependencies
include torchaudio, wandb and aim, which this script stubs):

    .venv/bin/pip install --no-deps semilearn ruamel.yaml progress
"""
from __future__ import annotations

import argparse
import importlib.machinery
import json
import logging
import os
import platform
import sys
import tempfile
import time
import types
import warnings

import numpy as np
import torch
import torch.nn as nn

from semifer.algorithms import create_algorithm
from semifer.config import Config
from semifer.data.prepare import TrainView
from semifer.data.sampler import BatchStream
from semifer.engine.diagnostics import step_scores
from semifer.engine.evaluate import autocast
from semifer.engine.optim import backward_step
from semifer.engine.run import make_optimizer, param_groups
from semifer.engine.schedule import warmup_cosine
from semifer.engine.train import make_batch
from semifer.models import create_model

NUM_CLASSES = 7
STUBBED = ("torchaudio", "torchaudio.transforms", "torchaudio.functional", "wandb", "aim", "aim.sdk",
           "aim.sdk.run")
INSTALL = ".venv/bin/pip install --no-deps semilearn ruamel.yaml progress"


# ---------------------------------------------------------------- USB on a CPU


class _Anything:
    """Stands in for any attribute of a stubbed module: callable, subscriptable, inert."""

    def __init__(self, *a, **k):
        pass

    def __call__(self, *a, **k):
        return _Anything()

    def __getattr__(self, name):
        return _Anything()


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything


def _stub_modules() -> None:
    for name in STUBBED:
        if name in sys.modules:
            continue
        mod = _StubModule(name)
        mod.__path__ = []
        # A spec, so importlib.util.find_spec works (transformers probes optional packages with
        # it); no __version__ and no __file__, so transformers still reports torchaudio absent.
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        sys.modules[name] = mod


class _NoEvent:
    """``torch.cuda.Event`` stand-in: records nothing, every interval is 0."""

    def __init__(self, *a, **k):
        pass

    def record(self, *a, **k):
        pass

    def synchronize(self):
        pass

    def elapsed_time(self, other) -> float:
        return 0.0


def _patch_cuda() -> None:
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.cuda.Event = _NoEvent
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.set_device = lambda *a, **k: None


def import_semilearn():
    _stub_modules()
    _patch_cuda()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import semilearn
    except ImportError as e:
        sys.exit(f"usb_fixmatch.py needs USB's semilearn package, which could not be imported ({e}).\n"
                 f"It is optional and not a semifer dependency; install it with\n    {INSTALL}")
    return semilearn


class USBNet(nn.Module):
    """semifer's backbone behind USB's network interface: ``forward(x) -> {"logits", "feat"}``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.net = model

    def forward(self, x, only_fc: bool = False, only_feat: bool = False, **kwargs):
        if only_fc:
            return self.net.head(x)
        feat, logits = self.net(x)
        if only_feat:
            return feat
        return {"logits": logits, "feat": feat}


# ---------------------------------------------------------------- the two steps


def usb_setup(args, images: np.ndarray, labels: np.ndarray, workdir: str, total_steps: int):
    """USB's FixMatch and one training-step function, built as a USB user would with custom data."""
    import semilearn
    from semilearn.datasets.augmentation import RandAugment
    from torchvision import transforms

    config = semilearn.get_config({
        "algorithm": "fixmatch", "net": "semifer_" + args.model, "use_pretrain": False,
        "save_dir": workdir, "save_name": "usb_fixmatch", "dataset": "custom",
        "num_classes": NUM_CLASSES, "img_size": args.size, "crop_ratio": 0.875,
        "batch_size": args.batch, "uratio": args.uratio, "eval_batch_size": 256,
        # evaluation, checkpoint and logging hooks fire at these periods or at the last
        # iteration: out of the timed range
        "epoch": 1, "num_train_iter": 10 ** 9, "num_eval_iter": 10 ** 9, "num_log_iter": 10 ** 9,
        "num_warmup_iter": 0,
        "optim": "SGD", "lr": 0.03, "momentum": 0.9, "weight_decay": 5e-4, "layer_decay": 1.0,
        "ema_m": 0.999, "amp": False, "use_cat": True, "clip_grad": 0,
        "hard_label": True, "T": 0.5, "p_cutoff": 0.95, "ulb_loss_ratio": 1.0,
        "gpu": 0, "world_size": 1, "distributed": False, "num_workers": 0, "seed": 0,
    })

    def net_builder(num_classes, pretrained=False, pretrained_path=None, **kwargs):
        return USBNet(create_model(args.model, num_classes, in_chans=1))

    # a quiet logger instead of print(), so stdout holds only the JSON
    logger = logging.getLogger("usb_fixmatch")
    logger.setLevel(logging.WARNING)
    algorithm = semilearn.get_algorithm(config, net_builder, tb_log=None, logger=logger)

    crop = args.size
    pad = int(crop * (1 - config.crop_ratio))
    mean, std = [0.5], [0.5]  # one channel, as semifer's data.mean / data.std
    weak = transforms.Compose([
        transforms.Resize(crop),
        transforms.RandomCrop(crop, padding=pad, padding_mode="reflect"),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    strong = transforms.Compose([
        transforms.Resize(crop),
        transforms.RandomCrop(crop, padding=pad, padding_mode="reflect"),
        transforms.RandomHorizontalFlip(),
        transforms.Lambda(lambda im: im.convert("RGB")),   # USB's RandAugment expects RGB
        RandAugment(3, 5),
        transforms.Lambda(lambda im: im.convert("L")),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    gray = images[..., 0]  # [N, H, W] -> PIL "L" in BasicDataset
    lb_set = semilearn.BasicDataset("fixmatch", gray, labels, NUM_CLASSES, weak, is_ulb=False)
    ulb_set = semilearn.BasicDataset("fixmatch", gray, labels, NUM_CLASSES, weak, is_ulb=True,
                                     strong_transform=strong)
    lb_loader = semilearn.get_data_loader(config, lb_set, config.batch_size, num_workers=0,
                                          num_iters=total_steps, num_epochs=1)
    ulb_loader = semilearn.get_data_loader(config, ulb_set, config.batch_size * config.uratio, num_workers=0,
                                           num_iters=total_steps, num_epochs=1)

    def batches():
        while True:
            yield from zip(lb_loader, ulb_loader)

    stream = batches()
    # semilearn.lighting.Trainer.__init__ and .fit, up to the loop
    torch.cuda.set_device(config.gpu)
    algorithm.model = algorithm.model.cuda(config.gpu)
    algorithm.loader_dict = {"train_lb": lb_loader, "train_ulb": ulb_loader}
    algorithm.model.train()
    algorithm.it = 0
    algorithm.epoch = 0
    algorithm.call_hook("before_run")
    algorithm.call_hook("before_train_epoch")

    def step():
        data_lb, data_ulb = next(stream)
        algorithm.call_hook("before_train_step")
        out_dict, log_dict = algorithm.train_step(**algorithm.process_batch(**data_lb, **data_ulb))
        algorithm.out_dict, algorithm.log_dict = out_dict, log_dict
        algorithm.call_hook("after_train_step")
        algorithm.it += 1
        return log_dict["train/total_loss"]

    return step, algorithm


def semifer_setup(args, images: np.ndarray, labels: np.ndarray, total_steps: int):
    """semifer's FixMatch and one training-step function, as ``semifer.engine.train`` runs it."""
    from timm.utils import ModelEmaV3

    cfg = Config()
    tc, dc = cfg.train, cfg.data
    tc.batch_size, tc.uratio, tc.iterations = args.batch, args.uratio, total_steps
    if args.semifer_strong == "custom":
        dc.strong, dc.strong_ops, dc.strong_magnitude = "custom", 3, 30
    else:
        dc.strong = args.semifer_strong
    device = torch.device("cpu")
    amp = "none"  # the engine's amp=auto on CPU

    model = create_model(args.model, NUM_CLASSES, in_chans=1).to(device)
    algo = create_algorithm("fixmatch", NUM_CLASSES, tc.iterations, len(images))
    algo.setup(model)
    algo.to(device)
    ema = ModelEmaV3(model, decay=tc.ema, use_warmup=True)
    optimizer = make_optimizer(tc.optimizer, param_groups([model, algo], tc.weight_decay), tc.lr,
                               momentum=tc.momentum, nesterov=tc.nesterov, betas=(tc.momentum, tc.beta2))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, tc.iterations, tc.warmup, 0.0, 0.0))
    scaler = torch.amp.GradScaler(enabled=False)
    idx = np.arange(len(images))
    view = TrainView(tuple(str(c) for c in range(NUM_CLASSES)), 1, images, labels, idx, idx)  # all labelled
    lb_stream = BatchStream(idx, tc.batch_size, seed=tc.seed * 1009, labels=labels)
    ub_stream = BatchStream(idx, tc.batch_size * tc.uratio, seed=tc.seed * 1009 + 500)
    aug_gen = torch.Generator().manual_seed(tc.seed * 7 + 13)
    state = {"step": 0}
    model.train()

    def step():
        s = state["step"]
        li, ui = lb_stream.next(), ub_stream.next()
        batch = make_batch(view, li, ui, algo, aug_gen, dc, device)
        with autocast(device, amp):
            out = algo.step(model, batch, s, teacher=None)
        if not bool(torch.isfinite(out.loss.detach())):
            raise RuntimeError(f"semifer: non-finite loss at step {s}")
        backward_step(out.loss, optimizer, scaler, scheduler, model.parameters(), tc.clip_grad)
        ema.update(model, step=s + 1)
        algo.sync()
        # the engine's per-step diagnostics (sums of the logs, pseudo-label accuracy)
        logs = {"loss": float(out.loss.detach())}
        for k, v in out.logs.items():
            logs[k] = float(v.detach() if torch.is_tensor(v) else v)
        logs.update(step_scores(out, torch.from_numpy(labels[ui]).to(device)))
        if out.pseudo_labels is not None:
            torch.bincount(out.pseudo_labels[out.mask > 0].cpu(), minlength=NUM_CLASSES)
        state["step"] = s + 1
        return logs["loss"]

    return step, dc


# ---------------------------------------------------------------- timing


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=32, help="labelled images per step")
    p.add_argument("--uratio", type=int, default=2, help="unlabelled images per labelled image")
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--images", type=int, default=2048, help="random uint8 images in the pool")
    p.add_argument("--model", default="cnn_small", help="a semifer backbone, used by both frameworks")
    p.add_argument("--semifer-strong", default="custom", choices=["custom", "fixmatch"],
                   help="custom: strong_ops=3 strong_magnitude=30 (like USB's RandAugment(3, 5)); "
                        "fixmatch: semifer's FixMatch-paper preset (2 ops)")
    p.add_argument("--steps", type=int, default=20, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=5, help="timed blocks per framework (best counts)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per framework first")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import_semilearn()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    images = rng.integers(0, 256, (args.images, args.size, args.size, 1), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, args.images).astype(np.int64)
    total = args.warmup + args.steps * args.repeats + 1
    per_step = args.batch + 2 * args.batch * args.uratio  # labelled + unlabelled x (weak, strong)

    with tempfile.TemporaryDirectory(prefix="usb_fixmatch_") as workdir, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        usb_step, _ = usb_setup(args, images, labels, workdir, total)
        semifer_step, dc = semifer_setup(args, images, labels, total)
        steps = {"usb": usb_step, "semifer": semifer_step}
        for fn in steps.values():
            for _ in range(args.warmup):
                fn()
        best = {k: float("inf") for k in steps}
        best_cpu = {k: float("inf") for k in steps}
        blocks = {k: [] for k in steps}
        loss = {}
        for _ in range(args.repeats):  # alternate, so transient load hits both frameworks
            for name, fn in steps.items():
                t, c = time.perf_counter(), time.process_time()
                for _ in range(args.steps):
                    loss[name] = fn()
                dt, cpu_dt = time.perf_counter() - t, time.process_time() - c
                blocks[name].append(round(per_step * args.steps / dt, 1))
                best[name] = min(best[name], dt)
                best_cpu[name] = min(best_cpu[name], cpu_dt)

    rate = {k: per_step * args.steps / v for k, v in best.items()}
    rate_cpu = {k: per_step * args.steps / max(v, 1e-9) for k, v in best_cpu.items()}
    from importlib.metadata import version
    result = {
        "benchmark": "fixmatch_train_step",
        "model": args.model, "in_chans": 1, "size": args.size, "num_classes": NUM_CLASSES,
        "batch": args.batch, "uratio": args.uratio, "images_per_step": per_step,
        "threads": args.threads, "steps": args.steps, "repeats": args.repeats, "warmup": args.warmup,
        "usb": {"images_per_s": round(rate["usb"], 1), "blocks_images_per_s": blocks["usb"],
                "images_per_cpu_s": round(rate_cpu["usb"], 1), "last_loss": round(loss["usb"], 4),
                "version": version("semilearn"),
                "strong": "RandAugment(3, 5) + Cutout U(0, 0.5), per image in PIL (DataLoader, num_workers=0)"},
        "semifer": {"images_per_s": round(rate["semifer"], 1), "blocks_images_per_s": blocks["semifer"],
                    "images_per_cpu_s": round(rate_cpu["semifer"], 1), "last_loss": round(loss["semifer"], 4),
                    "strong": f"data.strong={dc.strong}" + (f" strong_ops={dc.strong_ops} strong_magnitude="
                                                            f"{dc.strong_magnitude}" if dc.strong == "custom" else ""),
                    "weak": f"data.weak={dc.weak}"},
        "ratio_semifer_over_usb": round(rate["semifer"] / rate["usb"], 3),
        "ratio_semifer_over_usb_cpu": round(rate_cpu["semifer"] / rate_cpu["usb"], 3),
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
