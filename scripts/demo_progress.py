"""Live progress and a plain-words verdict for `make demo` (called by scripts/demo.sh).

  demo_progress.py watch RUN...      one line per run: step, latest val accuracy, ETA. Redrawn in
                                     place on a terminal; into a pipe or log, one block every 30 s.
                                     Returns when every run has its exit status in RUN.rc.
  demo_progress.py explain REF RUN   what the two runs' numbers mean, and where their files are.

It only reads what training writes (RUN/config.yaml, metrics.jsonl, summary.json, data.json,
test_predictions.csv), so it can neither slow nor break the runs it watches.
"""
from __future__ import annotations

import json
import os
import sys
import textwrap
import time

import yaml

PIPE_EVERY_S = 30.0  # a line per run this often when stdout is not a terminal


def read_metrics(run: str) -> tuple[int, tuple[int, float, str] | None]:
    """(last logged training step, (step, accuracy, split) of the last periodic evaluation or
    None). The split is "val" where the data has one, else "test". A line still being written
    (no newline yet, or cut JSON) is skipped."""
    step, last_eval = 0, None
    try:
        with open(os.path.join(run, "metrics.jsonl")) as f:
            lines = f.readlines()
    except FileNotFoundError:
        return step, last_eval
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "eval_accuracy" in row:
            last_eval = (row["step"], row["eval_accuracy"], row.get("eval_split", "test"))
        elif "step" in row:
            step = max(step, row["step"])
    return step, last_eval


