"""Write the package's default model from a finished training run.

    python scripts/ship_model.py runs/bench/fer2013/supervised_lpc100_s0_hour_all \
        [--out src/semifer/weights/fer2013_cnn_fer.safetensors]

Keeps only the weights the run evaluated (the EMA weights for recipes/fer2013_cpu_hour.yaml),
with the run's metadata (label names, preprocessing, model), so the file is half the size of the
training checkpoint; the checksum is recomputed over what is kept.
"""
from __future__ import annotations

import argparse
import os

from semifer import checkpoint as ckpt

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run folder (its ckpt/last.safetensors) or a .safetensors file")
    p.add_argument("--out", default=os.path.join(HERE, "..", "src", "semifer", "weights", "fer2013_cnn_fer.safetensors"))
    args = p.parse_args()
    file = ckpt.find_weights(args.run, "last")
    tensors, meta = ckpt.load_weights(file)
    which = meta.get("eval_weights", "model")
    kept = {k: v for k, v in tensors.items() if k.startswith(f"{which}.")}
    if not kept:
        raise SystemExit(f"{file} holds no {which!r} weights")
    meta = {**meta, "shipped_from": os.path.relpath(file), "eval_weights": which}
    ckpt.save_weights(args.out, kept, meta)
    print(f"{args.out}: {len(kept)} tensors ({which}), {os.path.getsize(args.out) / 1e6:.1f} MB, from {file}")


if __name__ == "__main__":
    main()
