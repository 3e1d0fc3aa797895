"""Throughput of prediction: faces/s on pre-cropped faces, faces/s on photos with detection,
and frames/s of the ``semifer predict`` video pipeline.

Usage: ``python benchmarks/predict.py [--checkpoint RUN] [--detector auto] [--threads 1]``.
Without ``--checkpoint`` a small cnn_small model (48 px, gray) is trained on the embedded
synthetic faces first. Photos are scikit-image's astronaut portrait and a two-face tiling of it;
the video is written to a temporary folder from those photos (640 x 480, the faces drifting).
Prints one JSON object. Each timing is the best of ``--repeats`` runs after a warm-up, since
a shared machine makes single runs noisy; the load average is recorded too.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time

import cv2
import numpy as np
import torch
from skimage import data as skdata

from semifer.data.faces import crop_face
from semifer.predict import Predictor
from semifer.predict.output import RowWriter, columns
from semifer.predict.run import Options, PredictRun

FACE = (177, 62, 95, 110)  # the astronaut's face


def default_checkpoint(folder: str) -> str:
    """Train the default benchmark model (seconds) and return its run folder."""
    from semifer.config import load_config
    from semifer.engine.train import train

    out = os.path.join(folder, "run")
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON
        train(load_config(None, [
            "data.train=synthetic:?n=240", "data.size=48", "data.labels_per_class=6",
            "model.name=cnn_small", "train.batch_size=16", "train.iterations=3", "train.eval_every=3",
            "train.ckpt_every=3", f"train.threads={torch.get_num_threads()}",
            f"data.cache_dir={folder}/cache", f"out={out}"]))
    return out


def photos() -> list[np.ndarray]:
    a = skdata.astronaut()
    tile = np.full((512, 768, 3), 255, np.uint8)
    tile[:, :512] = a
    tile[100:356, 512:] = cv2.resize(a, (256, 256), interpolation=cv2.INTER_AREA)
    return [a, tile]


def write_video(path: str, frames: int) -> None:
    vw = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 480))
    base = cv2.resize(photos()[1], (640, 480), interpolation=cv2.INTER_AREA)
    for i in range(frames):
        vw.write(np.ascontiguousarray(np.roll(base, 2 * i, axis=1)[:, :, ::-1]))
    vw.release()


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up: lazy detector construction, allocator, caches
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_video(p: Predictor, path: str, out: str, batch: int) -> int:
    with RowWriter(os.path.join(out, "v.csv"), "csv", columns(p.classes)) as w:
        run = PredictRun(p, w, Options(out, batch_size=batch), os.path.dirname(path))
        run.video(path)
    return run.summary.frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", help="run folder or .safetensors (default: train a small one)")
    ap.add_argument("--detector", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--crops", type=int, default=512, help="pre-cropped faces per timing")
    ap.add_argument("--photos", type=int, default=8, help="photos per timing (alternating 1 and 2 faces)")
    ap.add_argument("--frames", type=int, default=50, help="video length")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint or default_checkpoint(tmp)
        p = Predictor.from_checkpoint(ckpt, device=args.device, detector=args.detector)
        crops = [crop_face(photos()[0], FACE)] * args.crops
        pics = [photos()[i % 2] for i in range(args.photos)]
        n_faces = len(p.predict(pics, batch_size=args.batch))
        video = os.path.join(tmp, "clip.mp4")
        write_video(video, args.frames)
        t_crops = best_time(lambda: p.predict(crops, detect=False, batch_size=args.batch), args.repeats)
        t_photos = best_time(lambda: p.predict(pics, batch_size=args.batch), args.repeats)
        t_video = best_time(lambda: bench_video(p, video, tmp, args.batch), args.repeats)
    print(json.dumps({
        "checkpoint": args.checkpoint or "trained in-script (cnn_small, 48 px, gray)",
        "model": p.meta["model"], "size": p.meta["size"], "channels": p.meta["in_chans"],
        "detector": type(p.detector).__name__, "device": str(p.device), "threads": args.threads,
        "batch": args.batch,
        "crops_faces_per_s": round(args.crops / t_crops, 1),
        "photos_per_s": round(args.photos / t_photos, 2),
        "photos_faces_per_s": round(n_faces / t_photos, 2), "faces_in_photos": n_faces,
        "photo_sizes": "512x512 and 768x512",
        "video_frames_per_s": round(args.frames / t_video, 2), "video": f"{args.frames} frames 640x480",
        "load_average_1m": round(os.getloadavg()[0], 2), "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }, indent=2))


if __name__ == "__main__":
    main()
