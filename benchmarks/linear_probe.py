"""How much a self-supervised encoder knows before any fine-tuning: its frozen features of the
labelled faces of a split, read out by a linear classifier (multinomial logistic regression on
standardised features) and by a k-nearest-neighbour vote (cosine), scored on the test split.
Compares encoders of one backbone (``semifer pretrain``'s ``encoder.safetensors``, or ``random``):

    python benchmarks/linear_probe.py --data fer2013:/path/fer2013 \
        --encoders random runs/simclr/encoder.safetensors --seeds 0 1

The data protocol (labels per class, split seed, size) and the backbone come from ``--config``
(default: the CPU-hour semi-supervised recipe), so the labelled faces are those the fine-tuning
runs of that split see. Prints one JSON line per (encoder, split).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@torch.no_grad()
def features(model, images: np.ndarray, mean, std, batch_size: int = 512) -> np.ndarray:
    """Pooled features [N, D] of uint8 images [N, H, W, C], the model in eval mode."""
    from semifer.data.transforms import normalize

    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).permute(0, 3, 1, 2)
        out.append(model(normalize(x, mean, std))[0].float())
    return torch.cat(out).numpy()


def probe(train_f: np.ndarray, train_y: np.ndarray, test_f: np.ndarray, test_y: np.ndarray, k: int = 20) -> dict:
    """Accuracy on the test features of a logistic-regression probe and of a k-NN vote."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_f)
    clf = LogisticRegression(max_iter=3000, C=1.0).fit(scaler.transform(train_f), train_y)
    linear = float((clf.predict(scaler.transform(test_f)) == test_y).mean())
    a = train_f / np.linalg.norm(train_f, axis=1, keepdims=True).clip(1e-8)
    b = test_f / np.linalg.norm(test_f, axis=1, keepdims=True).clip(1e-8)
    nearest = np.argsort(-(b @ a.T), axis=1)[:, :k]
    votes = np.apply_along_axis(np.bincount, 1, train_y[nearest], minlength=int(train_y.max()) + 1)
    return {"linear_probe": linear, f"knn{k}": float((votes.argmax(1) == test_y).mean())}


def main() -> None:
    sys.path.insert(0, os.path.join(ROOT, "src"))
    from semifer.config import load_config
    from semifer.data.prepare import prepare
    from semifer.models.io import build_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset spec, e.g. fer2013:/path/fer2013")
    ap.add_argument("--encoders", nargs="+", required=True, help="encoder files or run folders; 'random' for none")
    ap.add_argument("--config", default=os.path.join(ROOT, "recipes", "fer2013_cpu_hour_ssl.yaml"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="label splits (data.seed)")
    ap.add_argument("-k", type=int, default=20, help="neighbours of the k-NN vote")
    ap.add_argument("overrides", nargs="*", help="config overrides k=v")
    args = ap.parse_args()
    for seed in args.seeds:
        cfg = load_config(args.config, [f"data.train={args.data}", f"data.seed={seed}", *args.overrides])
        data = prepare(cfg.data)
        train_images, train_y = data.train_images[data.labelled], data.train_labels[data.labelled]
        for encoder in args.encoders:
            cfg.model.init = "" if encoder == "random" else encoder
            cfg.model.init_head = False
            torch.manual_seed(0)
            model = build_model(cfg.model, len(data.classes), data.channels, cfg.data.size)
            f_train = features(model, train_images, cfg.data.mean, cfg.data.std)
            f_test = features(model, data.test_images, cfg.data.mean, cfg.data.std)
            row = {"encoder": encoder, "split": seed, "labelled": int(len(train_y)), "test": int(len(data.test_labels)),
                   "dim": int(f_train.shape[1])}
            row.update({k: round(100 * v, 2) for k, v in probe(f_train, train_y, f_test, data.test_labels, args.k).items()})
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
