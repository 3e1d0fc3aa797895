"""Throughput of prediction: faces/s on pre-cropped faces, faces/s on photos with detection,
and frames/s of the ``semifer predict`` video pipeline; and what the detector finds: the faces
of a group photo, and false faces in photos and a video that have none.

Usage: ``python benchmarks/predict.py [--checkpoint RUN] [--detector auto] [--threads 1]``.
Without ``--checkpoint`` the model shipped in the package is used, or where this install has
none a small cnn_small model (48 px, gray) is trained on the embedded synthetic faces first.
Photos: scikit-image's astronaut portrait, a two-face tiling of it, and the five-face group
photo of ``semifer.data.faces.samples`` (1280 x 720). Videos are written to a temporary folder
at 640 x 480: the two-face tiling drifting, and the samples' face-free photos panning.
With BlazeFace, its short- and full-range models are compared on the group and face-free photos.
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

from semifer.data.faces import DETECTORS, create_detector, crop_face
from semifer.data.faces.samples import group_photo, no_face_photos
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
    """The astronaut (1 face), a two-face tiling (2) and the group photo (5)."""
    a = skdata.astronaut()
    tile = np.full((512, 768, 3), 255, np.uint8)
    tile[:, :512] = a
    tile[100:356, 512:] = cv2.resize(a, (256, 256), interpolation=cv2.INTER_AREA)
    return [a, tile, group_photo()[0]]


def write_video(path: str, frames: int, pictures: list[np.ndarray]) -> None:
    """640 x 480 frames panning right across the pictures in turn, 2 px a frame."""
    vw = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 480))
    bases = [cv2.resize(p, (640, 480), interpolation=cv2.INTER_AREA) for p in pictures]
    for i in range(frames):
        base = bases[i * len(bases) // frames]
        vw.write(np.ascontiguousarray(np.roll(base, 2 * i, axis=1)[:, :, ::-1]))
    vw.release()


def matched(faces, truth, min_iou: float = 0.4) -> int:
    """How many true boxes some found face overlaps by ``min_iou``."""
    from semifer.predict.video import iou

    if not faces:
        return 0
    return int((iou(np.array(truth), np.array([f.box for f in faces])).max(1) >= min_iou).sum())


def compare_blazeface(repeats: int) -> dict:
    """Short- vs full-range BlazeFace, on the whole picture only and with tiles (the default):
    group faces found, false faces in the face-free photos, ms per group photo."""
    group, truth = group_photo()
    out = {}
    for full, tile in ((False, 0), (True, 0), (False, 384), (True, 384)):
        det = create_detector("mediapipe", full_range=full, tile=tile)
        faces = det.detect(group)
        wall, cpu = best_time(lambda: det.detect(group), repeats)
        out[("full_range" if full else "short_range") + ("_tiled" if tile else "_whole")] = {
            "group_faces_found": f"{matched(faces, truth)}/{len(truth)}", "group_detections": len(faces),
            "false_faces_in_face_free_photos": sum(len(det.detect(p)) for p in no_face_photos().values()),
            "ms_per_group_photo": round(1000 * wall, 1), "cpu_ms_per_group_photo": round(1000 * cpu, 1)}
    return out


def best_time(fn, repeats: int) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fn``, each the best of ``repeats`` after a warm-up. The process's
    CPU time (all its threads) barely grows when other jobs hold the cores, so it estimates
    what an idle machine would give where the wall clock cannot."""
    fn()  # warm-up: lazy detector construction, allocator, caches
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return min(wall), min(cpu)


def bench_video(p: Predictor, path: str, out: str, batch: int):
    with RowWriter(os.path.join(out, "v.csv"), "csv", columns(p.classes)) as w:
        run = PredictRun(p, w, Options(out, batch_size=batch), os.path.dirname(path))
        run.video(path)
    return run.summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", help="run folder or .safetensors (default: train a small one)")
    ap.add_argument("--detector", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--crops", type=int, default=512, help="pre-cropped faces per timing")
    ap.add_argument("--photos", type=int, default=9, help="photos per timing (1, 2 and 5 faces in turn)")
    ap.add_argument("--frames", type=int, default=50, help="video length")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    from semifer.weights import DEFAULT_MODEL

    with tempfile.TemporaryDirectory() as tmp:
        shipped = not args.checkpoint and os.path.isfile(DEFAULT_MODEL)
        ckpt = args.checkpoint or (DEFAULT_MODEL if shipped else default_checkpoint(tmp))
        p = Predictor.from_checkpoint(ckpt, device=args.device, detector=args.detector)
        crops = [crop_face(photos()[0], FACE)] * args.crops
        pics = [photos()[i % 3] for i in range(args.photos)]
        n_faces = len(p.predict(pics, batch_size=args.batch))
        group, truth = group_photo()
        group_faces = p.find_faces(group)
        false_faces = {n: len(p.find_faces(im)) for n, im in no_face_photos().items()}
        video, empty = os.path.join(tmp, "clip.mp4"), os.path.join(tmp, "no_face.mp4")
        write_video(video, args.frames, [photos()[1]])
        write_video(empty, args.frames, list(no_face_photos().values()))
        t_crops = best_time(lambda: p.predict(crops, detect=False, batch_size=args.batch), args.repeats)
        t_photos = best_time(lambda: p.predict(pics, batch_size=args.batch), args.repeats)
        t_video = best_time(lambda: bench_video(p, video, tmp, args.batch), args.repeats)
        empty_run = bench_video(p, empty, tmp, args.batch)
        blaze = compare_blazeface(args.repeats) if DETECTORS.get("mediapipe").available() else None
    print(json.dumps({
        "checkpoint": ckpt if args.checkpoint or shipped else "trained in-script (cnn_small, 48 px, gray)",
        "model": p.meta["model"], "size": p.meta["size"], "channels": p.meta["in_chans"],
        "detector": type(p.detector).__name__, "device": str(p.device), "threads": args.threads,
        "batch": args.batch,
        "crops_faces_per_s": round(args.crops / t_crops[0], 1),
        "photos_per_s": round(args.photos / t_photos[0], 2),
        "photos_faces_per_s": round(n_faces / t_photos[0], 2), "faces_in_photos": n_faces,
        "photos_per_cpu_s": round(args.photos / t_photos[1], 2),
        "photo_sizes": "512x512, 768x512 and 1280x720 (1, 2 and 5 faces)",
        "group_faces_found": f"{matched(group_faces, truth)}/{len(truth)}", "group_detections": len(group_faces),
        "false_faces_in_face_free_photos": false_faces,
        "video_frames_per_s": round(args.frames / t_video[0], 2), "video": f"{args.frames} frames 640x480",
        "video_frames_per_cpu_s": round(args.frames / t_video[1], 2),
        "face_free_video_faces": empty_run.faces, "face_free_video_frames": empty_run.frames,
        "blazeface_models": blaze,
        "load_average_1m": round(os.getloadavg()[0], 2), "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }, indent=2))


if __name__ == "__main__":
    main()
