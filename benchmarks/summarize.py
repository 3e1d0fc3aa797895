"""One row per finished run folder: test accuracy, macro-F1, wall time, and what the
pseudo-labels looked like over the last quarter of training (mask ratio, accuracy of the used
pseudo-labels and of all of them against the hidden true labels).

    python benchmarks/summarize.py runs/bench/fer2013/* [--markdown]

Prints one JSON object per run (or a markdown table with ``--markdown``). Runs without a
``summary.json`` are reported with their last logged step, so an unfinished run is visible as such.
"""
from __future__ import annotations

import argparse
import json
import os


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def summarize(run: str) -> dict:
    logs, evals = [], []
    with open(os.path.join(run, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            (evals if "eval_accuracy" in rec else logs).append(rec)
    last_step = logs[-1]["step"] if logs else 0
    tail = [r for r in logs if r["step"] > 0.75 * last_step]  # the last quarter of the run
    row = {"run": run, "last_step": last_step,
           "mask": _mean([r["mask"] for r in tail if "mask" in r]),
           "pl_acc": _mean([r["pl_acc"] for r in tail if "pl_acc" in r and r.get("mask", 0) > 0]),
           "pl_acc_all": _mean([r["pl_acc_all"] for r in tail if "pl_acc_all" in r]),
           "evals": {r["step"]: r["eval_accuracy"] for r in evals}}
    extra = sorted({k for r in tail for k in r if k.startswith(("pl_acc_", "mask_", "neg_", "snl_"))} - {"pl_acc_all"})
    row.update({k: _mean([r[k] for r in tail if k in r]) for k in extra})
    path = os.path.join(run, "summary.json")
    if os.path.exists(path):
        with open(path) as f:
            s = json.load(f)
        row.update(finished=True, algorithm=s["algorithm"], model=s["model"], iterations=s["iterations"],
                   accuracy=round(s["accuracy"], 4), macro_f1=round(s["macro_f1"], 4),
                   wall_min=round(s["wall_s"] / 60, 1), images_per_s=s["images_per_s"])
        for k in ("fused_accuracy", "fused_macro_f1"):
            if k in s:
                row[k] = round(s[k], 4)
    else:
        row["finished"] = False
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()
    rows = [summarize(r) for r in args.runs if os.path.exists(os.path.join(r, "metrics.jsonl"))]
    if not args.markdown:
        for r in rows:
            print(json.dumps(r))
        return
    print("| run | accuracy | macro-F1 | mask (last 25 %) | used pseudo-label acc. | all pseudo-label acc. | wall min |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        acc = f"{100 * r['accuracy']:.2f}" if r["finished"] else f"unfinished (step {r['last_step']})"
        f1 = f"{100 * r['macro_f1']:.2f}" if r["finished"] else ""
        pct = lambda v: "" if v is None else f"{100 * v:.1f}"  # noqa: E731
        print(f"| {os.path.basename(r['run'].rstrip('/'))} | {acc} | {f1} | {pct(r['mask'])} | {pct(r['pl_acc'])} "
              f"| {pct(r['pl_acc_all'])} | {r.get('wall_min', '')} |")


if __name__ == "__main__":
    main()
