"""What every run does besides its objective, shared by training (``engine/train.py``) and MAE
pre-training (``ssl/pretrain.py``). Plain functions; each loop calls them in this order and
stays readable top to bottom:

    with run.locked(cfg.out):                       one writer per run folder (rank 0 holds it)
        d = run.setup(tc)                           process group, threads, determinism, seed
        resume_from = run.check_resumable(cfg)      a fresh folder, or a run to continue
        run.open_folder(cfg.out, d)                 RUN/ckpt, orphans of killed writers removed
        optimizer = run.make_optimizer(kind, run.param_groups(modules, wd, no_decay_names), ...)
        scheduler = run.make_scheduler(optimizer, ...)       warm-up + cosine (or FixMatch's)
        amp, scaler = run.precision(tc.amp, d.device)
        aug_gen = run.aug_generator(tc.seed, d.rank)
        state = run.resume(...)                     weights, states, sampler positions, RNG
        bar = run.progress_bar(...)
        with run.StopFlag() as stop:
            for step in ...:
                nonfinite, stopping = run.stop_flags(d, loss, stop)   one all-reduce
                if nonfinite: run.fail_on_loss(...)
                ...; run.log_metrics(...); run.save_checkpoint(...)
                if stopping: return run.interrupted(...)

A checkpoint is ``RUN/ckpt/<tag>.safetensors`` (weights; ``model.*`` and ``ema.*`` for training,
the whole MAE for pre-training) plus, for ``last``, ``last_state.pt`` written first (optimiser,
schedule, scaler, step, RNG, sampler positions and the caller's own entries, e.g. the
algorithm's state): the weights' rename commits the pair (``semifer/checkpoint.py``).
"""
from __future__ import annotations

import json
import os
import signal
import threading

import torch

from semifer import checkpoint as ckpt
from semifer.engine import run_dir
from semifer.engine.distributed import Dist, cleanup, init_distributed, launch_rank
from semifer.engine.evaluate import resolve_amp
from semifer.engine.schedule import fixmatch_cosine, warmup_cosine
from semifer.io import remove_orphans


class Diverged(RuntimeError):
    """The loss or the weights stopped being finite numbers."""


# ---------------------------------------------------------------------------- the process and the folder


def locked(out: str):
    """Hold ``out``'s lock for the block on rank 0 (``run_dir.locked``), so a second job on the
    same folder fails at once; RANK is read here because the process group does not exist yet."""
    return run_dir.locked(out, main=launch_rank() == 0)


def setup(tc) -> Dist:
    """Process group (torchrun), CPU threads, deterministic algorithms and this rank's seed, from a
    train section with ``device``, ``threads``, ``deterministic`` and ``seed``."""
    d = init_distributed(tc.device)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(tc.seed + d.rank)
    return d


def check_resumable(cfg, finished_hint: str = "") -> str | None:
    """Path of the state to resume, or None for a fresh run; refuses to overwrite a run, to
    resume a finished one, and to resume with settings the run did not record
    (``run_dir.check_config``). ``finished_hint``: how to go on from a finished run."""
    run = cfg.out
    state = os.path.join(run, "ckpt", "last_state.pt")
    if cfg.resume:
        if not os.path.exists(state):
            raise ckpt.CheckpointError(f"resume=true but {state} does not exist; nothing to resume")
        if os.path.exists(os.path.join(run, "summary.json")):
            raise ckpt.CheckpointError(f"resume=true but {run} is finished (its results are in {run}/summary.json, "
                                       f"left as they are){finished_hint}")
        run_dir.check_config(run, cfg)
        return state
    if os.path.exists(state):
        raise ckpt.CheckpointError(f"{run} already holds a run; pass resume=true to continue it "
                                   f"or choose another out=")
    return None


def open_folder(run: str, d: Dist, *subfolders: str) -> None:
    """Rank 0: create ``RUN/ckpt`` (and ``subfolders``), and remove the temporary files of
    writers that were killed (the lock makes any such file an orphan)."""
    if not d.is_main:
        return
    for sub in ("ckpt", *subfolders):
        os.makedirs(os.path.join(run, sub), exist_ok=True)
    for folder in (run, os.path.join(run, "ckpt")):
        for name in remove_orphans(folder):
            print(f"removed {os.path.join(folder, name)}, left by a writer that was killed")


# ---------------------------------------------------------------------------- optimiser, schedule, precision


