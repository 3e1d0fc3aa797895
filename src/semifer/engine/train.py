"""The training loop: one function, read top to bottom.

Per step: draw labelled (and unlabelled) indices, gather uint8 images, build the views the
algorithm declares, ``loss = algorithm.step(...)`` under autocast, backward, clip, optimiser and
schedule step, EMA update, algorithm state sync; periodically log, evaluate and checkpoint.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import defaultdict

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from semifer import checkpoint as ckpt
from semifer.algorithms import create_algorithm
from semifer.engine.optim import backward_step
from semifer.engine.preflight import check_config
from semifer.config import Config, to_dict
from semifer.data.prepare import Prepared, prepare
from semifer.data.sampler import BatchStream
from semifer.data.transforms import normalize, strong_options, strong_view, weak_view
from semifer.engine import run_dir
from semifer.engine.distributed import Dist, cleanup, init_distributed
from semifer.engine.evaluate import autocast, predict_probs, resolve_amp, write_eval
from semifer.engine.model_io import FusedModel, model_meta
from semifer.engine.schedule import fixmatch_cosine, train_epochs, warmup_cosine
from semifer.io import remove_orphans
from semifer.models.io import build_model


def _optimizer(cfg, params_decay, params_no_decay):
    groups = [{"params": params_decay, "weight_decay": cfg.weight_decay},
              {"params": params_no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, cfg.beta2))
    raise ValueError(f"train.optimizer={cfg.optimizer!r}; expected sgd or adamw")


def _split_decay(modules) -> tuple[list, list]:
    """No weight decay on biases and norm weights (1-d parameters)."""
    decay, no_decay = [], []
    for m in modules:
        for p in m.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
    return decay, no_decay


def _views(images: np.ndarray, idx: np.ndarray, names: dict[str, str], gen: torch.Generator,
           dc, device, params: bool = False) -> dict[str, torch.Tensor]:
    """Gather uint8 images [B, H, W, C] -> the requested normalised views [B, C, H, W].
    ``params``: also ``<key>_theta`` [B, 2, 3] of each weak view (its crop / flip; FaceMix
    moves the face boxes with it); the random draws are the same either way."""
    x = torch.from_numpy(images[idx]).permute(0, 3, 1, 2).to(device)
    out = {}
    for key, kind in names.items():
        if kind == "weak" and params:
            v, out[f"{key}_theta"] = weak_view(x, gen, mode=dc.weak, return_params=True)
        elif kind == "weak":
            v = weak_view(x, gen, mode=dc.weak)
        elif kind == "strong":
            v = strong_view(x, gen, mode=dc.weak, **strong_options(dc.strong, dc.strong_ops, dc.strong_magnitude))
        elif kind == "none":
            v = x
        else:
            raise ValueError(f"unknown view {kind!r} for {key!r}; expected weak, strong or none")
        out[key] = normalize(v, dc.mean, dc.std)
    return out


def _print_counts(data: Prepared) -> None:
    lab = np.bincount(data.train_labels[data.labelled], minlength=len(data.classes))
    unl = np.bincount(data.true_labels[data.unlabelled], minlength=len(data.classes))
    tst = np.bincount(data.test_labels, minlength=len(data.classes))
    print(f"{'class':<10}{'labelled':>10}{'unlabelled':>12}{'test':>8}")
    for c, a, b, t in zip(data.classes, lab, unl, tst):
        print(f"{c:<10}{a:>10}{b:>12}{t:>8}")
    print(f"{'total':<10}{lab.sum():>10}{unl.sum():>12}{tst.sum():>8}")
    if data.errors:
        print(f"skipped {len(data.errors)} unreadable images (listed in corrupt.txt), e.g. {data.errors[0][1]}")


def _rng_state(gen: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "aug": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["aug"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _check_resumable(run: str, cfg: Config) -> str | None:
    """Path of the state to resume, or None for a fresh run; refuses to overwrite a run, to
    resume a finished one, and to resume with settings the run did not record."""
    state = os.path.join(run, "ckpt", "last_state.pt")
    if cfg.resume:
        if not os.path.exists(state):
            raise ckpt.CheckpointError(f"resume=true but {state} does not exist; nothing to resume")
        if os.path.exists(os.path.join(run, "summary.json")):
            raise ckpt.CheckpointError(f"resume=true but {run} is finished (its results are in {run}/summary.json, "
                                       "left as they are); to train further, start a new run with "
                                       f"model.init={run} model.init_head=true")
        run_dir.check_config(run, cfg)
        return state
    if os.path.exists(state):
        raise ckpt.CheckpointError(f"{run} already holds a run; pass resume=true to continue it "
                                   f"or choose another out=")
    return None


class _StopFlag:
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


class Diverged(RuntimeError):
    """The loss or the weights stopped being finite numbers."""


def train(cfg: Config) -> dict:
    """Run one training job described by ``cfg``; returns the summary written to summary.json.
    Rank 0 holds the run folder's lock throughout, so a second job on it fails at once."""
    check_config(cfg)  # a typo fails here, before the run folder exists or any data is decoded
    with run_dir.locked(cfg.out, main=int(os.environ.get("RANK", 0)) == 0):
        return _train(cfg)


