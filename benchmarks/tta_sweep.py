"""Test-time views of trained models: accuracy without them, with the mirror (``train.eval_flip``)
and with the mirror plus shifts of each given number of pixels (``train.eval_shift``), on one
split. Prints one JSON line per model:

    python benchmarks/tta_sweep.py --data fer2013:/path/fer2013 --split val \
        --checkpoints src/semifer/weights/fer2013_cnn_fer.safetensors runs/bench/fer2013/RUN --pixels 2 3 4

The probabilities are the model's as ``semifer eval`` loads it (a stored temperature or prior
applied); bf16 autocast where the CPU has it natively, as training evaluates.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def sweep(checkpoint: str, data_spec: str, split: str, pixels: list[int], cache_dir: str) -> dict:
    from semifer.data.base import open_split
    from semifer.data.cache import decode_split
    from semifer.engine.evaluate import predict_probs, resolve_amp
    from semifer.models.io import load_model

    device = torch.device("cpu")
    model, meta = load_model(checkpoint, device=device)
    data = open_split(data_spec, split=split)
    dec = decode_split(data, meta["size"], meta["in_chans"], cache_dir)
    lookup = {c: i for i, c in enumerate(meta["classes"])}
    labels = np.array([lookup.get(data.classes[y], -1) for y in data.labels])
    keep = np.flatnonzero(dec.ok & (labels >= 0))
    images, y = np.asarray(dec.images[keep]), labels[keep]
    amp = resolve_amp("fast", device)

    def acc(**views) -> float:
        p = predict_probs(model, images, device, meta["mean"], meta["std"], 512, amp, **views)
        return round(100 * float((p.argmax(1) == y).mean()), 2)

    out = {"checkpoint": checkpoint, "images": int(len(y)), "amp": amp, "plain": acc(), "mirror": acc(flip=True)}
    out["mirror_and_shift_px"] = {px: acc(flip=True, shift=px / meta["size"]) for px in pixels}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--checkpoints", nargs="+", required=True, help="run folders or .safetensors files")
    ap.add_argument("--pixels", type=int, nargs="+", default=[2, 3, 4], help="shifts to try, in pixels")
    ap.add_argument("--cache-dir", default=".cache/semifer")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for ck in args.checkpoints:
        print(json.dumps(sweep(ck, args.data, args.split, args.pixels, args.cache_dir)), flush=True)


if __name__ == "__main__":
    main()
