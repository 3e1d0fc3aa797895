"""``semifer kfold|explain|attack|calibrate|report`` (added to the main CLI through ``register``).

    semifer kfold --config RECIPE --folds 5 [--data SPEC] [--out DIR] [key=value ...]
    semifer explain --checkpoint RUN --input IMAGE|FOLDER|SPEC [--out DIR] [--layer NAME]
    semifer attack --checkpoint RUN --data SPEC --eps 0,0.02,...,0.1 --region focused,unfocused,all
    semifer calibrate --checkpoint RUN --data SPEC --split val
    semifer report RUN_DIR ... [--out report.html]
"""
from __future__ import annotations

import json
import os
import sys


def register(sub) -> None:
    k = sub.add_parser("kfold", help="K-fold cross-validation: one run per fold, mean ± std table")
    k.add_argument("--config", help="YAML recipe (see recipes/)")
    k.add_argument("--folds", type=int, default=5)
    k.add_argument("--data", help="dataset spec whose train split is folded (= data.train=...)")
    k.add_argument("--out", help="folder of the fold runs and the table (default: the config's out)")
    k.add_argument("overrides", nargs="*", help="key=value overrides, as for `semifer train`")
    k.set_defaults(func=_kfold)

    e = sub.add_parser("explain", help="Grad-CAM overlays of a trained model's predictions")
    _model_args(e)
    e.add_argument("--input", required=True, help="face image, folder of face crops, or dataset spec")
    e.add_argument("--split", default="test", help="split of a dataset spec --input")
    e.add_argument("--limit", type=int, default=32, help="at most this many images of a folder or spec (0 = all)")
    e.add_argument("--layer", default="", help="module whose output is weighed (default: last map / ViT block)")
    e.add_argument("--target", default="pred", help="class explained: pred, true (spec inputs) or a class name")
    e.add_argument("--size", type=int, default=192, help="overlay size in px (faces are small)")
    e.add_argument("--detector", default="none", metavar="NAME",
                   help="none (inputs are face crops), auto or a detector name: explain every face of a photo")
    e.add_argument("--margin", type=float, default=0.2, help="context around a face box, per side (as predict)")
    e.add_argument("--max-side", type=int, default=1280, help="photos are shrunk to this for detection (as predict)")
    e.add_argument("--out", help="output folder (default RUN/explain)")
    e.set_defaults(func=_explain)

    a = sub.add_parser("attack", help="FGSM restricted to Grad-CAM-focused or unfocused pixels")
    _model_args(a)
    a.add_argument("--data", required=True, help="dataset spec, e.g. fer2013:/data/fer2013")
    a.add_argument("--split", default="test")
    a.add_argument("--eps", default="0,0.02,...,0.1",
                   help="perturbation sizes in [0, 1] pixel units (0.02 = 5.1 grey levels), before normalisation")
    a.add_argument("--region", default="focused,unfocused,all", help="focused, unfocused, all, or a comma list")
    a.add_argument("--threshold", type=float, default=0.3,
                   help="focused = Grad-CAM > threshold (maps scaled to [0, 1])")
    a.add_argument("--layer", default="")
    a.add_argument("--limit", type=int, default=0, help="seeded random subset of this many images (0 = all)")
    a.add_argument("--out", help="output folder (default RUN/attack)")
    a.set_defaults(func=_attack)

    c = sub.add_parser("calibrate", help="fit a temperature on a validation split, store it with the checkpoint")
    _model_args(c)
    c.add_argument("--data", required=True, help="labelled validation data (not the test set)")
    c.add_argument("--split", default="val")
    c.add_argument("--holdout", type=float, default=0.5,
                   help="share of --data kept out of the fit to report ECE/NLL after scaling (0 = none)")
    c.add_argument("--limit", type=int, default=0, help="seeded random subset of this many images (0 = all)")
    c.add_argument("--remove", action="store_true", help="delete a stored temperature instead")
    c.set_defaults(func=_calibrate)

    p = sub.add_parser("adapt-prior", help="estimate the class prior of unlabelled target faces (EM) and "
                                           "adapt the checkpoint's predictions to it")
    _model_args(p)
    p.add_argument("--data", help="unlabelled target faces: a dataset spec, a folder or an image (labels unused)")
    p.add_argument("--split", default="train", help="the split of a dataset spec")
    p.add_argument("--detector", default="none", help="find faces in photos first: auto or a detector name")
    p.add_argument("--source-data", help="the model's labelled training faces (a dataset spec or folder): the "
                                         "prior it predicts under is its mean prediction on them (default for a "
                                         "run folder: the faces its labelled.txt lists)")
    p.add_argument("--source-split", default="train")
    p.add_argument("--source-prior", type=float, nargs="+",
                   help="else: class frequencies of the training labels in the model's class order "
                        "(default: those stored with the checkpoint)")
    p.add_argument("--limit", type=int, default=0, help="seeded random subset of this many images (0 = all)")
    p.add_argument("--remove", action="store_true", help="delete a stored prior instead")
    p.set_defaults(func=_adapt_prior)

    r = sub.add_parser("report", help="one HTML page comparing run folders side by side")
    r.add_argument("runs", nargs="+", help="run folders (training runs, K-fold folders)")
    r.add_argument("--out", default="report.html")
    r.add_argument("--title", default="semifer report")
    r.set_defaults(func=_report)


