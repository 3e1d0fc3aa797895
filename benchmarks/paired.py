"""McNemar's exact test of every benchmark row against the reference algorithm on the same split,
from the results file alone (rows written by ``benchmarks/fer2013.py`` carry which val images
each run got right, so the run folders are not needed).

    python benchmarks/paired.py [benchmarks/results/fer2013.jsonl ...] [--reference supervised] [--markdown]

Rows are paired when dataset, labels per class, seed, iterations and model agree and their
val fingerprints (images and labels) are equal. The reference is the last such row of
``--reference`` without overrides. Rows without per-image results (written before the harness
stored them) are skipped.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from semifer.evaluation.metrics import mcnemar

HERE = os.path.dirname(os.path.abspath(__file__))


def split_key(row: dict) -> tuple:
    return row["dataset"], row["labels_per_class"], row["seed"], row["iterations"], row["model"]


def reference_for(row: dict, rows: list[dict], reference: str, reference_run: str = "") -> dict | None:
    """The reference row on ``row``'s split: the run whose folder contains ``reference_run`` if
    given, else the ``reference`` algorithm trained with a subset of ``row``'s overrides (the most
    specific such subset: a shortened recipe's supervised row for the shortened recipe's runs)."""
    same = [r for r in rows if r is not row and split_key(r) == split_key(row)
            and r["val_fingerprint"] == row["val_fingerprint"]]
    if reference_run:  # the run of that exact folder name, else those whose name contains it
        exact = [r for r in same if os.path.basename(r["run"]) == reference_run]
        same = exact or [r for r in same if reference_run in os.path.basename(r["run"])]
    else:
        same = [r for r in same if r["algorithm"] == reference and set(r["overrides"]) <= set(row["overrides"])]
    return max(same, key=lambda r: len(r["overrides"]), default=None)


def paired_rows(rows: list[dict], reference: str = "supervised", reference_run: str = "") -> list[dict]:
    """One dict per non-reference row that has a reference on its split: accuracy gain and test."""
    rows = [r for r in rows if "val_correct" in r]
    out = []
    for r in rows:
        ref = reference_for(r, rows, reference, reference_run)
        if ref is None:
            continue
        right, right_ref = (np.frombuffer(x.encode(), np.uint8) == ord("1") for x in (r["val_correct"], ref["val_correct"]))
        t = mcnemar(right, right_ref)
        out.append({"algorithm": r["algorithm"], "overrides": r["overrides"], "seed": r["seed"],
                    "labels_per_class": r["labels_per_class"], "iterations": r["iterations"],
                    "accuracy": round(100 * right.mean(), 2), "reference_accuracy": round(100 * right_ref.mean(), 2),
                    "delta": round(100 * (right.mean() - right_ref.mean()), 2),
                    "only_run": t["only_a"], "only_reference": t["only_b"], "p_value": float(f"{t['p_value']:.2g}")})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="*", default=[os.path.join(HERE, "results", "fer2013.jsonl")],
                   help="one or more results files, read as one (e.g. a recipe's rows and its screens)")
    p.add_argument("--reference", default="supervised")
    p.add_argument("--reference-run", default="",
                   help="pair against the run whose folder name contains this (e.g. an ablation's full variant)")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()
    rows = []
    for path in args.results:
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    out = paired_rows(rows, args.reference, args.reference_run)
    if not args.markdown:
        for r in out:
            print(json.dumps(r))
        return
    ref = args.reference_run or args.reference
    print(f"| algorithm | overrides | seed | steps | acc. % | {ref} % | Δ | right only here / only {ref} | p |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in out:
        print(f"| {r['algorithm']} | {' '.join(r['overrides'])} | {r['seed']} | {r['iterations']} | {r['accuracy']:.2f} "
              f"| {r['reference_accuracy']:.2f} | {r['delta']:+.2f} | {r['only_run']} / {r['only_reference']} | {r['p_value']:.2g} |")


if __name__ == "__main__":
    main()