def total_steps(run: str) -> int | None:
    """``train.iterations`` of the run's resolved config (written when training starts)."""
    try:
        with open(os.path.join(run, "config.yaml")) as f:
            return int(yaml.safe_load(f)["train"]["iterations"])
    except (FileNotFoundError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return None


def eta_s(first: tuple[float, int], now: tuple[float, int], total: int) -> float | None:
    """Seconds left at the rate seen between two (time, step) observations; None before the
    second one. eta = (total - step_now) * (t_now - t_first) / (step_now - step_first)."""
    (t0, s0), (t1, s1) = first, now
    return None if s1 <= s0 else (total - s1) * (t1 - t0) / (s1 - s0)


def clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def exit_status(run: str) -> int | None:
    try:
        with open(run + ".rc") as f:
            return int(f.read().strip() or 1)
    except FileNotFoundError:
        return None


class RunLine:
    """The progress line of one run; remembers its first step observation for the ETA."""

    def __init__(self, run: str):
        self.run, self.name = run, os.path.basename(run.rstrip("/"))
        self.first: tuple[float, int] | None = None

    def text(self, now: float) -> str:
        rc = exit_status(self.run)
        step, last_eval = read_metrics(self.run)
        acc = "" if last_eval is None else f"   {last_eval[2]} accuracy {100 * last_eval[1]:.1f} % at step {last_eval[0]}"
        if rc is not None:
            return (f"{self.name:<12} done{acc}" if rc == 0 else
                    f"{self.name:<12} FAILED (exit {rc}): see {self.run}.log")
        total = total_steps(self.run)
        if total is None or step == 0:
            return f"{self.name:<12} starting: drawing the synthetic faces, building the model"
        if self.first is None or step < self.first[1]:
            self.first = (now, step)
        eta = eta_s(self.first, (now, step), total)
        return (f"{self.name:<12} step {step:>{len(str(total))}}/{total}{acc}"
                f"   ETA {'--:--' if eta is None else clock(eta)}")


def watch(runs: list[str], interval: float = 1.0) -> None:
    lines = [RunLine(r) for r in runs]
    tty, start, last_print = sys.stdout.isatty(), time.time(), -PIPE_EVERY_S
    drawn = False
    while True:
        now = time.time()
        texts = [line.text(now) for line in lines]
        finished = all(exit_status(r) is not None for r in runs)
        if tty:
            if drawn:
                sys.stdout.write(f"\x1b[{len(texts)}F")  # back to the first line of the block
            sys.stdout.write("".join(f"\x1b[2K{t}\n" for t in texts))
            drawn = True
        elif finished or now - last_print >= PIPE_EVERY_S:
            sys.stdout.write("".join(f"[{clock(now - start)}] {t}\n" for t in texts))
            last_print = now
        sys.stdout.flush()
        if finished:
            return
        time.sleep(interval)


def p_words(p: float) -> str:
    if p < 0.01:
        return "so the gap is very unlikely to be luck of these test faces"
    if p < 0.05:
        return "weak evidence: a gap this size would be luck about once in 20-100 tries"
    return "so the gap could well be luck of these test faces: no evidence either way"


def explain(ref: str, run: str) -> str:
    """Plain words for two finished runs on the same test images: who is who, the margin, what
    McNemar's exact test says, where the files are."""
    from semifer.engine.evaluate import correctness, read_predictions
    from semifer.evaluation.metrics import mcnemar

    def load(path, name):
        with open(os.path.join(path, name)) as f:
            return json.load(f)

    def who(path, summary):
        name = os.path.basename(path.rstrip("/"))
        return name if name == summary["algorithm"] else f"{name} ({summary['algorithm']})"

    s_ref, s_run, data = load(ref, "summary.json"), load(run, "summary.json"), load(run, "data.json")
    labelled, unlabelled, test = sum(data["labelled"]), sum(data["unlabelled"]), sum(data["test"])
    _, right_ref = correctness(read_predictions(os.path.join(ref, "test_predictions.csv")))
    _, right_run = correctness(read_predictions(os.path.join(run, "test_predictions.csv")))
    t = mcnemar(right_run, right_ref)
    a_ref, a_run = 100 * right_ref.mean(), 100 * right_run.mean()
    n_ref, n_run = who(ref, s_ref), who(run, s_run)
    verdict = "better" if a_run > a_ref else "worse" if a_run < a_ref else "as good"
    folder = os.path.dirname(run.rstrip("/")) or "."
    paragraphs = [
        ("What the numbers mean:", [
            f"{n_ref} learnt from the {labelled:,} labelled faces alone: it gets {a_ref:.1f} % of the "
            f"{test:,} test faces right.",
            f"{n_run} learnt from the same {labelled:,} labelled faces, for as many steps, plus "
            f"{unlabelled:,} unlabelled ones, trained on the confident guesses it makes for them: {a_run:.1f} %.",
            f"The semi-supervised run is {abs(a_run - a_ref):.1f} points {verdict}. Of the test faces "
            f"only one of the two gets right, {t['only_a']} are {n_run.split()[0]}'s and {t['only_b']} "
            f"{n_ref.split()[0]}'s. If both were equally accurate, a split at least this lopsided would "
            f"happen with probability p = {t['p_value']:.2g} (McNemar's exact test), {p_words(t['p_value'])}.",
        ]),
        ("Where the results are:", [
            f"{folder}/report.html: both runs on one page (semifer report).",
            f"{ref}/ and {run}/: summary.json (accuracy, macro-F1, per-class recall, confusion matrix), "
            "test_confusion.png and test_reliability.png (plots), test_predictions.csv (one row per test "
            f"face), metrics.jsonl and tb/ (curves: tensorboard --logdir {folder}), ckpt/ (weights: "
            "semifer predict --checkpoint RUN --input photo.jpg).",
            f"The table above again: semifer compare {ref} {run}",
        ]),
    ]
    out = []
    for head, items in paragraphs:
        out.append(head)
        for item in items:
            out += textwrap.wrap(item, 96, initial_indent="  ", subsequent_indent="    ",
                                 break_on_hyphens=False, break_long_words=False)
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "watch":
        try:
            watch(argv[1:])
        except KeyboardInterrupt:  # the runs got the Ctrl-C too: each checkpoints and stops
            print("\ninterrupted: each run stops at a step boundary with a checkpoint", file=sys.stderr)
            return 130
        return 0
    if len(argv) == 3 and argv[0] == "explain":
        print(explain(argv[1], argv[2]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
