"""Training throughput per backbone, and its share of the cores' convolution peak.

    PYTHONPATH=src python benchmarks/throughput.py [--threads 1] [--batch 96] [--size 48] \
        [--models cnn_small 'cnn_small{"widths": [16, 32, 64, 128]}' ...] [--channels-last] [--amp bf16]

Prints one JSON object per model (one line each), then one for the peak:
- ``images_per_s``: training images/s of a full step (forward, cross-entropy, backward, AdamW),
  the best of ``--repeats`` timed blocks of ``--steps`` steps;
- ``mflop_per_image``: FLOPs of that step per image, counted by ``torch.utils.flop_counter``
  (multiply-adds count 2; convolutions and matmuls only, as the counter does);
- ``gflop_per_s`` = the two multiplied, and ``share_of_peak``: that over the GFLOP/s of a large
  convolution (forward + backward, 3x3, batch 64; the best of three shapes, see ``conv_peak``)
  timed on the same threads. A share near 1 means the step is bound by convolution speed, so
  only fewer or better-spent FLOPs make it faster.
Models default to every registered backbone; ``name{json}`` adds options (ViTs get img_size).

``--processes 2 --threads 1`` runs two copies side by side (as two single-thread trainings on a
2-core machine do) and reports their summed images/s, to compare with ``--threads 2`` (one run
on both cores).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from semifer.models import create_model, list_models


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what ``platform`` knows."""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def parse_model(text: str) -> tuple[str, dict]:
    """``'cnn_small{"widths": [16, 32, 64, 128]}'`` -> ("cnn_small", {...})."""
    name, brace, rest = text.partition("{")
    return name, (json.loads(brace + rest) if brace else {})


def step_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, opt, amp: str):
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
            _, logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def flops_of(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def best_rate(fn, items: int, steps: int, repeats: int) -> float:
    """Items per second: the best of ``repeats`` blocks of ``steps`` calls (after a warm-up)."""
    fn()
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        best = min(best, time.perf_counter() - t)
    return items * steps / best


def conv_peak(batch: int = 64, steps: int = 5, repeats: int = 3, amp: str = "none",
              channels_last: bool = False) -> float:
    """GFLOP/s of forward + backward of a large 3x3 convolution on these threads, in the same
    precision and memory format as the models: the best of 64 channels at 48x48, 128 at 24x24
    and 256 at 12x12 (the shapes of a 48 px CNN)."""
    best = 0.0
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for channels, side in ((64, 48), (128, 24), (256, 12)):
        conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(memory_format=fmt)
        x = torch.randn(batch, channels, side, side).contiguous(memory_format=fmt).requires_grad_()

        def fn():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
                y = conv(x)
            y.float().sum().backward()
        best = max(best, flops_of(fn) * best_rate(fn, 1, steps, repeats) / 1e9)
    return best


def measure(name: str, options: dict, args) -> dict:
    if "vit" in name:
        options = {"img_size": args.size, **options}
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_chans=1, **options)
    x = torch.randn(args.batch, 1, args.size, args.size)
    y = torch.randint(0, 7, (args.batch,))
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    fn = step_fn(model.train(), x, y, opt, args.amp)
    flops = flops_of(fn) / args.batch
    rate = best_rate(fn, args.batch, args.steps, args.repeats)
    return {"model": name, "options": options, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
            "mflop_per_image": round(flops / 1e6, 1), "images_per_s": round(rate, 1),
            "gflop_per_s": round(flops * rate / 1e9, 2)}


def _measure_in_process(job: tuple) -> dict:
    text, args = job
    torch.set_num_threads(args.threads)
    return measure(*parse_model(text), args)


def side_by_side(text: str, args) -> dict:
    """``args.processes`` copies of ``measure`` at once; images/s summed over the copies."""
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
        rows = pool.map(_measure_in_process, [(text, args)] * args.processes)
    row = dict(rows[0])
    row["images_per_s"] = round(sum(r["images_per_s"] for r in rows), 1)
    row["gflop_per_s"] = round(sum(r["gflop_per_s"] for r in rows), 2)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=96)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--amp", choices=["none", "bf16"], default="none")
    p.add_argument("--processes", type=int, default=1, help="copies measured side by side (images/s summed)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    peak = conv_peak(amp=args.amp, channels_last=args.channels_last)
    common = {"threads": args.threads, "processes": args.processes, "batch": args.batch, "size": args.size, "amp": args.amp,
              "channels_last": args.channels_last, "cpu": cpu_name(), "torch": torch.__version__}
    for text in args.models or list_models():
        row = side_by_side(text, args) if args.processes > 1 else measure(*parse_model(text), args)
        # the peak is one process's; side by side, each copy has its own cores
        row["share_of_peak"] = round(row["gflop_per_s"] / (peak * args.processes), 2)
        print(json.dumps({**row, **common}), flush=True)
    print(json.dumps({"peak_conv_gflop_per_s": round(peak, 2), **common}), flush=True)


if __name__ == "__main__":
    main()