def _train(cfg: Config) -> dict:
    tc, dc = cfg.train, cfg.data
    d: Dist = init_distributed(tc.device)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(tc.seed + d.rank)
    run = cfg.out
    resume_from = _check_resumable(run, cfg)
    if d.is_main:
        os.makedirs(os.path.join(run, "ckpt"), exist_ok=True)
        for folder in (run, os.path.join(run, "ckpt")):  # the lock makes any temporary file an orphan
            for name in remove_orphans(folder):
                print(f"removed {os.path.join(folder, name)}, left by a writer that was killed")

    # ---- data ----------------------------------------------------------------------------
    data = prepare(dc, d.is_main, d.barrier)
    if d.is_main:
        _print_counts(data)
        files = run_dir.record(cfg, data)
        if resume_from:
            run_dir.check_record(run, files)  # before anything is written
        run_dir.write_record(run, cfg, files, resumed=bool(resume_from))

    # Papers state schedules in epochs (and SSFER in a rule on the label count): steps, once.
    line = train_epochs(tc, len(data.labelled), len(data.unlabelled), d.world)
    if line and d.is_main:
        print(line)

    # ---- model, algorithm, teacher, optimiser ----------------------------------------------
    model = build_model(cfg.model, len(data.classes), data.channels, dc.size).to(d.device)
    algo_opts = {k: v for k, v in cfg.algorithm.items() if k != "name"}
    algo = create_algorithm(cfg.algorithm.get("name", "supervised"), len(data.classes), tc.iterations,
                            len(data.train_ids), **algo_opts)
    algo.setup(model)
    algo.setup_data(data)
    algo.to(d.device)
    use_ema = tc.ema > 0 or algo.uses_teacher
    ema = None
    if use_ema:
        from timm.utils import ModelEmaV3
        fixed = algo.teacher_momentum is not None  # a teacher follows its paper's momentum from step 0
        ema = ModelEmaV3(model, decay=algo.teacher_momentum if fixed else tc.ema, use_warmup=not fixed)
    net = DistributedDataParallel(model) if d.enabled else model
    optimizer = _optimizer(tc, *_split_decay([model, algo]))
    min_ratio = tc.min_lr / tc.lr if tc.lr else 0.0
    if tc.schedule not in ("cosine", "fixmatch"):
        raise ValueError(f"train.schedule={tc.schedule!r}; expected cosine or fixmatch")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, (lambda s: fixmatch_cosine(s, tc.iterations, tc.warmup))
        if tc.schedule == "fixmatch" else
        (lambda s: warmup_cosine(s, tc.iterations, tc.warmup, min_ratio, tc.warmup_lr / tc.lr if tc.lr else 0.0)))
    scaler = torch.amp.GradScaler(enabled=tc.amp == "fp16")
    # bf16 autocast on CPU hits slow oneDNN paths on AVX2-only CPUs (measured: 10x slower for a
    # stride-1 ResNet), so "auto" means bf16 on CUDA and fp32 on CPU; "fast" checks the CPU.
    amp = resolve_amp(tc.amp, d.device)

    semi = bool(algo.views) and len(data.unlabelled) > 0
    if algo.views and not semi:
        raise ValueError(f"algorithm {cfg.algorithm.get('name')!r} needs unlabelled data, but the unlabelled set is empty")
    lb_stream = BatchStream(data.labelled, tc.batch_size, seed=tc.seed * 1009 + d.rank,
                            labels=data.train_labels, balanced=dc.sampler == "balanced")
    ub_stream = BatchStream(data.unlabelled, tc.batch_size * tc.uratio, seed=tc.seed * 1009 + 500 + d.rank) if semi else None
    aug_gen = torch.Generator().manual_seed(tc.seed * 7 + 13 + d.rank)

    start, best = 0, {"accuracy": -1.0, "step": 0}
    if resume_from:
        state = ckpt.load_state(resume_from)
        weights_file = os.path.join(run, "ckpt", "last.safetensors")
        weights, saved_meta = ckpt.load_weights(weights_file)
        ckpt.check_pair(weights_file, saved_meta, resume_from, state)
        model.load_state_dict(ckpt.split_prefix(weights, "model."))
        if ema is not None:
            ema.module.load_state_dict(ckpt.split_prefix(weights, "ema."))
        algo.load_state_dict(state["algorithm"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        lb_stream.load_state_dict(state["lb_stream"])
        if ub_stream is not None:
            ub_stream.load_state_dict(state["ub_stream"])
        _set_rng_state(state["rng"], aug_gen)
        start, best = state["step"], state["best"]
        if d.is_main:
            run_dir.truncate_metrics(run, start)
            print(f"resumed {run} at step {start}/{tc.iterations}")

    meta = model_meta(cfg, data, algo)
    eval_model = lambda: ema.module if (ema is not None and tc.eval_ema) else model  # noqa: E731

    saved_at = {"last": start}

    def save(tag: str, step: int) -> None:
        if not d.is_main:
            return
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        if ema is not None:
            tensors.update({f"ema.{k}": v for k, v in ema.module.state_dict().items()})
        bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:  # never replace a good checkpoint with a broken one
            raise Diverged(f"step {step}: {len(bad)} weight tensors hold NaN or inf (e.g. {bad[0]}); stopped "
                           f"without saving, {run}/ckpt keeps the last good checkpoint")
        extra = {}
        exported = algo.export_predictor()   # e.g. SIT-FER's fused predictor, built on the raw weights
        if exported is not None:
            tensors.update({f"algo.{k}": v for k, v in exported[0].items()})
            extra = {"predictor": exported[1], "predictor_weights": "model"}
        if tag == "last":  # the state first: the weights' rename commits the pair (checkpoint.py)
            state_file = os.path.join(run, "ckpt", "last_state.pt")
            ckpt.save_state(state_file, {
                "step": step, "best": best, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "algorithm": algo.state_dict(), "lb_stream": lb_stream.state_dict(),
                "ub_stream": ub_stream.state_dict() if ub_stream else None, "rng": _rng_state(aug_gen)})
            extra["state_sha256"] = ckpt.file_sha256(state_file)
        ckpt.save_weights(os.path.join(run, "ckpt", f"{tag}.safetensors"), tensors, {**meta, **extra, "step": step})
        saved_at[tag] = step

    def evaluate(step: int) -> float:
        probs = predict_probs(eval_model(), data.test_images, d.device, dc.mean, dc.std, tc.eval_batch_size, amp, flip=tc.eval_flip)
        acc = float((probs.argmax(1) == data.test_labels).mean()) if len(probs) else 0.0
        if d.is_main and acc > best["accuracy"]:
            best.update(accuracy=acc, step=step)
            save("best", step)
        return acc

    writer = None
    if d.is_main:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(os.path.join(run, "tb"), purge_step=start if resume_from else None)
        eff = tc.batch_size * d.world
        print(f"run {run}: {cfg.algorithm.get('name')} on {dc.train}, {tc.iterations} iterations, batch "
              f"{eff} labelled" + (f" + {eff * tc.uratio} unlabelled" if semi else "") +
              f" (x{d.world} processes), device {d.device}, amp {amp}")

    # ---- the loop ----------------------------------------------------------------------------
    sums, pl_counts = defaultdict(float), torch.zeros(len(data.classes))
    n_logged, n_images, t_log, t_start = 0, 0, time.time(), time.time()
    bar = None
    if d.is_main:
        from tqdm import tqdm
        bar = tqdm(total=tc.iterations, initial=start, desc="train", dynamic_ncols=True,
                   mininterval=1.0 if os.isatty(2) else 30.0)
    model.train()
    stop = _StopFlag()
    with stop:
        for step in range(start, tc.iterations):
            li = lb_stream.next()
            batch = _views(data.train_images, li, {"x": "weak"}, aug_gen, dc, d.device,
                           params=getattr(algo, "view_params", False))
            batch["y"] = torch.from_numpy(data.train_labels[li]).to(d.device)
            batch["x_idx"] = torch.from_numpy(li).to(d.device)
            if semi:
                ui = ub_stream.next()
                batch.update(_views(data.train_images, ui, algo.views, aug_gen, dc, d.device))
                batch["u_idx"] = torch.from_numpy(ui).to(d.device)
                # hidden truth of the unlabelled batch: for diagnostics only, never in a loss
                batch["u_true"] = torch.from_numpy(data.true_labels[ui]).to(d.device)
            with autocast(d.device, amp):
                out = algo.step(net, batch, step, teacher=ema.module if algo.uses_teacher else None)
            # One collective for both flags: a rank that stopped alone would leave the others
            # waiting in the next all-reduce forever.
            nonfinite, stopping = d.any(not bool(torch.isfinite(out.loss.detach())), stop.requested)
            if nonfinite:  # before backward: the weights and the last checkpoint stay finite
                if bar:
                    bar.close()
                cleanup()
                kept = (f"{run}/ckpt/last.safetensors keeps the last good checkpoint (step {saved_at['last']})"
                        if saved_at["last"] else "no checkpoint had been saved yet")
                raise Diverged(f"the loss is {float(out.loss.detach())} at step {step + 1} (on some rank); stopped "
                               f"before updating the weights. {kept}; lower train.lr or set train.clip_grad")
            backward_step(out.loss, optimizer, scaler, scheduler, model.parameters(), tc.clip_grad)
            if ema is not None:
                ema.update(model, step=None if algo.teacher_momentum is not None else step + 1)
            algo.sync()

            # diagnostics: losses, and pseudo-label quality against the hidden true labels
            n_images += len(li) + (len(ui) * len(algo.views) if semi else 0)
            sums["loss"] += float(out.loss.detach())
            for k, v in out.logs.items():
                sums[k] += float(v.detach() if torch.is_tensor(v) else v)
            if out.pseudo_labels is not None:
                truth = batch["u_true"]
                mask = out.mask.float() if out.mask is not None else torch.ones_like(truth, dtype=torch.float)
                right = (out.pseudo_labels == truth).float()
                sums["mask"] += float(mask.mean())
                sums["pl_acc_all"] += float(right.mean())
                sums["pl_acc"] += float((right * mask).sum() / mask.sum().clamp(min=1))
                pl_counts += torch.bincount(out.pseudo_labels[mask > 0].cpu(), minlength=len(data.classes)).float()
            n_logged += 1

            last = step + 1 == tc.iterations
            if (step + 1) % tc.log_every == 0 or last:
                logs = d.mean({k: v / n_logged for k, v in sums.items()})
                elapsed = time.time() - t_log
                logs.update(lr=scheduler.get_last_lr()[0], images_per_s=n_images * d.world / max(elapsed, 1e-9))
                if d.is_main:
                    rec = {"step": step + 1, **{k: round(v, 5) for k, v in logs.items()}}
                    if out.pseudo_labels is not None:
                        rec["pl_count"] = dict(zip(data.classes, pl_counts.int().tolist()))
                    with open(os.path.join(run, "metrics.jsonl"), "a") as f:
                        f.write(json.dumps(rec) + "\n")
                    for k, v in logs.items():
                        writer.add_scalar(f"train/{k}", v, step + 1)
                    bar.set_postfix({k: f"{logs[k]:.3g}" for k in ("loss", "mask", "pl_acc", "images_per_s") if k in logs})
                sums.clear()
                pl_counts.zero_()
                n_logged, n_images, t_log = 0, 0, time.time()
            if (step + 1) % tc.eval_every == 0 or last:
                acc = evaluate(step + 1)
                if d.is_main:
                    writer.add_scalar("eval/accuracy", acc, step + 1)
                    with open(os.path.join(run, "metrics.jsonl"), "a") as f:
                        f.write(json.dumps({"step": step + 1, "eval_accuracy": round(acc, 5)}) + "\n")
                    bar.write(f"step {step + 1}: test accuracy {acc:.4f} (best {best['accuracy']:.4f} at {best['step']})")
            if (step + 1) % tc.ckpt_every == 0 or last:
                save("last", step + 1)
            if bar:
                bar.update(1)
            if stopping and not last:
                # keep the work: a checkpoint at a step boundary, then stop
                if saved_at["last"] != step + 1:
                    save("last", step + 1)
                if d.is_main:
                    bar.close()
                    print(f"\ninterrupted after step {step + 1}; checkpoint saved in {run}/ckpt. "
                          f"Continue with the same command plus resume=true")
                cleanup()
                return {"interrupted": True, "step": step + 1, "run": run}
    if bar:
        bar.close()

    # ---- final evaluation and summary ------------------------------------------------------
    summary = {}
    if d.is_main:
        probs = predict_probs(eval_model(), data.test_images, d.device, dc.mean, dc.std, tc.eval_batch_size, amp, flip=tc.eval_flip)
        wall = time.time() - t_start
        summary = write_eval(run, probs, data.test_labels, data.classes, name="test", ids=data.test_ids, extra={
            "test_data": data.test_name, "weights": "ema" if eval_model() is not model else "model"})
        summary.update({
            "run": run, "algorithm": cfg.algorithm.get("name"), "model": cfg.model.name,
            "labels_used": int(len(data.labelled)), "unlabelled_used": int(len(data.unlabelled)) if semi else 0,
            "iterations": tc.iterations, "resumed_at": start if resume_from else None,
            "wall_s": round(wall, 1), "images_per_s": round(_throughput(run), 1),
            "best_eval_accuracy": best["accuracy"], "best_eval_step": best["step"],
            "world_size": d.world, "device": str(d.device), "config": to_dict(cfg),
        })
        exported = algo.export_predictor()
        if exported is not None:  # the algorithm's own predictor, beside the classifier-only numbers
            fused = FusedModel(model, algo.load_predictor(*exported).to(d.device))
            fprobs = predict_probs(fused, data.test_images, d.device, dc.mean, dc.std, tc.eval_batch_size, amp, flip=tc.eval_flip)
            fm = write_eval(run, fprobs, data.test_labels, data.classes, name="test_fused", ids=data.test_ids)
            summary.update(fused_accuracy=fm["accuracy"], fused_macro_f1=fm["macro_f1"])
        with open(os.path.join(run, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        writer.close()
        print(f"{run}: test accuracy {summary['accuracy']:.4f}, macro-F1 {summary['macro_f1']:.4f} "
              f"({summary['num_images']} images), {wall / 60:.1f} min"
              + (f"; fused predictor {summary['fused_accuracy']:.4f}" if "fused_accuracy" in summary else ""))
    d.barrier()
    cleanup()
    return summary


def _throughput(run: str) -> float:
    """Median training images/s over the logged intervals of this run."""
    rates = []
    with open(os.path.join(run, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if "images_per_s" in rec:
                rates.append(rec["images_per_s"])
    return float(np.median(rates)) if rates else 0.0

