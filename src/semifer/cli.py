"""The ``semifer`` command line.

    semifer train --config recipes/x.yaml [--data SPEC] [--out DIR] key=value ...
    semifer eval --checkpoint RUN_DIR --data SPEC [--split test] [--json]
    semifer compare RUN_DIR ... [--eval]
    semifer list algorithms|datasets|models
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys


# Modules with a ``register(subparsers)`` function that adds further subcommands.
COMMAND_MODULES: list[str] = ["semifer.predict.cli", "semifer.analysis.cli", "semifer.ssl.cli"]


def _train(args) -> int:
    from semifer.config import command_overrides, load_config
    from semifer.engine.train import train

    cfg = load_config(args.config, command_overrides(args, "data.train"))
    summary = train(cfg)
    return 130 if summary.get("interrupted") else 0


def _eval(args) -> int:
    import numpy as np

    from semifer.data.base import open_split
    from semifer.data.cache import decode_split
    from semifer.engine.evaluate import predict_probs, write_eval
    from semifer.engine.model_io import load_fused_model
    from semifer.evaluation.metrics import metrics_table
    from semifer.models.io import load_model, resolve_device

    device = resolve_device("auto")
    model, meta = load_model(args.checkpoint, weights=args.weights, device=device)
    split = open_split(args.data, split=args.split)
    dec = decode_split(split, meta["size"], meta["in_chans"], args.cache_dir)
    lookup = {c: i for i, c in enumerate(meta["classes"])}
    labels = np.array([lookup.get(split.classes[y], -1) for y in split.labels])
    keep = dec.ok & (labels >= 0)
    skipped_classes = sorted({split.classes[y] for y in split.labels} - set(lookup))
    if not 0 <= args.shift < 0.5:
        raise SystemExit(f"semifer eval: --shift {args.shift}; expected a share of the image side in [0, 0.5), e.g. 0.06")
    tta = {"flip": args.flip, "shift": args.shift}
    probs = predict_probs(model, np.asarray(dec.images[np.flatnonzero(keep)]), device, meta["mean"], meta["std"], **tta)
    out = args.out or os.path.join(args.checkpoint if os.path.isdir(args.checkpoint) else ".", "eval")
    ids = [split.ids[i] for i in np.flatnonzero(keep)]
    metrics = write_eval(out, probs, labels[keep], meta["classes"], name="metrics", ids=ids, extra={
        "data": args.data, "split": args.split, "skipped_unreadable": int((~dec.ok).sum()),
        "skipped_classes_not_trained": skipped_classes,
        "temperature": meta.get("temperature", 1.0),   # 1.0: no `semifer calibrate` fit applied
        "target_prior": meta.get("target_prior"),     # None: no `semifer adapt-prior` estimate applied
        "test_time": tta})
    fused, _ = load_fused_model(args.checkpoint, device=device)
    if fused is not None:  # the algorithm's own predictor (SIT-FER's fusion), beside the classifier
        fprobs = predict_probs(fused, np.asarray(dec.images[np.flatnonzero(keep)]), device, meta["mean"], meta["std"],
                               **tta)
        fm = write_eval(out, fprobs, labels[keep], meta["classes"], name="metrics_fused", ids=ids)
        metrics.update(fused_accuracy=fm["accuracy"], fused_macro_f1=fm["macro_f1"])
        with open(os.path.join(out, "metrics.json"), "w") as f:  # the file holds what --json prints
            json.dump(metrics, f, indent=2)
    # the JSON (~80 lines with the confusion matrix) is for scripts: a short table for people
    print(json.dumps(metrics, indent=2) if args.json else metrics_table(metrics))
    print(f"metrics.json, confusion matrix and reliability diagram written to {out}", file=sys.stderr)
    return 0


def _compare(args) -> int:
    from semifer.engine.evaluate import correctness, read_predictions
    from semifer.evaluation.metrics import mcnemar

    # the training run's final test (summary.json), or what `semifer eval --out RUN/eval` wrote
    metrics_file, preds_file = ("eval/metrics.json", "eval/metrics_predictions.csv") if args.eval \
        else ("summary.json", "test_predictions.csv")
    rows = []
    for run in args.runs:
        path = os.path.join(run, metrics_file)
        if not os.path.exists(path):
            print(f"{run}: no {metrics_file} ({'run semifer eval --out RUN/eval' if args.eval else 'unfinished run?'})",
                  file=sys.stderr)
            continue
        with open(path) as f:
            s = json.load(f)
        if args.eval:   # the run's own summary names the algorithm and the labels it used
            with open(os.path.join(run, "summary.json")) as f:
                s = {**json.load(f), **s}
        rows.append((run, s["algorithm"], s["labels_used"], s["accuracy"], s["macro_f1"], s["wall_s"] / 60))
    if not rows:
        return 1
    w = max(len("run"), *(len(r[0]) for r in rows)) + 2
    print(f"{'run':<{w}}{'algorithm':<14}{'labels':>8}{'accuracy':>10}{'macro-F1':>10}{'minutes':>9}")
    for r in rows:
        print(f"{r[0]:<{w}}{r[1]:<14}{r[2]:>8}{r[3]:>10.4f}{r[4]:>10.4f}{r[5]:>9.1f}")

    # paired test of every run against the first, image by image
    ref = rows[0][0]
    preds = {}
    for run, *_ in rows:
        path = os.path.join(run, preds_file)
        preds[run] = correctness(read_predictions(path)) if os.path.exists(path) else None
    if len(rows) > 1 and preds[ref] is not None:
        print(f"\nagainst {ref} (McNemar's exact test on the images one run gets right and the other wrong):")
    for run, *_ in rows[1:]:
        a, b = preds[ref], preds[run]
        if a is None or b is None:
            print(f"{run}: not paired: no {preds_file} in {ref if a is None else run}")
            continue
        if a[0] != b[0]:
            print(f"{run}: not paired: its test images or labels differ from {ref}'s")
            continue
        right_ref, right_run = a[1], b[1]
        t = mcnemar(right_run, right_ref)
        delta = 100 * (right_run.mean() - right_ref.mean())
        print(f"{run}: {delta:+.2f} points; right only here {t['only_a']}, only in the reference "
              f"{t['only_b']}; p = {t['p_value']:.2g}")
    return 0


def _list(args) -> int:
    if args.what == "algorithms":
        from semifer.algorithms import list_algorithms
        names = list_algorithms()
    elif args.what == "datasets":
        import semifer.data.readers  # noqa: F401
        from semifer.data.base import DATASETS
        names = DATASETS.names()
    else:
        from semifer.models import list_models
        names = list_models()
    print("\n".join(names))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="semifer", description="Semi-supervised facial expression recognition")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model (any algorithm) and evaluate it")
    t.add_argument("--config", help="YAML recipe (see recipes/)")
    t.add_argument("--data", help="training dataset spec, e.g. fer2013:/data/fer2013 (= data.train=...)")
    t.add_argument("--out", help="run folder (= out=...)")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.iterations=2000")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="evaluate a trained run on a dataset split")
    e.add_argument("--checkpoint", required=True, help="run folder or .safetensors file")
    e.add_argument("--data", required=True, help="dataset spec, e.g. folder:/photos/test")
    e.add_argument("--split", default="test")
    e.add_argument("--weights", default="auto", choices=["auto", "ema", "model"])
    e.add_argument("--out", help="folder for metrics.json and PNGs (default RUN/eval)")
    e.add_argument("--json", action="store_true", help="print metrics.json instead of the short table")
    e.add_argument("--cache-dir", default=".cache/semifer")
    e.add_argument("--flip", action="store_true", help="test-time mirror: average each image's and its mirror's "
                                                        "probabilities (train.eval_flip)")
    e.add_argument("--shift", type=float, default=0.0, help="test-time shifts: also average 8 copies moved by this "
                                                            "share of the side, e.g. 0.06 (train.eval_shift)")
    e.set_defaults(func=_eval)

    c = sub.add_parser("compare", help="finished runs' test metrics, each paired-tested against the first")
    c.add_argument("runs", nargs="+")
    c.add_argument("--eval", action="store_true",
                   help="use RUN/eval (written by semifer eval --out RUN/eval) instead of the run's final test")
    c.set_defaults(func=_compare)

    ls = sub.add_parser("list", help="print a registry, one name a line")
    ls.add_argument("what", choices=["algorithms", "datasets", "models"])
    ls.set_defaults(func=_list)

    for module in COMMAND_MODULES:  # each adds its own subcommands, keeping this file short
        importlib.import_module(module).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # progress lines appear promptly in log files
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as e:
        if os.environ.get("SEMIFER_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"semifer {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
