"""The training loop: one function, read top to bottom.

Per step: draw labelled (and unlabelled) indices, gather uint8 images, build the views the
algorithm declares, ``loss = algorithm.step(...)`` under autocast, backward, clip, optimiser and
schedule step, EMA update, algorithm state sync; periodically log, evaluate and checkpoint.
What every run shares with MAE pre-training (lock, resume, optimiser and schedule, stop flag,
checkpoints) is in ``engine/run.py``. The algorithm sees the data through a ``TrainView``; the
true labels of the unlabelled batch stay here and score the pseudo-labels a step returns.
"""
from __future__ import annotations

import json
import os
import time
from collections import defaultdict

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from semifer.algorithms import create_algorithm
from semifer.engine.optim import backward_step
from semifer.engine.preflight import check_config
from semifer.config import Config, to_dict
from semifer.data.prepare import Prepared, TrainView, prepare
from semifer.data.sampler import BatchStream
from semifer.data.transforms import normalize, strong_options, strong_view, weak_view
from semifer.engine import run_dir
from semifer.engine.diagnostics import step_scores
from semifer.engine.distributed import average_grads_over_ranks, cleanup
from semifer.engine.evaluate import autocast, predict_probs, write_eval
from semifer.engine.model_io import FusedModel, model_meta
from semifer.engine.run import Diverged  # noqa: F401  (what a diverged run raises, for callers to catch)
from semifer.engine.run import (StopFlag, aug_generator, check_resumable, fail_on_loss, interrupted,
                                layer_decay_scales, locked, log_metrics, make_optimizer, make_scheduler, open_folder,
                                param_groups, precision, progress_bar, resume, save_checkpoint, setup, stop_flags,
                                training_state)
from semifer.engine.schedule import train_epochs
from semifer.models.io import build_model


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


def make_batch(view: TrainView, li: np.ndarray, ui: np.ndarray | None, algo, gen: torch.Generator, dc,
               device) -> dict[str, torch.Tensor]:
    """What ``algo.step`` gets, built from the algorithm's view of the data alone: the labelled
    batch ``li`` (weak view ``x``, labels ``y``, indices ``x_idx``, and ``x_theta`` when the
    algorithm asks for ``view_params``), and the unlabelled batch ``ui`` (the views ``algo.views``
    declares, indices ``u_idx``). No true label of an unlabelled image can get in: the view has none."""
    batch = _views(view.images, li, {"x": "weak"}, gen, dc, device, params=getattr(algo, "view_params", False))
    batch["y"] = torch.from_numpy(view.labels[li]).to(device)
    batch["x_idx"] = torch.from_numpy(li).to(device)
    if ui is not None:
        batch.update(_views(view.images, ui, algo.views, gen, dc, device))
        batch["u_idx"] = torch.from_numpy(ui).to(device)
    return batch


def _print_counts(data: Prepared) -> None:
    lab = np.bincount(data.train_labels[data.labelled], minlength=len(data.classes))
    unl = np.bincount(data.true_labels[data.unlabelled], minlength=len(data.classes))
    tst = np.bincount(data.test_labels, minlength=len(data.classes))
    val = np.bincount(data.val_labels, minlength=len(data.classes))
    print(f"{'class':<10}{'labelled':>10}{'unlabelled':>12}{'val':>8}{'test':>8}")
    for c, a, b, v, t in zip(data.classes, lab, unl, val, tst):
        print(f"{c:<10}{a:>10}{b:>12}{v:>8}{t:>8}")
    print(f"{'total':<10}{lab.sum():>10}{unl.sum():>12}{val.sum():>8}{tst.sum():>8}")
    print(f"validation: {data.val_name} ({data.val_source})" if data.val_name else
          "validation: none (data.val_fraction=0 and no val split apart from the test split): "
          "periodic evaluation monitors the test split, best = the last weights")
    if data.errors:
        print(f"skipped {len(data.errors)} unreadable images (listed in corrupt.txt), e.g. {data.errors[0][1]}")


def train(cfg: Config) -> dict:
    """Run one training job described by ``cfg``; returns the summary written to summary.json.
    Rank 0 holds the run folder's lock throughout, so a second job on it fails at once."""
    check_config(cfg)  # a typo fails here, before the run folder exists or any data is decoded
    with locked(cfg.out):
        return _train(cfg)