def _model_args(p) -> None:
    p.add_argument("--checkpoint", required=True, help="run folder or .safetensors file")
    p.add_argument("--weights", default="auto", choices=["auto", "ema", "model"])
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir", default=".cache/semifer")


def _default_out(checkpoint: str, name: str) -> str:
    return os.path.join(checkpoint if os.path.isdir(checkpoint) else os.path.dirname(checkpoint) or ".", name)


def _kfold(args) -> int:
    from semifer.analysis.kfold import markdown_table, run_kfold
    from semifer.config import load_config

    overrides = list(args.overrides) + ([f"data.train={args.data}"] if args.data else [])
    out = args.out or load_config(args.config, overrides).out
    table = run_kfold(args.config, overrides, args.folds, out)
    if table.get("interrupted"):
        print(f"interrupted in fold {table['fold']}; run the same command again to continue", file=sys.stderr)
        return 130
    print(markdown_table(table))
    print(f"table written to {out}/kfold.md and {out}/kfold.json", file=sys.stderr)
    return 0


def _explain(args) -> int:
    from semifer.analysis.cam import grad_cam
    from semifer.analysis.data import image_inputs
    from semifer.analysis.explain import explain_targets, write_explanations
    from semifer.models.io import load_model, resolve_device

    device = resolve_device(args.device)
    model, meta = load_model(args.checkpoint, weights=args.weights, device=device)
    images, labels, names = image_inputs(args.input, meta, args.split, args.cache_dir, args.limit, args.detector,
                                         args.margin, args.max_side)
    classes = list(meta["classes"])
    targets = explain_targets(args.target, classes, labels, len(images))
    cams, logits = grad_cam(model, images, meta["mean"], meta["std"], targets, args.layer, device=device)
    out = args.out or _default_out(args.checkpoint, "explain")
    n = write_explanations(out, images, cams, logits, targets, labels, classes, names, args.size)
    print(f"{n} Grad-CAM overlays (image | map of the explained class) written to {out}; "
          f"examples.png holds the first {min(16, n)}")
    return 0


