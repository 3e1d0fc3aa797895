"""`make demo`'s live progress lines and its plain-words verdict (scripts/demo_progress.py)."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("demo_progress", ROOT / "scripts" / "demo_progress.py")
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)


def _run(tmp_path, name, metrics=(), iterations=1000, rc=None):
    run = tmp_path / name
    run.mkdir()
    (run / "config.yaml").write_text(f"train:\n  iterations: {iterations}\n")
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    if rc is not None:
        (tmp_path / f"{name}.rc").write_text(f"{rc}\n")
    return run


def test_metrics_skip_a_line_being_written_and_keep_the_last_eval(tmp_path):
    run = _run(tmp_path, "a", [{"step": 50, "loss": 1.0}, {"step": 100, "loss": 0.9},
                               {"step": 100, "eval_split": "val", "eval_accuracy": 0.42}])
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 150, "lo')                       # the writer is mid-line
    assert demo.read_metrics(str(run)) == (100, (100, 0.42, "val"))
    assert demo.read_metrics(str(tmp_path / "missing")) == (0, None)
    assert demo.total_steps(str(run)) == 1000 and demo.total_steps(str(tmp_path)) is None


def test_eta_from_two_observations():
    # 300 steps in 30 s, 600 left: 60 s
    assert demo.eta_s((10.0, 100), (40.0, 400), 1000) == pytest.approx(60.0)
    assert demo.eta_s((10.0, 100), (12.0, 100), 1000) is None  # no step since the first look
    assert demo.clock(60) == "1:00" and demo.clock(125.4) == "2:05" and demo.clock(-3) == "0:00"


def test_run_line_states(tmp_path):
    line = demo.RunLine(str(tmp_path / "sup"))
    (tmp_path / "sup").mkdir()
    assert "starting" in line.text(0.0)
    _run(tmp_path, "fix", [{"step": 100, "loss": 1.0}])
    line = demo.RunLine(str(tmp_path / "fix"))
    assert line.text(10.0) == "fix          step  100/1000   ETA --:--"
    with open(tmp_path / "fix" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 200, "loss": 0.8}) + "\n" + json.dumps({"step": 200, "eval_accuracy": 0.5}) + "\n")
    # 100 steps in 20 s, 800 left: 160 s
    assert line.text(30.0) == "fix          step  200/1000   test accuracy 50.0 % at step 200   ETA 2:40"
    (tmp_path / "fix.rc").write_text("0\n")
    assert line.text(31.0) == "fix          done   test accuracy 50.0 % at step 200"
    (tmp_path / "fix.rc").write_text("3\n")
    assert "FAILED (exit 3)" in line.text(32.0) and "fix.log" in line.text(32.0)


def test_watch_into_a_pipe_prints_a_block_and_returns_when_all_runs_ended(tmp_path, capsys):
    a = _run(tmp_path, "a", [{"step": 1000, "eval_accuracy": 0.5}], rc=0)
    b = _run(tmp_path, "b", [], rc=1)
    demo.watch([str(a), str(b)], interval=0.0)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("[0:00] a ") and "done" in out[0] and "FAILED (exit 1)" in out[1]


def test_watch_on_a_terminal_redraws_the_block_in_place(tmp_path, capsys, monkeypatch):
    a = _run(tmp_path, "a", [{"step": 500, "loss": 1.0}])
    monkeypatch.setattr(demo.sys.stdout, "isatty", lambda: True)
    monkeypatch.setattr(demo.time, "sleep", lambda s: (tmp_path / "a.rc").write_text("0\n"))  # ends after one wait
    demo.watch([str(a)])
    out = capsys.readouterr().out
    assert out == "\x1b[2Ka            step  500/1000   ETA --:--\n\x1b[1F\x1b[2Ka            done\n"


def _finished(tmp_path, name, algorithm, right):
    run = tmp_path / name
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"algorithm": algorithm}))
    (run / "data.json").write_text(json.dumps({"labelled": [2, 3], "unlabelled": [40, 50], "test": [5, 5]}))
    rows = ["id,label,pred,confidence"] + [f"t{i},happy,{'happy' if r else 'sad'},0.9" for i, r in enumerate(right)]
    (run / "test_predictions.csv").write_text("\n".join(rows) + "\n")
    return str(run)


def test_explain_names_the_runs_the_margin_and_the_test(tmp_path):
    ref = _finished(tmp_path, "supervised", "supervised", [1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    run = _finished(tmp_path, "fixmatch", "fixmatch", [1, 1, 1, 0, 1, 1, 1, 1, 1, 0])
    text = " ".join(demo.explain(ref, run).split())  # unwrapped
    # 4 vs 8 right of 10; fixmatch alone right on 5, supervised alone on 1:
    # p = 2 * P(X <= 1 | n = 6, 1/2) = 2 * 7 / 64 = 0.21875
    assert "supervised learnt from the 5 labelled faces alone: it gets 40.0 % of the 10 test faces right" in text
    assert "plus 90 unlabelled ones" in text and "80.0 %" in text
    assert "40.0 points better" in text and "5 are fixmatch's and 1 supervised's" in text
    assert "p = 0.22" in text and "could well be luck" in text
    assert f"{tmp_path}/report.html" in text and "test_confusion.png" in text
    assert all(len(line) <= 96 or len(line.split()) == 1 for line in demo.explain(ref, run).splitlines())
    assert "very unlikely" in demo.p_words(0.001) and "weak evidence" in demo.p_words(0.03)
