"""``semifer pretrain``: self-supervised pre-training of an encoder on unlabelled faces: MAE on a
ViT (``method=mae``, SSFER stage I) or SimCLR on any backbone, CNNs included (``method=simclr``).

One loop, read top to bottom, like ``engine/train.py`` and on the same run scaffold
(``engine/run.py``: lock, resume checks, optimiser and schedule, stop flag, checkpoints): gather a
uint8 batch from the decoded caches of every source, augment it on the device (MAE: one
random-resized-crop + flip; SimCLR: two such views with RandAugment on top), the method's loss
under autocast, backward, clip, AdamW and warm-up + cosine step; periodically log, save (MAE) a
PNG grid of original / masked / reconstructed images, and checkpoint atomically (weights +
optimiser, schedule, sampler and RNG state), so ``resume=true`` continues exactly.

Outputs in the run folder: ``config.yaml``, ``sources.json``, ``metrics.jsonl``, ``vis/*.png``
(MAE), ``ckpt/last.safetensors`` (``encoder.*`` and the decoder or projection head),
``ckpt/last_state.pt``, and at the end ``encoder.safetensors`` (``encoder.*`` only) and ``summary.json``. ``semifer train
model.init=RUN`` (or ``=RUN/encoder.safetensors``) starts a classifier from the encoder.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from semifer import checkpoint as ckpt
from semifer.config import load_config
from semifer.data.pool import gather, open_pool, report_lines
from semifer.data.sampler import BatchStream
from semifer.data.transforms import normalize, strong_view, weak_view
from semifer.engine.distributed import cleanup
from semifer.engine.evaluate import autocast
from semifer.engine.optim import backward_step
from semifer.engine.run import (StopFlag, aug_generator, check_resumable, fail_on_loss, interrupted, locked,
                                log_metrics, make_optimizer, make_scheduler, open_folder, param_groups, precision,
                                progress_bar, resume, save_checkpoint, setup, stop_flags, training_state)
from semifer.engine.schedule import apply_epochs
from semifer.io import atomic_path
from semifer.models import create_model
from semifer.models.io import model_kwargs
from semifer.ssl.mae import MaskedAutoencoder
from semifer.ssl.simclr import SimCLR


@dataclass
class PretrainDataConfig:
    sources: list[str] | str = "synthetic:"  # one pool from a YAML list or a comma-separated string of
                                       # dataset specs (labels ignored) and images:/folder (data/pool.py)
    split: str = "train"               # split read from dataset specs without their own ?split=
    size: int = 48                     # decoded and trained at size x size (= the classifier's data.size)
    channels: int = 0                  # 0 = the first source's (1 for gray data), or 1 / 3
    crop_scale: float = 0.2            # random-resized-crop area range [crop_scale, 1] (MAE: 0.2)
    mean: float | list[float] = 0.5    # normalisation after /255, one or per channel (= the classifier's)
    std: float | list[float] = 0.5
    cache_dir: str = ".cache/semifer"  # decoded uint8 arrays, shared with training


@dataclass
class EncoderConfig:
    name: str = "vit_tiny_p8"          # MAE: a ViT (vit_tiny_p8, vit_small_p8, a timm ViT); SimCLR: any backbone
    options: dict = field(default_factory=dict)  # model keyword arguments (depth, patch_size, ...)


@dataclass
class MAEConfig:
    mask_ratio: float = 0.75           # share of patches removed
    norm_pix_loss: bool = True         # per-patch normalised pixel target (paper); false = raw (SSFER code)
    decoder_dim: int = 0               # 0 = min(encoder width, 512); MAE / SSFER recipes: 512
    decoder_depth: int = 0             # 0 = min(8, ceil(encoder blocks / 2)); recipes: 8 (ssl/mae.py:decoder_shape)
    decoder_heads: int = 0             # 0 = the encoder's heads at its width, else 16; recipes: 16


@dataclass
class SimCLRConfig:
    temperature: float = 0.2           # tau of NT-Xent (paper: 0.1 at batch 4096, 0.5 on CIFAR-10)
    proj_dim: int = 128                # z, the projection head's output (paper)
    hidden_dim: int = 0                # the head's hidden width; 0 = the encoder's feature width (paper)
    strong_ops: int = 2                # RandAugment rounds on each view after its crop + flip, standing
    strong_magnitude: float = 10       # in for the paper's colour distortion on gray faces (0 ops = crop
                                       # + flip only); magnitude drawn from 0..this of 30


@dataclass
class PretrainTrainConfig:
    iterations: int = 10000            # optimiser steps
    epochs: float = 0.0                # > 0: iterations = ceil(epochs * pool images / global batch) instead
    warmup_epochs: float = 0.0         # > 0 (with epochs): warmup = these epochs likewise (SSFER: 50 of 600)
    batch_size: int = 256              # images per step and per process
    lr: float = 3.4e-4                 # AdamW (SSFER paper)
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    warmup: int = 800                  # linear warm-up steps, then cosine
    min_lr: float = 0.0
    clip_grad: float = 0.0             # max grad norm; 0 disables
    amp: str = "auto"                  # auto (bf16 on CUDA, none on CPU) | fast (bf16 where native) | bf16 | fp16 | none
    channels_last: bool = False        # NHWC convolutions (CNN encoders; with bf16 on a CPU, ~1.3x)
    log_every: int = 50
    vis_every: int = 500               # MAE: PNG grid of original / masked / reconstruction; 0 disables
    ckpt_every: int = 500
    seed: int = 0
    deterministic: bool = False        # torch.use_deterministic_algorithms, for exact resume tests
    threads: int = 0                   # torch CPU threads; 0 = torch default
    device: str = "auto"


@dataclass
class PretrainConfig:
    out: str = "runs/pretrain"
    resume: bool = False
    method: str = "mae"                # mae | simclr
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    model: EncoderConfig = field(default_factory=EncoderConfig)
    mae: MAEConfig = field(default_factory=MAEConfig)
    simclr: SimCLRConfig = field(default_factory=SimCLRConfig)
    train: PretrainTrainConfig = field(default_factory=PretrainTrainConfig)


def load_pretrain_config(path: str | None = None, overrides: list[str] = ()) -> PretrainConfig:
    """Defaults <- YAML recipe <- ``key=value`` overrides; unknown keys are errors."""
    return load_config(path, overrides, root=PretrainConfig)


# ---------------------------------------------------------------------------- data


def open_sources(dc: PretrainDataConfig) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[dict], int]:
    """Decode every source once (shared cache) -> ((images, kept rows) per source, per-source
    report, channels); see ``semifer.data.pool``."""
    pool = open_pool(dc.sources, dc.split, dc.size, dc.channels, dc.cache_dir)
    return pool.arrays, pool.report(), pool.channels


# ---------------------------------------------------------------------------- model


METHODS = ("mae", "simclr")


def build_objective(cfg: PretrainConfig, channels: int) -> MaskedAutoencoder | SimCLR:
    """The encoder exactly as ``semifer train`` builds the classifier's backbone, wrapped by the
    method: a decoder (MAE) or a projection head (SimCLR)."""
    if cfg.method not in METHODS:
        raise ValueError(f"method={cfg.method!r}; expected one of {', '.join(METHODS)}")
    encoder = create_model(cfg.model.name, num_classes=1, in_chans=channels,
                           **model_kwargs(cfg.model, cfg.data.size)).backbone
    if cfg.method == "simclr":
        c = cfg.simclr
        return SimCLR(encoder, proj_dim=c.proj_dim, hidden_dim=c.hidden_dim, temperature=c.temperature)
    m = cfg.mae
    return MaskedAutoencoder(encoder, mask_ratio=m.mask_ratio, decoder_dim=m.decoder_dim,
                             decoder_depth=m.decoder_depth, decoder_heads=m.decoder_heads,
                             norm_pix_loss=m.norm_pix_loss)


# No weight decay on these (besides biases and norm scales): tokens and position embeddings (MAE, timm).
NO_DECAY = ("pos_embed", "cls_token", "mask_token")


def save_grid(path: str, original: torch.Tensor, masked: torch.Tensor, recon: torch.Tensor,
              mean: float | list[float], std: float | list[float]) -> None:
    """Rows: original, masked, reconstruction; one column per image; normalised float -> PNG."""
    import cv2

    def rows(x):  # [N, C, H, W] -> [H, N*W, C] uint8
        m, s = (torch.as_tensor(v, dtype=torch.float32).view(-1, 1, 1) for v in (mean, std))  # [C or 1, 1, 1]
        x = (x.float().cpu() * s + m).clamp(0, 1).mul(255).round().to(torch.uint8)
        return torch.cat(list(x.permute(0, 2, 3, 1)), 1).numpy()

    grid = np.concatenate([rows(original), rows(masked), rows(recon)], 0)
    if grid.shape[2] == 3:
        grid = grid[:, :, ::-1]  # cv2 writes BGR
    scale = max(1, 96 // original.shape[-1])  # small faces are enlarged so the grid is legible
    grid = cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    with atomic_path(path) as tmp:
        cv2.imwrite(tmp, grid)


# ---------------------------------------------------------------------------- the loop


def pretrain(cfg: PretrainConfig) -> dict:
    """Run the pre-training; returns the summary written to ``summary.json``. Rank 0 holds the
    run folder's lock throughout, as training does."""
    with locked(cfg.out):
        return _pretrain(cfg)


