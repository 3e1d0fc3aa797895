"""FER2013 benchmark harness: the same budget for every algorithm, results as JSON lines.

    python benchmarks/fer2013.py --algorithms supervised fixmatch --labels-per-class 100 \
        --iterations 3000 --seeds 0 [--test folder:/other/test] [key=value ...]

Extracts ``../shared/datasets/fer2013.tar.gz`` once (to ``--data-root``) unless ``--data`` names
a copy, trains one run per (labels, seed, algorithm) with ``semifer train``, and prints one JSON
object per run (val accuracy, macro-F1, wall minutes, images/s, the pseudo-label accuracy and
mask-ratio curves, and which val images it got right), appending it to ``--results``.
``benchmarks/paired.py`` then tests each row against supervised from the results file alone.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TAR = os.path.join(HERE, "..", "..", "shared", "datasets", "fer2013.tar.gz")


def extracted(tar_path: str, root: str) -> str:
    """Path of the extracted ``fer2013`` folder, extracting the archive on first use."""
    target = os.path.join(root, "fer2013")
    if not os.path.isdir(os.path.join(target, "train")):
        if not os.path.exists(tar_path):
            sys.exit(f"FER2013 archive {tar_path} not found; pass --data fer2013:/path/to/fer2013")
        os.makedirs(root, exist_ok=True)
        with tarfile.open(tar_path) as tar:
            tar.extractall(root, filter="data")
    return target


def curves(run: str) -> dict:
    """Pseudo-label accuracy / mask ratio per logged step, and eval accuracy per step."""
    out = {"step": [], "pl_acc": [], "mask": [], "eval_step": [], "eval_accuracy": []}
    with open(os.path.join(run, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if "eval_accuracy" in rec:
                out["eval_step"].append(rec["step"])
                out["eval_accuracy"].append(rec["eval_accuracy"])
            elif "pl_acc" in rec:
                out["step"].append(rec["step"])
                out["pl_acc"].append(rec["pl_acc"])
                out["mask"].append(rec["mask"])
    return out


def val_correct(run: str) -> dict:
    """Right/wrong per val image as a '0'/'1' string in id order, with the fingerprint of the
    images and labels it refers to: enough for a paired test once the run folder is gone."""
    from semifer.engine.evaluate import correctness, read_predictions

    fingerprint, right = correctness(read_predictions(os.path.join(run, "test_predictions.csv")))
    return {"val_fingerprint": fingerprint, "val_correct": "".join("1" if r else "0" for r in right)}


def machine() -> dict:
    """What ran the benchmark: float results differ between CPU models (a seed rerun on another
    CPU moved supervised FER2013 by a point, docs/benchmarks.md section 1d)."""
    from importlib.metadata import version

    cpu = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": version("torch")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="", help="dataset spec; default: the extracted ../shared archive")
    p.add_argument("--tar", default=DEFAULT_TAR)
    p.add_argument("--data-root", default="/tmp/semifer-data")
    p.add_argument("--algorithms", nargs="+", default=["supervised", "fixmatch"])
    p.add_argument("--labels-per-class", nargs="+", type=int, default=[100])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--config", default=os.path.join(HERE, "..", "recipes", "fer2013_cpu.yaml"))
    p.add_argument("--iterations", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--uratio", type=int)
    p.add_argument("--model")
    p.add_argument("--test", default="", help="also evaluate every run on this dataset spec")
    p.add_argument("--test-split", default="test")
    p.add_argument("--out-root", default="runs/bench/fer2013")
    p.add_argument("--results", default=os.path.join(HERE, "results", "fer2013.jsonl"))
    p.add_argument("--tag", default="", help="suffix of the run folders, to keep variants apart")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    args = p.parse_args()

    data = args.data or f"fer2013:{extracted(args.tar, args.data_root)}"
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    for lpc in args.labels_per_class:
        for seed in args.seeds:
            for algo in args.algorithms:
                run = os.path.join(args.out_root, f"{algo}_lpc{lpc}_s{seed}{args.tag}")
                cmd = [sys.executable, "-m", "semifer.cli", "train", "--config", args.config, "--data", data,
                       "--out", run, f"algorithm.name={algo}", f"data.labels_per_class={lpc}",
                       f"data.seed={seed}", f"train.seed={seed}", "data.test_split=val"]
                for key, val in (("iterations", args.iterations), ("batch_size", args.batch), ("uratio", args.uratio)):
                    if val is not None:
                        cmd.append(f"train.{key}={val}")
                if args.model:
                    cmd.append(f"model.name={args.model}")
                cmd += args.overrides
                if os.path.exists(os.path.join(run, "ckpt", "last_state.pt")):
                    cmd.append("resume=true")
                if not os.path.exists(os.path.join(run, "summary.json")):
                    subprocess.run(cmd, check=True)
                with open(os.path.join(run, "summary.json")) as f:
                    s = json.load(f)
                row = {"dataset": data, "algorithm": algo, "labels_per_class": lpc, "seed": seed,
                       "model": s["model"], "iterations": s["iterations"], "val_accuracy": s["accuracy"],
                       "val_macro_f1": s["macro_f1"], "wall_min": round(s["wall_s"] / 60, 2),
                       "images_per_s": s["images_per_s"], "run": run, "overrides": args.overrides,
                       "curves": curves(run), **val_correct(run), "machine": machine()}
                if args.test:
                    ev = subprocess.run([sys.executable, "-m", "semifer.cli", "eval", "--checkpoint", run,
                                         "--data", args.test, "--split", args.test_split, "--json"],
                                        check=True, capture_output=True, text=True)
                    m = json.loads(ev.stdout)
                    row["extra_test"] = {"data": args.test, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
                print(json.dumps(row), flush=True)
                with open(args.results, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
