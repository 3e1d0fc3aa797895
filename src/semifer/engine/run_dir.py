"""The run folder: one writer at a time, and a resume that matches what the run recorded.

A run records what it trained on in ``config.yaml``, ``labelled.txt`` and ``data.json``. A
resume is checked against that record before anything is written: a resume with another model,
algorithm, data or label split is refused with every difference named, and the record is left
as it was (a resume that rewrote it first and crashed later lost the run's own description).
Only the options in ``SAFE_ON_RESUME`` may change.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from typing import Iterator

import numpy as np
import yaml

from semifer.config import Config, to_dict

LOCK_FILE = ".lock"

# Options a resume may change: they decide how long the run goes on, how often it logs,
# evaluates, saves (and, pre-training, draws its grids), and where it computes, never what the
# saved state means. Training and MAE pre-training share the list; each has the keys it has.
SAFE_ON_RESUME = (
    "out", "resume", "train.iterations", "train.epochs", "train.eval_every", "train.ckpt_every",
    "train.log_every", "train.threads", "train.eval_batch_size", "train.eval_flip", "train.eval_shift", "train.device",
    "train.deterministic", "data.cache_dir", "data.strict", "train.vis_every",
)


class RunFolderError(RuntimeError):
    """The run folder is in use, or a resume does not match what the run recorded."""


@contextlib.contextmanager
def locked(run: str, main: bool = True) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``run/.lock`` for the block (rank 0 only); the file holds
    the holder's PID. The kernel releases the lock when its process dies, so a killed run never
    leaves a stale lock behind."""
    if not main:
        yield
        return
    os.makedirs(run, exist_ok=True)
    path = os.path.join(run, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunFolderError(f"run folder {run} is in use by process {holder} (lock {path}); wait for "
                                 "it to finish or stop it, or choose another out=") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _flat(tree: dict, prefix: str = "") -> dict:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``; model and algorithm options too."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(run: str, cfg: Config) -> tuple[list[str], list[str]]:
    """(unsafe, safe) differences between ``run/config.yaml`` and ``cfg`` (a training or a
    pre-training config), one line each. Keys the recorded file lacks (added to semifer since)
    count at their default."""
    path = os.path.join(run, "config.yaml")
    try:
        with open(path) as f:
            recorded = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise RunFolderError(f"cannot check the resume against {path}: {e}") from None
    if not isinstance(recorded, dict):
        raise RunFolderError(f"{path}: expected the mapping of sections the run wrote, got {recorded!r}")
    was = {**_flat(to_dict(type(cfg)())), **_flat(recorded)}
    now = _flat(to_dict(cfg))
    unsafe, safe = [], []
    for key in sorted(set(was) | set(now)):
        a, b = was.get(key, "(unset)"), now.get(key, "(unset)")
        if a != b:
            (safe if key in SAFE_ON_RESUME else unsafe).append(f"{key}: {a!r} in the run, {b!r} now")
    return unsafe, safe


def check_config(run: str, cfg: Config) -> None:
    """Refuse a resume whose configuration differs from the run's beyond ``SAFE_ON_RESUME``."""
    unsafe, safe = config_changes(run, cfg)
    if unsafe:
        own = _flat(to_dict(cfg))
        raise RunFolderError(f"resume=true with settings that differ from {run}/config.yaml:\n  "
                             + "\n  ".join(unsafe) + "\nOnly these may change on resume: "
                             + ", ".join(k for k in SAFE_ON_RESUME[2:] if k in own)
                             + ". Start a new run (another out=) instead")
    if safe:
        print(f"resume changes: {'; '.join(safe)}")


def record(cfg: Config, data) -> dict[str, str]:
    """What the run records about its data: file name -> text (``data`` is a ``Prepared``)."""
    files = {"labelled.txt": "".join(f"{data.train_ids[i]}\t{data.classes[data.train_labels[i]]}\n"
                                     for i in data.labelled)}
    if len(data.flipped):
        files["noisy_labels.txt"] = "".join(f"{data.train_ids[i]}\t{data.classes[data.true_labels[i]]}\t"
                                            f"{data.classes[data.train_labels[i]]}\n" for i in data.flipped)
    files["corrupt.txt"] = "".join(f"{i}\t{why}\n" for i, why in data.errors)
    items = hashlib.sha1("".join(f"{i}\t{y}\n" for i, y in zip(data.train_ids, data.true_labels.tolist())).encode())
    counts = {
        "classes": list(data.classes),
        "labelled": np.bincount(data.train_labels[data.labelled], minlength=len(data.classes)).tolist(),
        "unlabelled": np.bincount(data.true_labels[data.unlabelled], minlength=len(data.classes)).tolist(),
        "test": np.bincount(data.test_labels, minlength=len(data.classes)).tolist(),
        "test_name": data.test_name, "corrupt": len(data.errors), "label_noise_flipped": len(data.flipped),
        "train_items": len(data.train_ids), "train_fingerprint": items.hexdigest()[:16],
    }
    if len(data.val_ids):  # a resume must hold out the same validation items
        val = hashlib.sha1("".join(f"{i}\t{y}\n" for i, y in zip(data.val_ids, data.val_labels.tolist())).encode())
        counts.update(val=np.bincount(data.val_labels, minlength=len(data.classes)).tolist(), val_name=data.val_name,
                      val_source=data.val_source, val_fingerprint=val.hexdigest()[:16])
    files["data.json"] = json.dumps(counts, indent=2)
    return files


def check_record(run: str, files: dict[str, str]) -> None:
    """Refuse a resume whose data or label split differs from what ``run`` recorded."""
    diffs = []
    with open(os.path.join(run, "data.json")) as f:
        was = json.load(f)
    now = json.loads(files["data.json"])
    for key in sorted(set(was) & set(now)):  # older runs recorded fewer keys
        if was[key] != now[key]:
            diffs.append(f"data.json {key}: {was[key]!r} in the run, {now[key]!r} now")
    with open(os.path.join(run, "labelled.txt")) as f:
        old_lines, new_lines = f.read().splitlines(), files["labelled.txt"].splitlines()
    if old_lines != new_lines:
        first = next((i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b), min(len(old_lines), len(new_lines)))
        diffs.append(f"labelled.txt: {len(old_lines)} labelled images in the run, {len(new_lines)} now; first "
                     f"difference at line {first + 1}: {old_lines[first] if first < len(old_lines) else '(end)'!r} "
                     f"in the run, {new_lines[first] if first < len(new_lines) else '(end)'!r} now")
    if diffs:
        raise RunFolderError(f"resume=true on other data than {run} trained on:\n  " + "\n  ".join(diffs)
                             + "\nThe run is left as it was; start a new run (another out=) for this data")


def write_record(run: str, cfg: Config, files: dict[str, str], resumed: bool) -> None:
    """Write config.yaml and the data record; a resume (already checked equal) keeps the data
    record and rewrites only config.yaml, whose safe options may have changed."""
    from semifer.config import save_config

    save_config(cfg, os.path.join(run, "config.yaml"))
    if resumed:
        return
    for name, text in files.items():
        with open(os.path.join(run, name), "w") as f:
            f.write(text)


def truncate_metrics(run: str, step: int) -> None:
    """Drop the ``metrics.jsonl`` records after ``step`` (written after the checkpoint the run
    resumes from), so the resumed run does not log those steps twice."""
    from semifer.io import atomic_path

    path = os.path.join(run, "metrics.jsonl")
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    keep = []
    for line in lines:
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except ValueError:  # a line cut short by a kill
            pass
    if len(keep) < len(lines):
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            f.writelines(keep)
        print(f"metrics.jsonl: dropped {len(lines) - len(keep)} records after step {step}, logged again now")
