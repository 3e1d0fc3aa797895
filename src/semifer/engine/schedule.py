"""Learning-rate schedules: linear warm-up, then cosine decay to a floor; FixMatch's cosine."""
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
