"""Stage I (``semifer pretrain``) on the cores of one machine: one process on one thread, one
process on all threads, and one process per core under torchrun (the recipe's batch split over
them, the NT-Xent still over the global batch). Each setting runs the real command for
``--steps`` steps of a recipe; prints one JSON object per setting, then their speed-ups.

    PYTHONPATH=src python benchmarks/pretrain_cores.py --data fer2013:/data/fer2013 \
        [--config recipes/simclr_fer2013_cpu_hour.yaml] [--steps 100] [--cores 2]

``images_per_s`` is the median of the logged rates after the first log interval (which holds
the decode and warm-up); run it on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import yaml

from throughput import cpu_name


def run(cmd: list[str], out: str, env: dict) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rates = [json.loads(line)["images_per_s"] for line in f if "images_per_s" in line]
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    return {"images_per_s": round(statistics.median(rates[1:] or rates), 1), "final_loss": round(summary["final_loss"], 4),
            "world_size": summary.get("world_size", 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--config", default="recipes/simclr_fer2013_cpu_hour.yaml")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--cores", type=int, default=os.cpu_count())
    args = p.parse_args()

    with open(args.config) as f:
        batch = (yaml.safe_load(f).get("train") or {}).get("batch_size", 256)
    if batch % args.cores:
        raise SystemExit(f"the recipe's train.batch_size {batch} does not split over --cores {args.cores}")
    overrides = [f"train.iterations={args.steps}", f"train.log_every={max(1, args.steps // 5)}",
                 f"train.ckpt_every={args.steps * 10}", "train.warmup=10"]
    one = [sys.executable, "-m", "semifer.cli"]
    many = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.cores}", "-m", "semifer.cli"]
    settings = {  # launcher, per-setting overrides
        "1 process, 1 thread": (one, ["train.threads=1"]),
        f"1 process, {args.cores} threads": (one, [f"train.threads={args.cores}"]),
        f"{args.cores} processes, 1 thread each": (many, ["train.threads=1", f"train.batch_size={batch // args.cores}"]),
    }
    env = dict(os.environ, OMP_NUM_THREADS="1")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (launcher, extra)) in enumerate(settings.items()):
            out = os.path.join(tmp, str(i))
            cmd = launcher + ["pretrain", "--config", args.config, "--data", args.data, "--out", out] + overrides + extra
            rows[name] = run(cmd, out, env)
            print(json.dumps({"setting": name, "global_batch": batch, "steps": args.steps, **rows[name]}), flush=True)
    base = rows["1 process, 1 thread"]["images_per_s"]
    print(json.dumps({"speedup_over_one_thread": {k: round(v["images_per_s"] / base, 2) for k, v in rows.items()},
                      "cpu": cpu_name(), "cores": args.cores}))


if __name__ == "__main__":
    main()
