"""``semifer predict`` and ``semifer export`` (added to the main CLI through ``register``).

    semifer predict [--checkpoint RUN] --input PATH|FOLDER|VIDEO|WEBCAM_INDEX [--output DIR]
                    [--detector auto|mediapipe|mtcnn|haar|lbp|yolo_face] [--no-detect]
                    [--annotate] [--stride N] [--smooth ALPHA] [--format csv|json]
    semifer export --checkpoint RUN --format onnx [--dynamic-batch] [--output FILE]
"""
from __future__ import annotations

import json
import os
import sys


def register(sub) -> None:
    p = sub.add_parser("predict", help="classify the faces in images, folders, videos or a webcam")
    p.add_argument("--checkpoint", help="run folder or .safetensors file (default: the FER2013 model "
                   "shipped in the package)")
    p.add_argument("--input", required=True, help="image, folder (recursive), video file or webcam index")
    p.add_argument("--output", default="predictions", help="folder for the table, summary and annotations")
    p.add_argument("--detector", default="auto", metavar="NAME", help="auto (mediapipe > mtcnn > haar > lbp) or a name")
    p.add_argument("--detector-model", metavar="FILE", help="weights file for detectors that need one (yolo_face)")
    p.add_argument("--no-detect", action="store_true", help="inputs are already-cropped faces")
    p.add_argument("--annotate", action="store_true", help="also write images / MP4s with boxes and labels")
    p.add_argument("--stride", type=int, default=1, metavar="N", help="video: classify every N-th frame")
    p.add_argument("--smooth", type=float, default=0.0, metavar="ALPHA",
                   help="video: per-face smoothing, p = ALPHA * previous + (1 - ALPHA) * current")
    p.add_argument("--format", choices=["csv", "json"], default="csv")
    p.add_argument("--batch-size", type=int, default=64, help="faces per forward pass")
    p.add_argument("--margin", type=float, default=0.2, help="context around a face box, per side")
    p.add_argument("--max-side", type=int, default=1280, help="images are shrunk to this for detection")
    p.add_argument("--device", default="auto")
    p.add_argument("--weights", default="auto", choices=["auto", "ema", "model"])
    p.add_argument("--flip", action="store_true", help="test-time mirror: average each face's and its mirror's "
                                                        "probabilities (2x the compute)")
    p.add_argument("--shift", type=float, default=0.0, help="test-time shifts: also average 8 copies moved by this "
                                                            "share of the side, e.g. 0.06 (9x the compute)")
    p.set_defaults(func=_predict)

    e = sub.add_parser("export", help="export a checkpoint to ONNX with a preprocessing JSON")
    e.add_argument("--checkpoint", required=True, help="run folder or .safetensors file")
    e.add_argument("--format", choices=["onnx"], default="onnx")
    e.add_argument("--dynamic-batch", action="store_true", help="any batch size (default: batch 1)")
    e.add_argument("--output", help="ONNX file (default RUN/export/model.onnx)")
    e.add_argument("--weights", default="auto", choices=["auto", "ema", "model"])
    e.add_argument("--opset", type=int, default=17)
    e.set_defaults(func=_export)


def _predict(args) -> int:
    from semifer.predict.output import RowWriter, columns
    from semifer.predict.predictor import Predictor
    from semifer.predict.run import Options, PredictRun, expand_input

    opts = Options(args.output, not args.no_detect, args.annotate, args.stride, args.smooth, args.batch_size)
    sources, root = expand_input(args.input)
    predictor = Predictor.from_checkpoint(
        args.checkpoint, device=args.device, detector=None if args.no_detect else args.detector,
        weights=args.weights, margin=args.margin, max_side=args.max_side, flip=args.flip, shift=args.shift,
        model_path=args.detector_model)
    if opts.detect:
        predictor.detector  # noqa: B018  (build it now: a bad --detector fails before any output)
    os.makedirs(args.output, exist_ok=True)
    table = os.path.join(args.output, f"predictions.{args.format}")
    with RowWriter(table, args.format, columns(predictor.classes)) as writer:
        summary = PredictRun(predictor, writer, opts, root).run(sources)
    with open(os.path.join(args.output, "summary.json"), "w") as f:
        json.dump(summary.as_dict(), f, indent=2)
    print(f"{summary.files} processed, {summary.failed} failed, {summary.faces} faces "
          f"({summary.frames} video frames, {summary.without_face} images/frames without a face"
          + (f"; {len(summary.warnings)} read only in part, see summary.json" if summary.warnings else "")
          + f"); table: {table}", file=sys.stderr)
    return 0 if summary.files else 1


def _export(args) -> int:
    from semifer.predict.export import export_onnx

    path, side, diff = export_onnx(args.checkpoint, args.output, args.dynamic_batch, args.weights, args.opset)
    print(f"wrote {path} and {side} (ONNX Runtime vs PyTorch: max |diff| {diff:.1e})")
    return 0