def _attack(args) -> int:
    from semifer.analysis.attack import REGIONS, fgsm_accuracy, parse_eps, write_fgsm
    from semifer.analysis.data import model_arrays
    from semifer.models.io import load_model, resolve_device

    eps = parse_eps(args.eps)
    regions = [r.strip() for r in args.region.split(",") if r.strip()]
    bad = [r for r in regions if r not in REGIONS]
    if bad or not regions:
        raise ValueError(f"--region {args.region!r}: expected one or more of {', '.join(REGIONS)}")
    device = resolve_device(args.device)
    model, meta = load_model(args.checkpoint, weights=args.weights, device=device)
    images, labels, _ = model_arrays(args.data, meta, args.split, args.cache_dir, args.limit)
    results = [fgsm_accuracy(model, images, labels, eps, r, meta["mean"], meta["std"], args.threshold,
                             args.layer, device=device, progress=True) for r in regions]
    out = args.out or _default_out(args.checkpoint, "attack")
    lines = write_fgsm(out, {"checkpoint": args.checkpoint, "data": args.data, "split": args.split,
                             "eps_units": "[0, 1] pixels", "results": results})
    print(f"FGSM accuracy % on {len(labels)} images of {args.data} ({args.split}); eps in [0, 1] pixel units")
    print("\n".join(lines))
    print(f"written to {out}/fgsm.json and fgsm.md", file=sys.stderr)
    return 0


def _remove(path: str) -> int:
    """``--remove``: delete what a command stored beside the weights."""
    if os.path.exists(path):
        os.remove(path)
    print(f"removed {path}" if not os.path.exists(path) else f"could not remove {path}")
    return 0


def _calibrate(args) -> int:
    from semifer.analysis.calibration import calibrate
    from semifer import checkpoint as ckpt
    from semifer.analysis.data import model_arrays
    from semifer.models.io import load_model, resolve_device, temperature_path

    path = temperature_path(ckpt.find_weights(args.checkpoint, "last"))
    if args.remove:
        return _remove(path)
    device = resolve_device(args.device)
    _, meta = load_model(args.checkpoint, weights=args.weights, calibrated=False)
    images, labels, _ = model_arrays(args.data, meta, args.split, args.cache_dir, args.limit)
    result = calibrate(args.checkpoint, images, labels, args.weights, args.holdout, device=device,
                       info={"data": args.data, "split": args.split})
    print(json.dumps(result, indent=2))
    rep = result.get("holdout", result["fit"])
    print(f"T = {result['temperature']:.3f}: ECE {rep['ece_before']:.4f} -> {rep['ece_after']:.4f}, "
          f"NLL {rep['nll_before']:.4f} -> {rep['nll_after']:.4f} on {rep['num_images']} "
          f"{'held-out' if 'holdout' in result else 'fitted'} images; stored in {result['path']}", file=sys.stderr)
    return 0


def _adapt_prior(args) -> int:
    from semifer import checkpoint as ckpt
    from semifer.analysis.data import image_inputs
    from semifer.analysis.prior import adapt_prior, run_labelled_images
    from semifer.models.io import load_model, prior_path, resolve_device

    path = prior_path(ckpt.find_weights(args.checkpoint, "last"))
    if args.remove:
        return _remove(path)
    if not args.data:
        raise ValueError("adapt-prior needs --data: the unlabelled faces whose class prior to estimate")
    _, meta = load_model(args.checkpoint, weights=args.weights, adapted=False)
    images, _, _ = image_inputs(args.data, meta, args.split, args.cache_dir, args.limit, detector=args.detector)
    if args.source_data:
        source = image_inputs(args.source_data, meta, args.source_split, args.cache_dir, args.limit)[0]
    else:  # a run folder: the labelled faces it lists, when its data is here
        source = None if args.source_prior else run_labelled_images(args.checkpoint, meta, args.cache_dir)
    result = adapt_prior(args.checkpoint, images, args.weights, resolve_device(args.device), source,
                         args.source_prior, info={"data": args.data, "split": args.split})
    print(json.dumps(result, indent=2))
    rows = "\n".join(f"  {c:<12}{s:>8.3f}{t:>8.3f}" for c, s, t in zip(result["classes"], result["train_prior"], result["prior"]))
    print(f"class prior of {result['num_images']} images ({result['em_iterations']} EM iterations):\n"
          f"  {'class':<12}{'source':>8}{'target':>8}\n{rows}\nstored in {path}; semifer eval, predict and "
          f"export now use it (--remove to undo)", file=sys.stderr)
    return 0


def _report(args) -> int:
    from semifer.analysis.report import write_report

    out = write_report(args.runs, args.out, args.title)
    print(f"report written to {out}")
    return 0