def param_groups(modules, weight_decay: float, no_decay_names: tuple[str, ...] = (),
                 lr_scales: dict[torch.nn.Parameter, float] | None = None) -> list[dict]:
    """Two groups of the trainable parameters of ``modules``: with ``weight_decay``, and without
    it for 1-d parameters (biases, norm scales) and for parameters whose own name is in
    ``no_decay_names``. One rule for every run; the callers differ only in the names: training
    passes none (a ViT's ``pos_embed`` and ``cls_token`` are decayed, as they always were), MAE
    pre-training passes ``pos_embed``, ``cls_token`` and ``mask_token`` (MAE, timm).

    ``lr_scales`` (parameter -> factor, see :func:`layer_decay_scales`) splits each group by
    factor; a group's ``lr_scale`` then multiplies the lr (:func:`make_optimizer`)."""
    groups: dict[tuple[bool, float], list] = {}
    for m in modules:
        for name, p in m.named_parameters():
            if p.requires_grad:
                skip = p.ndim <= 1 or name.rsplit(".", 1)[-1] in no_decay_names
                scale = (lr_scales or {}).get(p, 1.0)
                groups.setdefault((skip, scale), []).append(p)
    for skip in (False, True):  # the two plain groups always exist, in this order, as before
        groups.setdefault((skip, 1.0), [])
    out = []
    for (skip, scale), params in sorted(groups.items(), key=lambda kv: (kv[0][1] != 1.0, kv[0][1], kv[0][0])):
        group = {"params": params, "weight_decay": 0.0 if skip else weight_decay}
        if scale != 1.0:
            group["lr_scale"] = scale
        out.append(group)
    return out


def layer_decay_scales(model, decay: float) -> dict[torch.nn.Parameter, float]:
    """Layer-wise lr decay (BEiT; MAE fine-tuning, 0.75 there): the backbone's layers, as its timm
    ``group_matcher`` orders them (a ViT: stem, then one per block), get lr x decay^(L - l), where
    layer L = everything outside the backbone (the head, add-ons), which keeps the full lr."""
    from timm.models._manipulate import group_parameters

    backbone = model.backbone
    if not hasattr(backbone, "group_matcher"):
        raise ValueError(f"train.layer_decay={decay} needs a backbone with timm's group_matcher (a ViT, "
                         f"ConvNeXt, ...); {type(backbone).__name__} has none: leave train.layer_decay=0")
    layer_of = group_parameters(backbone, backbone.group_matcher(coarse=False), reverse=True)
    top = max(layer_of.values()) + 1
    return {p: decay ** (top - layer_of.get(name, top)) for name, p in backbone.named_parameters()}


def make_optimizer(kind: str, groups: list[dict], lr: float, momentum: float = 0.9, nesterov: bool = False,
                   betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    """``sgd`` (momentum, Nesterov) or ``adamw`` (betas) over ``param_groups``; a group's
    ``lr_scale`` multiplies ``lr`` (the schedule then scales every group alike)."""
    groups = [{**g, "lr": lr * g["lr_scale"]} if "lr_scale" in g else g for g in groups]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
    raise ValueError(f"train.optimizer={kind!r}; expected sgd or adamw")


def make_scheduler(optimizer, iterations: int, warmup: int, lr: float, min_lr: float = 0.0,
                   warmup_lr: float = 0.0, kind: str = "cosine") -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step schedule: ``cosine`` = linear warm-up from ``warmup_lr`` (0: from lr / warmup)
    then a half cosine to ``min_lr``; ``fixmatch`` = FixMatch's lr cos(7 pi k / 16 K)."""
    if kind == "fixmatch":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: fixmatch_cosine(s, iterations, warmup))
    if kind != "cosine":
        raise ValueError(f"train.schedule={kind!r}; expected cosine or fixmatch")
    min_ratio, start_ratio = (min_lr / lr, warmup_lr / lr) if lr else (0.0, 0.0)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, iterations, warmup, min_ratio, start_ratio))


def precision(amp: str, device: torch.device) -> tuple[str, torch.amp.GradScaler]:
    """``train.amp`` -> (what autocast runs, the loss scaler: enabled for fp16 only). bf16
    autocast on CPU hits slow oneDNN paths on AVX2-only CPUs (measured: 10x slower for a
    stride-1 ResNet), so "auto" means bf16 on CUDA and fp32 on CPU; "fast" checks the CPU."""
    return resolve_amp(amp, device), torch.amp.GradScaler(enabled=amp == "fp16")


# ---------------------------------------------------------------------------- RNG, resume, checkpoints


def aug_generator(seed: int, rank: int) -> torch.Generator:
    """The generator of the batched augmentations (checkpointed with the run)."""
    return torch.Generator().manual_seed(seed * 7 + 13 + rank)