def _train(cfg: Config) -> dict:
    tc, dc = cfg.train, cfg.data
    d = setup(tc)
    run = cfg.out
    resume_from = check_resumable(cfg, f"; to train further, start a new run with model.init={run} model.init_head=true")
    open_folder(run, d)

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
    if tc.channels_last:  # weights NHWC; convolutions then run NHWC whatever the input's layout
        model = model.to(memory_format=torch.channels_last)
    algo_opts = {k: v for k, v in cfg.algorithm.items() if k != "name"}
    algo = create_algorithm(cfg.algorithm.get("name", "supervised"), len(data.classes), tc.iterations,
                            len(data.train_ids), **algo_opts)
    algo.setup(model)
    view = data.train_view()  # all an algorithm sees: no true label of an unlabelled image, no test set
    algo.setup_data(view)
    algo.to(d.device)
    use_ema = tc.ema > 0 or algo.uses_teacher
    ema = None
    if use_ema:
        from timm.utils import ModelEmaV3
        fixed = algo.teacher_momentum is not None  # a teacher follows its paper's momentum from step 0
        ema = ModelEmaV3(model, decay=algo.teacher_momentum if fixed else tc.ema, use_warmup=not fixed)
    net = DistributedDataParallel(model) if d.enabled else model
    if d.enabled:  # an algorithm's own heads (CoMatch's projection, DST's) sit outside DDP
        average_grads_over_ranks(algo)
    scales = layer_decay_scales(model, tc.layer_decay) if tc.layer_decay > 0 else None
    optimizer = make_optimizer(tc.optimizer, param_groups([model, algo], tc.weight_decay, lr_scales=scales), tc.lr,
                               momentum=tc.momentum, nesterov=tc.nesterov, betas=(tc.momentum, tc.beta2))
    scheduler = make_scheduler(optimizer, tc.iterations, tc.warmup, tc.lr, tc.min_lr, tc.warmup_lr, tc.schedule)
    amp, scaler = precision(tc.amp, d.device)

    semi = bool(algo.views) and len(data.unlabelled) > 0
    if algo.views and not semi:
        raise ValueError(f"algorithm {cfg.algorithm.get('name')!r} needs unlabelled data, but the unlabelled set is empty")
    lb_stream = BatchStream(data.labelled, tc.batch_size, seed=tc.seed * 1009 + d.rank,
                            labels=data.train_labels, balanced=dc.sampler == "balanced", name="labelled")
    ub_stream = BatchStream(data.unlabelled, tc.batch_size * tc.uratio, seed=tc.seed * 1009 + 500 + d.rank) if semi else None
    aug_gen = aug_generator(tc.seed, d.rank)
    parts = {"algorithm": algo, "lb_stream": lb_stream, "ub_stream": ub_stream}  # checkpointed with the run

    start, best = 0, {"accuracy": -1.0, "step": 0}
    if resume_from:
        weights = {"model.": model, **({"ema.": ema.module} if ema is not None else {})}
        state = resume(run, d, tc.iterations, weights, optimizer, scheduler, scaler, aug_gen, parts)
        start, best = state["step"], state["best"]

    meta = model_meta(cfg, data, algo)
    eval_model = lambda: ema.module if (ema is not None and tc.eval_ema) else model  # noqa: E731

    saved_at = {"last": start}

    def save(tag: str, step: int) -> None:
        if not d.is_main:
            return
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        if ema is not None:
            tensors.update({f"ema.{k}": v for k, v in ema.module.state_dict().items()})
        extra = {}
        exported = algo.export_predictor()   # e.g. SIT-FER's fused predictor, built on the raw weights
        if exported is not None:
            tensors.update({f"algo.{k}": v for k, v in exported[0].items()})
            extra = {"predictor": exported[1], "predictor_weights": "model"}
        state = training_state(step, optimizer, scheduler, scaler, aug_gen, parts, best=best) if tag == "last" else None
        save_checkpoint(run, tag, tensors, {**meta, **extra, "step": step}, state)
        saved_at[tag] = step

    # Periodic evaluation selects on the validation split; without one it only monitors the test
    # split (no selection: best = the last weights, saved at the end).
    has_val = bool(data.val_name)
    eval_split = "val" if has_val else "test"
    eval_images, eval_labels = (data.val_images, data.val_labels) if has_val else (data.test_images, data.test_labels)

    def evaluate(step: int) -> float:
        probs = predict_probs(eval_model(), eval_images, d.device, dc.mean, dc.std, tc.eval_batch_size, amp, flip=tc.eval_flip)
        acc = float((probs.argmax(1) == eval_labels).mean()) if len(probs) else 0.0
        if d.is_main and has_val and acc > best["accuracy"]:
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
              (f" in all ({tc.batch_size} labelled per process x {d.world} processes)" if d.world > 1 else "") +
              f", device {d.device}, amp {amp}")

    # ---- the loop ----------------------------------------------------------------------------
    sums, pl_counts = defaultdict(float), torch.zeros(len(data.classes))
    n_logged, n_images, t_log, t_start = 0, 0, time.time(), time.time()
    bar = progress_bar(d, tc.iterations, start, "train")
    model.train()
    with StopFlag() as stop:
        for step in range(start, tc.iterations):
            li = lb_stream.next()
            ui = ub_stream.next() if semi else None
            batch = make_batch(view, li, ui, algo, aug_gen, dc, d.device)
            with autocast(d.device, amp):
                out = algo.step(net, batch, step, teacher=ema.module if algo.uses_teacher else None)
            nonfinite, stopping = stop_flags(d, out.loss, stop)
            if nonfinite:  # before backward: the weights and the last checkpoint stay finite
                fail_on_loss(out.loss, step + 1, run, saved_at["last"], bar)
            backward_step(out.loss, optimizer, scaler, scheduler, model.parameters(), tc.clip_grad)
            if ema is not None:
                ema.update(model, step=None if algo.teacher_momentum is not None else step + 1)
            algo.sync()

            # diagnostics: losses, and pseudo-label quality against the hidden true labels
            n_images += len(li) + (len(ui) * len(algo.views) if semi else 0)
            sums["loss"] += float(out.loss.detach())
            for k, v in out.logs.items():
                sums[k] += float(v.detach() if torch.is_tensor(v) else v)
            if semi:  # the truth of the unlabelled batch: held here, never in the batch
                truth = torch.from_numpy(data.true_labels[ui]).to(d.device)
                for k, v in step_scores(out, truth).items():
                    sums[k] += v
                if out.pseudo_labels is not None:
                    used = out.pseudo_labels if out.mask is None else out.pseudo_labels[out.mask > 0]
                    pl_counts += torch.bincount(used.cpu(), minlength=len(data.classes)).float()
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
                    log_metrics(run, rec)
                    for k, v in logs.items():
                        writer.add_scalar(f"train/{k}", v, step + 1)
                    bar.set_postfix({k: f"{logs[k]:.3g}" for k in ("loss", "mask", "pl_acc", "images_per_s") if k in logs})
                sums.clear()
                pl_counts.zero_()
                n_logged, n_images, t_log = 0, 0, time.time()
            if (step + 1) % tc.eval_every == 0 or last:
                acc = evaluate(step + 1)
                if d.is_main:
                    writer.add_scalar(f"eval/{eval_split}_accuracy", acc, step + 1)
                    log_metrics(run, {"step": step + 1, "eval_split": eval_split, "eval_accuracy": round(acc, 5)})
                    bar.write(f"step {step + 1}: val accuracy {acc:.4f} (best {best['accuracy']:.4f} at {best['step']})"
                              if has_val else f"step {step + 1}: test accuracy {acc:.4f} (monitor only, no validation split)")
            if (step + 1) % tc.ckpt_every == 0 or last:
                save("last", step + 1)
            if last and not has_val:
                save("best", step + 1)  # nothing to select on: best is the last weights
            if bar:
                bar.update(1)
            if stopping and not last:
                # keep the work: a checkpoint at a step boundary, then stop
                if saved_at["last"] != step + 1:
                    save("last", step + 1)
                return interrupted(d, run, step + 1, bar)
    if bar:
        bar.close()

    # ---- final evaluation and summary ------------------------------------------------------
    summary = {}
    if d.is_main:
        # the final evaluation, the run's reported number, adds the test-time shifts (eval_shift)
        probs = predict_probs(eval_model(), data.test_images, d.device, dc.mean, dc.std, tc.eval_batch_size, amp,
                              flip=tc.eval_flip, shift=tc.eval_shift)
        wall = time.time() - t_start
        summary = write_eval(run, probs, data.test_labels, data.classes, name="test", ids=data.test_ids, extra={
            "test_data": data.test_name, "weights": "ema" if eval_model() is not model else "model"})
        summary.update({
            "run": run, "algorithm": cfg.algorithm.get("name"), "model": cfg.model.name,
            "labels_used": int(len(data.labelled)), "unlabelled_used": int(len(data.unlabelled)) if semi else 0,
            "iterations": tc.iterations, "resumed_at": start if resume_from else None,
            "wall_s": round(wall, 1), "images_per_s": round(_throughput(run), 1),
            "test_accuracy": summary["accuracy"], "val_data": data.val_name or None, "val_source": data.val_source or None,
            # ckpt/best: chosen on the val split, or the last weights when there is none
            "best_on": "val" if has_val else "last", "best_val_accuracy": best["accuracy"] if has_val else None,
            "best_step": best["step"] if has_val else tc.iterations,
            "world_size": d.world, "device": str(d.device), "config": to_dict(cfg),
        })
        exported = algo.export_predictor()
        if exported is not None:  # the algorithm's own predictor, beside the classifier-only numbers
            fused = FusedModel(model, algo.load_predictor(*exported).to(d.device))
            fprobs = predict_probs(fused, data.test_images, d.device, dc.mean, dc.std, tc.eval_batch_size, amp,
                                   flip=tc.eval_flip, shift=tc.eval_shift)
            fm = write_eval(run, fprobs, data.test_labels, data.classes, name="test_fused", ids=data.test_ids)
            summary.update(fused_accuracy=fm["accuracy"], fused_macro_f1=fm["macro_f1"])
        with open(os.path.join(run, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        writer.close()
        print(f"{run}: test accuracy {summary['accuracy']:.4f}, macro-F1 {summary['macro_f1']:.4f} "
              f"({summary['num_images']} images, final weights), {wall / 60:.1f} min"
              + (f"; fused predictor {summary['fused_accuracy']:.4f}" if "fused_accuracy" in summary else "")
              + (f"; ckpt/best: val accuracy {best['accuracy']:.4f} at step {best['step']}" if has_val
                 else "; ckpt/best = the last weights (no validation split)"))
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

