"""Label-shift adaptation of finished benchmark runs (``semifer adapt-prior``, analysis/prior.py):
for each row of a results file, EM estimates the class prior of the run's unlabelled training
faces (all of them for a run without) under its model, measured from its mean prediction on its
labelled faces, and val is scored again with the model's probabilities moved
from the prior of its labels to that estimate. Writes one row per run, shaped like
``benchmarks/fer2013.py``'s with ``adapt_prior`` added to its overrides, so ``paired.py`` pairs
the adapted runs with each other:

    python benchmarks/prior_shift.py --data fer2013:/path/fer2013 --rows benchmarks/results/fer2013_hour.jsonl \
        --match _hour --out benchmarks/results/fer2013_prior.jsonl
    python benchmarks/paired.py benchmarks/results/fer2013_prior.jsonl --markdown

``--shift 0.06`` also averages val over the test-time shifts (``train.eval_shift``); write those
rows to a file of their own (``--out``), since a run is scored once a file.

The run folders must be on this machine (the model, its config and data.json). Prints a JSON line
per run: accuracy and macro-F1 before and after, and the estimated prior.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch


def adapted_row(row: dict, data_spec: str, device: torch.device, store: bool = False, shift: float = 0.0) -> dict:
    from semifer.config import load_config
    from semifer.data.prepare import prepare
    from semifer.engine.evaluate import correctness, predict_probs
    from semifer.evaluation.metrics import classification_metrics
    from semifer.evaluation.prior import em_prior
    from semifer.models.io import load_model

    run = row["run"]
    cfg = load_config(os.path.join(run, "config.yaml"), [f"data.train={data_spec}"])
    data = prepare(cfg.data)
    model, meta = load_model(run, device=device, calibrated=False, adapted=False)
    flip = bool(cfg.train.eval_flip)
    probs = lambda images: predict_probs(model, images, device, meta["mean"], meta["std"], 512, flip=flip)
    # the reference prior: the model's mean prediction on its labelled faces (analysis/prior.py)
    pi_s = probs(data.train_images[data.labelled]).mean(0).astype(np.float64)
    pi_t, iters = em_prior(probs(data.train_images[data.unlabelled]) if len(data.unlabelled) else probs(data.train_images), pi_s)
    # test-time shifts (train.eval_shift) on val only: the prior ratio is the classes' frequencies,
    # which the training faces' mirror-only probabilities estimate at a ninth of the cost
    p_val = predict_probs(model, data.test_images, device, meta["mean"], meta["std"], 512, flip=flip, shift=shift)
    adapted = p_val * (pi_t / pi_s)
    adapted /= adapted.sum(1, keepdims=True)
    before = classification_metrics(data.test_labels, p_val, data.classes)
    after = classification_metrics(data.test_labels, adapted, data.classes)
    preds = {i: (data.classes[y], data.classes[int(p.argmax())]) for i, y, p in zip(data.test_ids, data.test_labels, adapted)}
    fingerprint, right = correctness(preds)
    summary = {"run": run, "acc_before": round(100 * before["accuracy"], 2), "acc_after": round(100 * after["accuracy"], 2),
               "f1_before": round(100 * before["macro_f1"], 2), "f1_after": round(100 * after["macro_f1"], 2),
               "prior": dict(zip(data.classes, np.round(pi_t, 4).tolist())), "em_iterations": iters}
    print(json.dumps(summary), flush=True)
    if store:  # what `semifer adapt-prior` stores: eval, predict and a Noisy Student teacher use it
        from semifer.analysis.prior import adapt_prior

        unl = data.unlabelled if len(data.unlabelled) else np.arange(len(data.train_images))
        stored = adapt_prior(run, data.train_images[unl], device=device, source_images=data.train_images[data.labelled],
                             info={"data": data_spec, "split": "train (unlabelled)"})
        print(f"stored {stored['path']}", flush=True)
    out = {k: v for k, v in row.items() if k not in ("curves",)}
    out.update(val_accuracy=after["accuracy"], val_macro_f1=after["macro_f1"], val_fingerprint=fingerprint,
               val_correct="".join("1" if r else "0" for r in right), overrides=list(row["overrides"]) + ["adapt_prior"] + ([f"train.eval_shift={shift}"] if shift else []),
               unadapted_val_accuracy=row["val_accuracy"], target_prior=summary["prior"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the runs' dataset spec, e.g. fer2013:/path/fer2013")
    ap.add_argument("--rows", nargs="+", required=True, help="results files of benchmarks/fer2013.py")
    ap.add_argument("--match", nargs="*", default=[], help="keep runs whose folder name contains one of these")
    ap.add_argument("--out", required=True, help="results file to append the adapted rows to")
    ap.add_argument("--store", action="store_true", help="also store the estimate beside each run's weights "
                                                         "(as semifer adapt-prior does)")
    ap.add_argument("--shift", type=float, default=0.0, help="score val with test-time shifts of this share of "
                                                                 "the side (train.eval_shift), e.g. 0.06")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [json.loads(line) for path in args.rows for line in open(path) if line.strip()]
    done = {json.loads(line)["run"] for line in open(args.out)} if os.path.exists(args.out) else set()
    seen = set()
    for row in rows:
        name = os.path.basename(row["run"])
        if (args.match and not any(m in name for m in args.match)) or row["run"] in seen:
            continue
        if row["run"] in done and not args.store:
            continue
        if not os.path.exists(os.path.join(row["run"], "summary.json")):
            continue
        seen.add(row["run"])
        out = adapted_row(row, args.data, torch.device("cpu"), args.store, args.shift)
        if row["run"] not in done:
            with open(args.out, "a") as f:
                f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
