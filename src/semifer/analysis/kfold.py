"""K-fold cross-validation over a training set (SSFER Table 5 style).

Fold k is an ordinary training run with ``data.protocol=kfold data.folds=K data.fold=k``: the
stratified fold k of the train split is the test set and the other K - 1 folds are the labelled
pool (``data/protocols.py: kfold``). ``data.kfold_labels`` (labels_per_class, ratio or budget)
keeps only that many labels in the pool and, with ``data.unlabelled=rest``, makes the rest of
it the unlabelled set: semi-supervised K-fold with any algorithm. Runs live in ``OUT/fold<k>``;
a fold with a summary.json is finished and skipped, one with a checkpoint is resumed, so an
interrupted K-fold continues.
"""
from __future__ import annotations

import json
import os

import numpy as np


def fold_overrides(folds: int, fold: int, run: str) -> list[str]:
    return ["data.protocol=kfold", f"data.folds={folds}", f"data.fold={fold}", f"out={run}"]


def run_kfold(config: str | None, overrides: list[str], folds: int, out: str) -> dict:
    """Train (or reuse) every fold, then write ``OUT/kfold.json`` and ``OUT/kfold.md``.
    Returns the table, or ``{"interrupted": True, ...}`` when a fold was stopped."""
    from semifer.config import load_config
    from semifer.engine.train import train

    if folds < 2:
        raise ValueError(f"--folds {folds}: K-fold needs at least 2 folds")
    summaries = []
    for k in range(folds):
        run = os.path.join(out, f"fold{k}")
        done = os.path.join(run, "summary.json")
        if os.path.exists(done):
            print(f"fold {k}: finished earlier, reading {done}")
            with open(done) as f:
                summaries.append(json.load(f))
            continue
        resume = os.path.exists(os.path.join(run, "ckpt", "last_state.pt"))
        print(f"fold {k}/{folds}: {'resuming' if resume else 'training'} {run}")
        cfg = load_config(config, list(overrides) + fold_overrides(folds, k, run) + (["resume=true"] if resume else []))
        summary = train(cfg)
        if summary.get("interrupted"):
            return {"interrupted": True, "fold": k}
        summaries.append(summary)
    table = kfold_table(summaries)
    table.update(folds=folds, out=out, config=config, overrides=list(overrides))
    with open(os.path.join(out, "kfold.json"), "w") as f:
        json.dump(table, f, indent=2)
    with open(os.path.join(out, "kfold.md"), "w") as f:
        f.write(markdown_table(table) + "\n")
    return table


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value)."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def kfold_table(summaries: list[dict]) -> dict:
    """Per-fold accuracy / macro-F1 / ECE and their mean ± std."""
    rows = [{"fold": i, "accuracy": s["accuracy"], "macro_f1": s["macro_f1"], "ece": s.get("ece"),
             "num_images": s["num_images"], "labels_used": s.get("labels_used"), "run": s.get("run")}
            for i, s in enumerate(summaries)]
    table = {"rows": rows}
    for key in ("accuracy", "macro_f1", "ece"):
        vals = [r[key] for r in rows if r[key] is not None]
        if vals:
            m, s = mean_std(vals)
            table[f"{key}_mean"], table[f"{key}_std"] = m, s
    return table


def markdown_table(table: dict) -> str:
    lines = ["| fold | test images | labels used | accuracy % | macro-F1 % | ECE |", "|---|---|---|---|---|---|"]
    for r in table["rows"]:
        ece = f"{r['ece']:.4f}" if r["ece"] is not None else "-"
        lines.append(f"| {r['fold']} | {r['num_images']} | {r['labels_used']} | {100 * r['accuracy']:.2f} | "
                     f"{100 * r['macro_f1']:.2f} | {ece} |")
    ece = f"{table['ece_mean']:.4f} ± {table['ece_std']:.4f}" if "ece_mean" in table else "-"
    lines.append(f"| mean ± std | | | {100 * table['accuracy_mean']:.2f} ± {100 * table['accuracy_std']:.2f} | "
                 f"{100 * table['macro_f1_mean']:.2f} ± {100 * table['macro_f1_std']:.2f} | {ece} |")
    return "\n".join(lines)