def rng_state(gen: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "aug": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["aug"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def training_state(step: int, optimizer, scheduler, scaler, gen: torch.Generator, parts: dict, **plain) -> dict:
    """What a resume needs besides the weights: the step, ``plain`` values (e.g. the best
    evaluation so far), optimiser, schedule, scaler, the state of each of ``parts`` (state key ->
    object with ``state_dict``, or None: the algorithm, the samplers) and the RNG states."""
    return {"step": step, **plain, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            **{key: None if part is None else part.state_dict() for key, part in parts.items()},
            "rng": rng_state(gen)}


def resume(run: str, d: Dist, total: int, weights: dict, optimizer, scheduler, scaler, gen: torch.Generator,
           parts: dict) -> dict:
    """Continue ``run`` from ``ckpt/last*``: refuse a weights file and a state that were not saved
    together, load ``weights`` (prefix in the weights file -> module; "" = the whole file), each
    of ``parts`` (as in ``training_state``), the optimiser, schedule and scaler and, last, the
    RNG states; drop the metrics logged after the checkpoint. Returns the training state."""
    state_file = os.path.join(run, "ckpt", "last_state.pt")
    weights_file = os.path.join(run, "ckpt", "last.safetensors")
    state = ckpt.load_state(state_file)
    tensors, meta = ckpt.load_weights(weights_file)
    ckpt.check_pair(weights_file, meta, state_file, state)
    for prefix, module in weights.items():
        module.load_state_dict(ckpt.split_prefix(tensors, prefix))
    for key, part in parts.items():
        if part is not None:
            part.load_state_dict(state[key])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"], gen)
    if d.is_main:
        run_dir.truncate_metrics(run, state["step"])
        print(f"resumed {run} at step {state['step']}/{total}")
    return state


def save_checkpoint(run: str, tag: str, tensors: dict[str, torch.Tensor], meta: dict, state: dict | None = None) -> None:
    """``RUN/ckpt/<tag>.safetensors`` with ``meta`` (which holds the ``step``); with a training
    ``state``, ``<tag>_state.pt`` first, whose sha256 the weights record: their rename commits
    the pair. Weights that hold NaN or inf are never written over a good checkpoint."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise Diverged(f"step {meta.get('step')}: {len(bad)} weight tensors hold NaN or inf (e.g. {bad[0]}); stopped "
                       f"without saving, {run}/ckpt keeps the last good checkpoint")
    if state is not None:
        state_file = os.path.join(run, "ckpt", f"{tag}_state.pt")
        ckpt.save_state(state_file, state)
        meta = {**meta, "state_sha256": ckpt.file_sha256(state_file)}
    ckpt.save_weights(os.path.join(run, "ckpt", f"{tag}.safetensors"), tensors, meta)


# ---------------------------------------------------------------------------- the loop's bookkeeping


def log_metrics(run: str, record: dict) -> None:
    """Append one record to ``RUN/metrics.jsonl`` (rank 0)."""
    with open(os.path.join(run, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")


def progress_bar(d: Dist, total: int, start: int, desc: str):
    """A tqdm bar on rank 0 (None elsewhere); sparse refreshes when stderr goes to a log file."""
    if not d.is_main:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc=desc, dynamic_ncols=True, mininterval=1.0 if os.isatty(2) else 30.0)


class StopFlag:
    """First Ctrl-C (SIGINT) or SIGTERM asks the loop to stop at the next step boundary, where
    a consistent checkpoint can be written; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstop requested: finishing this step and saving a checkpoint (Ctrl-C again to abort)")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def stop_flags(d: Dist, loss: torch.Tensor, stop: StopFlag) -> tuple[bool, bool]:
    """(the loss is not finite on some rank, some rank was asked to stop), in one all-reduce:
    a rank that stopped alone would leave the others waiting in the next all-reduce forever."""
    nonfinite, stopping = d.any(not bool(torch.isfinite(loss.detach())), stop.requested)
    return nonfinite, stopping


def fail_on_loss(loss: torch.Tensor, step: int, run: str, saved_step: int, bar=None) -> None:
    """Stop a run whose loss is not finite, before backward: the weights and the last
    checkpoint stay finite. Raises ``Diverged`` naming the checkpoint that is kept."""
    if bar:
        bar.close()
    cleanup()
    kept = (f"{run}/ckpt/last.safetensors keeps the last good checkpoint (step {saved_step})"
            if saved_step else "no checkpoint had been saved yet")
    raise Diverged(f"the loss is {float(loss.detach())} at step {step} (on some rank); stopped "
                   f"before updating the weights. {kept}; lower train.lr or set train.clip_grad")


def interrupted(d: Dist, run: str, step: int, bar=None) -> dict:
    """After a stop request (the checkpoint of ``step`` written): say how to continue, leave the
    process group; the summary of an interrupted run."""
    if d.is_main:
        if bar:
            bar.close()
        print(f"\ninterrupted after step {step}; checkpoint saved in {run}/ckpt. "
              f"Continue with the same command plus resume=true")
    cleanup()
    return {"interrupted": True, "step": step, "run": run}
