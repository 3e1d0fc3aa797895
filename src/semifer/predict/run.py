"""The ``semifer predict`` pipeline: an input expanded to image files, videos or a webcam;
images read a chunk at a time with one message per bad file; faces classified in batches;
rows streamed to the table; a summary of what was processed and what failed."""
from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Iterable, Iterator

import cv2
import numpy as np
from tqdm import tqdm

from semifer.data.base import DataError
from semifer.predict.inputs import to_rgb
from semifer.predict.output import RowWriter, draw, make_row, no_face_row, round_fps
from semifer.predict.predictor import Predictor
from semifer.predict.video import IoUTracker, Smoother, iter_frames, open_video

VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
# Per-file failures the run reports and survives (decoding, odd shapes, OpenCV errors).
FILE_ERRORS = (DataError, ValueError, cv2.error)


@dataclass
class Options:
    out_dir: str
    detect: bool = True
    annotate: bool = False
    stride: int = 1             # video: classify every stride-th frame
    smooth: float = 0.0         # video: history weight of the per-track exponential smoothing
    batch_size: int = 64        # faces per forward pass
    chunk: int = 16             # images or frames read before a classification round

    def __post_init__(self):
        if self.stride < 1 or not 0 <= self.smooth < 1 or self.batch_size < 1:
            raise ValueError(f"need stride >= 1, 0 <= smooth < 1 and batch size >= 1; got "
                             f"{self.stride}, {self.smooth}, {self.batch_size}")


@dataclass
class Summary:
    files: int = 0              # inputs processed: images, videos and webcams
    failed: int = 0             # inputs that could not be read
    frames: int = 0             # video frames classified
    faces: int = 0              # table rows
    without_face: int = 0       # images and frames where no face was found
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)  # inputs read only in part (a truncated video)

    def fail(self, name: str, err: Exception) -> None:
        self.failed += 1
        self.errors.append({"file": name, "error": str(err)})
        tqdm.write(f"skipped {name}: {err}", file=sys.stderr)

    def as_dict(self) -> dict:
        return asdict(self)


def expand_input(spec: str) -> tuple[list, str]:
    """``--input`` -> (sources, root): a webcam index, the one file, or every non-hidden file
    under a folder (recursively, sorted). Names in outputs are relative to ``root``."""
    if spec.isdigit():
        return [int(spec)], ""
    if not os.path.exists(spec):
        raise DataError(f"input {spec} does not exist")
    if os.path.isfile(spec):
        return [spec], os.path.dirname(spec)
    if not os.path.isdir(spec):
        raise DataError(f"input {spec!r} is not an image, a folder, a video or a webcam index")
    files = []
    for d, dirs, names in os.walk(spec):
        dirs[:] = [n for n in dirs if not n.startswith(".")]
        files += [os.path.join(d, n) for n in names if not n.startswith(".")]
    if not files:
        raise DataError(f"folder {spec} holds no files")
    return sorted(files), spec


def is_video(source) -> bool:
    return isinstance(source, int) or os.path.splitext(source)[1].lower() in VIDEO_EXTS


def batched(it: Iterable, n: int) -> Iterator[list]:
    it = iter(it)
    while chunk := list(islice(it, n)):
        yield chunk


