"""Model selection on a validation split, never on the test split (issue 18 item 7): where the
validation split comes from, that it drives ckpt/best, and that the test split is scored once."""
import json

import numpy as np
import pytest

from semifer.checkpoint import load_weights
from semifer.config import load_config
from semifer.data.prepare import prepare
from semifer.engine import train as train_mod
from semifer.engine.run_dir import RunFolderError
from semifer.engine.train import train


def _data(tiny, *extra):
    return prepare(load_config(None, tiny + list(extra)).data)


def test_val_fraction_is_carved_stratified_and_apart(tiny):
    data = _data(tiny, "data.val_fraction=0.25")
    pool_counts = np.bincount(data.true_labels, minlength=7)   # synthetic n=240: all items usable
    assert np.bincount(data.val_labels, minlength=7).tolist() == [round(0.25 * n) for n in pool_counts]
    val = {data.val_ids[i] for i in range(len(data.val_ids))}
    labelled = {data.train_ids[i] for i in data.labelled}
    unlabelled = {data.train_ids[i] for i in data.unlabelled}
    assert not val & labelled and not val & unlabelled and not val & set(data.test_ids)
    assert len(val) + len(labelled) + len(unlabelled) == len(data.train_ids)   # unlabelled=rest
    assert np.bincount(data.train_labels[data.labelled], minlength=7).tolist() == [6] * 7
    assert data.val_source == "val_fraction" and all(i.startswith("train/") for i in data.val_ids)
    again = _data(tiny, "data.val_fraction=0.25")
    assert again.val_ids == data.val_ids and np.array_equal(again.labelled, data.labelled)


def test_own_val_split_unless_it_is_the_test_split(tiny):
    own = _data(tiny)
    assert own.val_source == "dataset" and own.val_ids[0].startswith("val/") and own.test_ids[0].startswith("test/")
    none = _data(tiny, "data.test_split=val")   # FER2013's benchmark setting: val is the test split
    assert none.val_name == "" and len(none.val_labels) == 0 and none.test_ids[0].startswith("val/")
    # without a val split the labelled and unlabelled sets are those of before (val_fraction 0)
    assert np.array_equal(none.labelled, own.labelled) and np.array_equal(none.unlabelled, own.unlabelled)


def _counting(monkeypatch, val_right: list[bool]):
    """Count predict_probs calls per split; the n-th val call is all right or all wrong
    (``val_right[n]``), every test call all right. Returns the call counts."""
    calls, held = {"val": 0, "test": 0}, {}
    real_prepare = train_mod.prepare

    def prepare_(*a, **k):
        held["data"] = real_prepare(*a, **k)
        return held["data"]

    def predict(model, images, *a, **k):
        data = held["data"]
        if images is data.val_images:
            right, labels = val_right[calls["val"]], data.val_labels
            calls["val"] += 1
        else:
            assert images is data.test_images
            right, labels = True, data.test_labels
            calls["test"] += 1
        return np.eye(7, dtype=np.float32)[labels if right else (labels + 1) % 7]

    monkeypatch.setattr(train_mod, "prepare", prepare_)
    monkeypatch.setattr(train_mod, "predict_probs", predict)
    return calls


def _step_of(path) -> int:
    return load_weights(str(path))[1]["step"]


def test_best_is_chosen_on_val_and_test_is_scored_once(tiny, tmp_path, monkeypatch):
    calls = _counting(monkeypatch, val_right=[True, False])   # evaluations at steps 3 and 6
    summary = train(load_config(None, tiny + ["data.val_fraction=0.25"]))
    assert calls == {"val": 2, "test": 1}
    assert summary["best_on"] == "val" and summary["best_val_accuracy"] == 1.0 and summary["best_step"] == 3
    assert summary["test_accuracy"] == summary["accuracy"] == 1.0 and summary["val_source"] == "val_fraction"
    run = tmp_path / "run"
    assert _step_of(run / "ckpt" / "best.safetensors") == 3 and _step_of(run / "ckpt" / "last.safetensors") == 6
    evals = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "eval_accuracy" in r]
    assert [(r["step"], r["eval_split"], r["eval_accuracy"]) for r in evals] == [(3, "val", 1.0), (6, "val", 0.0)]
    assert json.loads((run / "test.json").read_text())["accuracy"] == 1.0
    assert "val" in json.loads((run / "data.json").read_text())


def test_without_val_best_is_the_last_weights(tiny, tmp_path, monkeypatch):
    calls = _counting(monkeypatch, val_right=[])
    summary = train(load_config(None, tiny + ["data.test_split=val"]))
    assert calls == {"val": 0, "test": 3}   # monitored at steps 3 and 6, then the final score
    assert summary["best_on"] == "last" and summary["best_val_accuracy"] is None and summary["best_step"] == 6
    assert summary["val_data"] is None and "best_eval_accuracy" not in summary
    ckpt = tmp_path / "run" / "ckpt"
    assert _step_of(ckpt / "best.safetensors") == 6
    best, last = load_weights(str(ckpt / "best.safetensors"))[0], load_weights(str(ckpt / "last.safetensors"))[0]
    assert best.keys() == last.keys() and all(np.array_equal(best[k].numpy(), last[k].numpy()) for k in best)
    evals = [r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
             if "eval_accuracy" in r]
    assert {r["eval_split"] for r in evals} == {"test"}


def test_resume_keeps_the_val_split(tiny, tmp_path, monkeypatch, interrupt_at):
    held = []
    real_prepare = train_mod.prepare
    monkeypatch.setattr(train_mod, "prepare", lambda *a, **k: held.append(real_prepare(*a, **k)) or held[-1])
    cfg = tiny + ["data.val_fraction=0.25"]
    interrupt_at(4)
    assert train(load_config(None, cfg))["interrupted"]
    record = json.loads((tmp_path / "run" / "data.json").read_text())
    with pytest.raises(RunFolderError, match="data.val_fraction: 0.25 in the run, 0.5 now"):
        train(load_config(None, tiny + ["data.val_fraction=0.5", "resume=true"]))
    train(load_config(None, cfg + ["resume=true"]))
    assert held[-1].val_ids == held[0].val_ids and np.array_equal(held[-1].labelled, held[0].labelled)
    assert json.loads((tmp_path / "run" / "data.json").read_text()) == record
    assert record["val_source"] == "val_fraction" and sum(record["val"]) == len(held[0].val_ids)