def _pretrain(cfg: PretrainConfig) -> dict:
    from semifer.config import save_config

    tc, dc = cfg.train, cfg.data
    d = setup(tc)
    run = cfg.out
    resume_from = check_resumable(cfg, "; to pre-train further, start a new run (another out=)")
    open_folder(run, d, *(["vis"] if cfg.method == "mae" else []))

    arrays, report, channels = open_sources(dc)
    sizes = np.array([len(keep) for _, keep in arrays])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    total = int(sizes.sum())
    if d.is_main:
        save_config(cfg, os.path.join(run, "config.yaml"))
        with open(os.path.join(run, "sources.json"), "w") as f:
            json.dump(report, f, indent=2)
    epochs_line = apply_epochs(tc, tc.epochs, total, tc.batch_size * d.world, "pretrain epochs over the pool")

    objective = build_objective(cfg, channels).to(d.device)  # encoder + decoder (MAE) or + head (SimCLR)
    if tc.channels_last:
        objective = objective.to(memory_format=torch.channels_last)
    if d.enabled and d.device.type == "cuda" and cfg.method == "simclr":
        # SimCLR's "global BN" (the paper's section 2.2): with per-device statistics the two views
        # of an image can find each other through their batch's mean. PyTorch syncs batch norm
        # only on accelerators; on CPU each rank normalises its own share of the batch.
        objective = torch.nn.SyncBatchNorm.convert_sync_batchnorm(objective)
    net = torch.nn.parallel.DistributedDataParallel(objective) if d.enabled else objective
    optimizer = make_optimizer("adamw", param_groups([objective], tc.weight_decay, NO_DECAY), tc.lr,
                               betas=(tc.beta1, tc.beta2))
    scheduler = make_scheduler(optimizer, tc.iterations, tc.warmup, tc.lr, tc.min_lr)
    amp, scaler = precision(tc.amp, d.device)
    stream = BatchStream(np.arange(total), tc.batch_size, seed=tc.seed * 1009 + d.rank)
    aug_gen = aug_generator(tc.seed, d.rank)
    meta = {"model": cfg.model.name, "model_options": model_kwargs(cfg.model, dc.size), "in_chans": channels,
            "size": dc.size, "mean": dc.mean, "std": dc.std, "kind": f"{cfg.method}_encoder"}

    start = 0
    if resume_from:
        start = resume(run, d, tc.iterations, {"": objective}, optimizer, scheduler, scaler, aug_gen,
                       {"stream": stream})["step"]
    saved_at = start

    def save(step: int) -> None:
        nonlocal saved_at
        if d.is_main:
            state = training_state(step, optimizer, scheduler, scaler, aug_gen, {"stream": stream})
            save_checkpoint(run, "last", objective.state_dict(), {**meta, "step": step}, state)
        saved_at = step

    # A fixed set of images and a fixed mask, so successive grids show the same faces improving.
    vis_idx = np.linspace(0, total - 1, min(8, total)).astype(np.int64)
    vis_x = normalize(torch.from_numpy(gather(arrays, vis_idx, offsets)).permute(0, 3, 1, 2).to(d.device),
                      dc.mean, dc.std)

    def views(idx: np.ndarray) -> tuple[torch.Tensor, ...]:
        """The method's input views of the pool images ``idx``, normalised."""
        x = torch.from_numpy(gather(arrays, idx, offsets)).permute(0, 3, 1, 2).to(d.device)
        crop = dict(mode="rrc", scale=(dc.crop_scale, 1.0))
        if cfg.method == "mae":
            return (normalize(weak_view(x, aug_gen, **crop), dc.mean, dc.std),)
        c = cfg.simclr  # two independent draws of crop + flip + RandAugment, no Cutout
        return tuple(normalize(strong_view(x, aug_gen, n_ops=c.strong_ops, magnitude=c.strong_magnitude,
                                           cutout=0.0, **crop), dc.mean, dc.std) for _ in range(2))

    def visualise(step: int) -> None:
        objective.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            _, pred, mask = objective(vis_x)
            masked, recon = objective.reconstruct(vis_x, pred, mask)
        objective.train()
        save_grid(os.path.join(run, "vis", f"step_{step:07d}.png"), vis_x, masked, recon, dc.mean, dc.std)

    if d.is_main:
        print(f"pretrain {run}: {cfg.method.upper()} on {total} images from {len(arrays)} source(s), "
              f"encoder {cfg.model.name} "
              f"({sum(p.numel() for p in objective.encoder.parameters()) / 1e6:.2f} M), {dc.size} px, "
              f"{tc.iterations} iterations x batch {tc.batch_size * d.world}, device {d.device}, amp {amp}")
        print("\n".join(report_lines(report) + ([epochs_line] if epochs_line else [])))
    t_start = t_log = time.time()
    loss_sum, acc_sum, n_logged, n_images, last_loss = 0.0, 0.0, 0, 0, float("nan")
    bar = progress_bar(d, tc.iterations, start, "pretrain")
    objective.train()
    with StopFlag() as stop:  # Ctrl-C / SIGTERM: finish the step, checkpoint, stop (as training does)
        for step in range(start, tc.iterations):
            idx = stream.next()
            inputs = views(idx)  # augmented outside autocast (bf16 would coarsen the crops' sampling grid)
            with autocast(d.device, amp):
                out = net(*inputs)  # MAE: (loss, pred, mask); SimCLR: (loss, accuracy)
            loss = out[0]
            nonfinite, stopping = stop_flags(d, loss, stop)
            if nonfinite:  # before backward: the weights and the last checkpoint stay finite
                fail_on_loss(loss, step + 1, run, saved_at, bar)
            backward_step(loss, optimizer, scaler, scheduler, objective.parameters(), tc.clip_grad)
            loss_sum += float(loss.detach())
            acc_sum += float(out[1]) if cfg.method == "simclr" else 0.0
            n_logged += 1
            n_images += len(idx)

            last = step + 1 == tc.iterations
            if (step + 1) % tc.log_every == 0 or last:
                logs = d.mean({"loss": loss_sum / n_logged, "pos_acc": acc_sum / n_logged})
                last_loss = logs["loss"]
                rate = n_images * d.world / max(time.time() - t_log, 1e-9)
                if d.is_main:
                    rec = {"step": step + 1, "loss": round(last_loss, 5), "lr": scheduler.get_last_lr()[0],
                           "images_per_s": round(rate, 1)}
                    gauge = ""
                    if cfg.method == "simclr":  # share of views whose partner is their nearest view
                        rec["pos_acc"] = round(logs["pos_acc"], 4)
                        gauge = f", positive found {logs['pos_acc']:.3f}"
                    log_metrics(run, rec)
                    bar.set_postfix({"loss": f"{last_loss:.4f}", "images_per_s": f"{rate:.0f}"})
                    bar.write(f"step {step + 1}/{tc.iterations}: loss {last_loss:.4f}{gauge}, {rate:.0f} images/s")
                loss_sum, acc_sum, n_logged, n_images, t_log = 0.0, 0.0, 0, 0, time.time()
            if d.is_main and cfg.method == "mae" and tc.vis_every and ((step + 1) % tc.vis_every == 0 or last):
                visualise(step + 1)
            if (step + 1) % tc.ckpt_every == 0 or last:
                save(step + 1)
            if bar:
                bar.update(1)
            if stopping and not last:
                if saved_at != step + 1:
                    save(step + 1)
                return interrupted(d, run, step + 1, bar)
    if bar:
        bar.close()

    summary = {}
    if d.is_main:
        encoder = {f"encoder.{k}": v for k, v in objective.encoder.state_dict().items()}
        ckpt.save_weights(os.path.join(run, "encoder.safetensors"), encoder, {**meta, "step": tc.iterations})
        summary = {"run": run, "kind": f"{cfg.method}_pretrain", "model": cfg.model.name, "images": total, "sources": report,
                   "iterations": tc.iterations, "world_size": d.world, "final_loss": last_loss, "resumed_at": start if resume_from else None,
                   "wall_s": round(time.time() - t_start, 1), "encoder": os.path.join(run, "encoder.safetensors"),
                   "config": dataclasses.asdict(cfg)}
        with open(os.path.join(run, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        print(f"{run}: encoder written to {summary['encoder']} (final loss {last_loss:.4f})")
    d.barrier()
    cleanup()
    return summary
