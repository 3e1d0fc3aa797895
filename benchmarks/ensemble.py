"""Ensembles of finished benchmark runs: val scored with the mean of the members' probabilities
(each with its run's test-time views, mirror and shifts, and the class prior ``semifer adapt-prior`` stored beside
its weights, if any). Writes one row shaped like ``benchmarks/fer2013.py``'s, the first member's
with ``ensemble:<n>`` and the other members' names added to its overrides (and ``adapt_prior`` when
every member carries a stored prior), so ``paired.py`` pairs it
with the runs of the same split:

    python benchmarks/ensemble.py --data fer2013:/path/fer2013 --runs RUN_A RUN_B \
        --rows benchmarks/results/fer2013_hour.jsonl --out benchmarks/results/fer2013_ensemble.jsonl

The members must share the val images (the same dataset and split). Prints the accuracy of each
member and of the ensemble as one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch


def member_probs(run: str, data_spec: str, device: torch.device, prepared: dict | None = None):
    """(val probabilities [N, K], val labels, val ids, classes, adapted) of one run, as its
    evaluation makes them; ``adapted``: a prior stored by ``semifer adapt-prior`` was applied.
    ``prepared``: data already prepared, by data config, so members of one split decode it once."""
    from semifer.config import load_config
    from semifer.data.prepare import prepare
    from semifer.engine.evaluate import predict_probs
    from semifer.models.io import load_model

    cfg = load_config(os.path.join(run, "config.yaml"), [f"data.train={data_spec}"])
    prepared = {} if prepared is None else prepared
    key = repr(cfg.data)
    if key not in prepared:
        prepared[key] = prepare(cfg.data)
    data = prepared[key]
    model, meta = load_model(run, device=device)
    p = predict_probs(model, data.test_images, device, meta["mean"], meta["std"], 512, flip=bool(cfg.train.eval_flip),
                      shift=cfg.train.eval_shift)
    return p, data.test_labels, list(data.test_ids), list(data.classes), meta.get("target_prior") is not None


def ensemble_row(runs: list[str], data_spec: str, rows: list[dict], device: torch.device) -> dict:
    from semifer.engine.evaluate import correctness
    from semifer.evaluation.metrics import classification_metrics

    prepared: dict = {}
    members = [member_probs(run, data_spec, device, prepared) for run in runs]
    labels, ids, classes, _ = members[0][1:]
    for run, (_, y, i, c, _) in zip(runs, members):
        if list(i) != ids or not np.array_equal(y, labels) or c != classes:
            raise ValueError(f"{run}: its val images, labels or classes differ from {runs[0]}'s; "
                             "ensemble members must be evaluated on the same split")
    p = np.mean([m[0] for m in members], axis=0)
    metrics = classification_metrics(labels, p, classes)
    preds = {i: (classes[y], classes[int(q.argmax())]) for i, y, q in zip(ids, labels, p)}
    fingerprint, right = correctness(preds)
    accs = [round(100 * float((m[0].argmax(1) == labels).mean()), 2) for m in members]
    print(json.dumps({"members": runs, "member_acc": accs, "ensemble_acc": round(100 * metrics["accuracy"], 2),
                      "ensemble_f1": round(100 * metrics["macro_f1"], 2)}), flush=True)
    base = next((r for r in reversed(rows) if os.path.realpath(r["run"]) == os.path.realpath(runs[0])), None)
    if base is None:
        raise ValueError(f"{runs[0]}: no row of it in --rows (the ensemble row takes its split's keys from it)")
    out = {k: v for k, v in base.items() if k != "curves"}
    out.update(val_accuracy=metrics["accuracy"], val_macro_f1=metrics["macro_f1"], val_fingerprint=fingerprint,
               val_correct="".join("1" if r else "0" for r in right), member_accuracy=accs,
               overrides=list(base["overrides"]) + ["adapt_prior"] * all(m[4] for m in members)
               + [f"ensemble:{len(runs)}"] + [os.path.basename(os.path.normpath(r)) for r in runs[1:]],
               run=runs[0] + "+ensemble")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the runs' dataset spec, e.g. fer2013:/path/fer2013")
    ap.add_argument("--runs", nargs="+", required=True, help="run folders, at least two")
    ap.add_argument("--rows", nargs="+", required=True, help="results files holding the first run's row")
    ap.add_argument("--out", required=True, help="results file to append the ensemble row to")
    args = ap.parse_args()
    if len(args.runs) < 2:
        ap.error("--runs needs at least two run folders")
    torch.set_num_threads(1)
    rows = [json.loads(line) for path in args.rows for line in open(path) if line.strip()]
    row = ensemble_row(args.runs, args.data, rows, torch.device("cpu"))
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
