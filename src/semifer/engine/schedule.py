"""Learning-rate schedules (linear warm-up, then cosine decay to a floor; FixMatch's cosine), and
schedules stated in epochs turned into optimiser steps."""
import math


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float = 0.0, start_ratio: float = 0.0) -> float:
    """Multiplier of the base lr at ``step`` (LambdaLR form). Warm-up: linear from
    ``start_ratio`` at step 0 to 1 at ``warmup`` (timm's ``warmup_lr_init``; SSFER starts at
    5e-5 of 1e-4); with ``start_ratio`` 0 it is (step + 1) / warmup, as it always was."""
    if warmup and step < warmup:
        if start_ratio > 0:
            return start_ratio + (1 - start_ratio) * step / warmup
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def fixmatch_cosine(step: int, total: int, warmup: int = 0) -> float:
    """FixMatch's decay (Sohn et al. 2020, section 3): lr cos(7 pi k / (16 K)) at step k of K,
    which ends at cos(7 pi / 16) ~ 0.195 of the lr instead of the floor; optional linear warm-up."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    return math.cos(7 * math.pi * min(step, total) / (16 * max(1, total)))


def apply_epochs(train, epochs: float, items: int, batch: int, what: str) -> str | None:
    """When ``epochs`` > 0, set ``train.iterations`` to ``epochs`` passes over ``items`` at
    ``batch`` items a step (all ranks), and ``train.warmup`` from ``train.warmup_epochs`` (when
    > 0) likewise, in place; returns the line to print once. With ``epochs`` 0 the schedule is in
    iterations (``iterations`` and ``warmup`` as given) and None is returned."""
    if epochs <= 0:
        return None
    train.iterations = math.ceil(epochs * items / batch)
    line = f"{what}: {items:,} images at {batch} a step: {epochs:g} epochs = {train.iterations:,} iterations"
    if getattr(train, "warmup_epochs", 0) > 0:
        train.warmup = math.ceil(train.warmup_epochs * items / batch)
        line += f", warm-up {train.warmup_epochs:g} epochs = {train.warmup:,} iterations"
    return line


def train_epochs(train, labelled: int, unlabelled: int, world: int = 1) -> str | None:
    """The epoch rules of ``semifer train`` (``TrainConfig``), applied in place when
    ``epochs`` > 0 (``apply_epochs``):

    * an epoch is a pass over the labelled set at ``batch_size x world`` images a step, or over
      the unlabelled set at ``batch_size x uratio x world`` with ``epoch_over=unlabelled``
      (SSFER stage III: 50 epochs of the unlabelled faces at 64 : 64);
    * ``few_label_epochs`` > 0 replaces ``epochs`` when the labelled set has fewer than
      ``few_labels`` images (SSFER stage II: 100 epochs, 1,000 below 500 labels)."""
    if train.epoch_over not in ("labelled", "unlabelled"):
        raise ValueError(f"train.epoch_over={train.epoch_over!r}; expected labelled or unlabelled")
    if train.epochs <= 0:
        return None
    epochs, rule = train.epochs, ""
    if train.few_label_epochs > 0 and labelled < train.few_labels:
        epochs, rule = train.few_label_epochs, f" (fewer than {train.few_labels} labelled: few_label_epochs)"
    if train.epoch_over == "labelled":
        items, batch = labelled, train.batch_size * world
    else:
        if not unlabelled:
            raise ValueError("train.epoch_over=unlabelled, but the unlabelled set is empty")
        items, batch = unlabelled, train.batch_size * train.uratio * world
    return apply_epochs(train, epochs, items, batch, f"train epochs over the {train.epoch_over} set{rule}")