class PredictRun:
    """Feeds sources through a Predictor into a RowWriter, counting into a Summary."""

    def __init__(self, predictor: Predictor, writer: RowWriter, opts: Options, root: str):
        self.p, self.writer, self.opts, self.root = predictor, writer, opts, root
        self.summary = Summary()

    def run(self, sources: list) -> Summary:
        images = [s for s in sources if not is_video(s)]
        if images:
            self.images(images)
        for s in sources:
            if is_video(s):
                self.video(s)
        return self.summary

    def _name(self, source) -> str:
        return f"webcam{source}" if isinstance(source, int) else os.path.relpath(source, self.root or ".")

    def _classify(self, pairs_per_item: list[list]) -> list[np.ndarray]:
        """Probabilities [n_i, K] per item from its (face, crop) pairs, in batches."""
        crops = [crop for pairs in pairs_per_item for _, crop in pairs]
        bs = self.opts.batch_size
        probs = [self.p.classify(crops[i:i + bs]) for i in range(0, len(crops), bs)]
        flat = np.concatenate(probs) if probs else np.zeros((0, len(self.p.classes)), np.float32)
        return np.split(flat, np.cumsum([len(p) for p in pairs_per_item])[:-1])

    def _emit(self, rows: list[dict]) -> None:
        for r in rows:
            self.writer.write(r)
        self.summary.faces += len(rows)
        self.summary.without_face += not rows

    def _read(self, path: str):
        """(path, rgb, pairs) of one image file, or None after reporting why not."""
        try:
            rgb = to_rgb(path)
            return path, rgb, self.p.crops(rgb, self.opts.detect)
        except FILE_ERRORS as e:
            self.summary.fail(self._name(path), e)
            return None

    def images(self, paths: list[str]) -> None:
        with tqdm(total=len(paths), unit="img", desc="images", file=sys.stderr) as bar:
            for chunk in batched(paths, self.opts.chunk):
                items = [it for it in map(self._read, chunk) if it is not None]
                for (path, rgb, pairs), probs in zip(items, self._classify([it[2] for it in items])):
                    rows = [make_row(path, None, None, j, None, f, _box(f, rgb), p, self.p.classes)
                            for j, ((f, _), p) in enumerate(zip(pairs, probs))]
                    self._emit(rows)
                    if not rows:  # so every image read is in the table, faces or not
                        self.writer.write(no_face_row(path, self.p.classes))
                    self.summary.files += 1
                    if self.opts.annotate:
                        self._save_annotated(path, rgb, rows)
                bar.update(len(chunk))

    def _save_annotated(self, path: str, rgb: np.ndarray, rows: list[dict]) -> None:
        dest = os.path.join(self.opts.out_dir, "annotated", os.path.splitext(self._name(path))[0] + ".jpg")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        cv2.imwrite(dest, draw(rgb, rows))

    def video(self, source) -> None:
        name = self._name(source)
        try:
            cap = open_video(source)
        except DataError as e:
            self.summary.fail(name, e)
            return
        sink = VideoSink(self.opts, name, round_fps(cap.get(cv2.CAP_PROP_FPS)) / self.opts.stride)
        total = -(-int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) // self.opts.stride) or None
        start = self.summary.frames
        try:
            with tqdm(total=total, unit="frame", desc=name, file=sys.stderr) as bar:
                file = source if isinstance(source, str) else name
                self._frames(iter_frames(cap, self.opts.stride), file, sink, bar)
        except KeyboardInterrupt:
            if not isinstance(source, int):
                raise  # a webcam has no end: Ctrl-C is how it stops
        except FILE_ERRORS as e:
            self.summary.fail(name, DataError(f"stopped after {self.summary.frames - start} frames: {e}"))
            return
        finally:
            cap.release()
            sink.close()
        read = self.summary.frames - start
        if read == 0:
            self.summary.fail(name, DataError("no frame could be decoded"))
            return
        self.summary.files += 1
        if total and read < total and not isinstance(source, int):
            # A file cut short often still opens and decodes up to the cut: say so, not "processed".
            msg = (f"{name}: its header announces {total} frames (at stride {self.opts.stride}) but only {read} "
                   "could be read; the file may be truncated or damaged")
            self.summary.warnings.append({"file": name, "expected_frames": total, "read_frames": read})
            tqdm.write(f"warning: {msg}", file=sys.stderr)

    def _frames(self, frames: Iterator, file: str, sink: "VideoSink", bar) -> None:
        """Classify a frame stream a chunk at a time, tracking and smoothing faces."""
        tracker, smoother = IoUTracker(), Smoother(self.opts.smooth)
        for chunk in batched(frames, self.opts.chunk):
            pairs = [self.p.crops(rgb, self.opts.detect) for _, _, rgb in chunk]
            for (index, t, rgb), pp, probs in zip(chunk, pairs, self._classify(pairs)):
                boxes = [_box(f, rgb) for f, _ in pp]
                tracks = tracker.update(boxes)
                rows = [make_row(file, index, t, j, tr, f, box, smoother(tr, p), self.p.classes)
                        for j, ((f, _), box, tr, p) in enumerate(zip(pp, boxes, tracks, probs))]
                smoother.forget(set(tracker.tracks))
                self._emit(rows)
                sink.write(rgb, rows)
            self.summary.frames += len(chunk)
            bar.update(len(chunk))


class VideoSink:
    """The annotated MP4 of one video (mp4v), opened at the first frame; a no-op without
    ``--annotate``."""

    def __init__(self, opts: Options, name: str, fps: float):
        self.enabled, self.fps, self.vw = opts.annotate, fps, None
        self.path = os.path.join(opts.out_dir, "annotated", os.path.splitext(name)[0] + ".mp4")

    def write(self, rgb: np.ndarray, rows: list[dict]) -> None:
        if not self.enabled:
            return
        if self.vw is None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            size = (rgb.shape[1], rgb.shape[0])
            self.vw = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*"mp4v"), self.fps, size)
        self.vw.write(draw(rgb, rows))

    def close(self) -> None:
        if self.vw is not None:
            self.vw.release()


def _box(face, rgb: np.ndarray) -> tuple[int, int, int, int]:
    """The face's box, or the whole image for an undetected crop."""
    return face.box if face is not None else (0, 0, rgb.shape[1], rgb.shape[0])
