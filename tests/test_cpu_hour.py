"""The options of the CPU-hour recipes: epochs, test-time mirror, cnn depths, and the
throughput benchmark's FLOP count."""
import copy
import importlib.util
import math
import os

import numpy as np
import pytest
import torch

from semifer.config import load_config
from semifer.data.transforms import SHIFTS, shifted_views
from semifer.engine.evaluate import predict_probs
from semifer.engine.train import train
from semifer.models import create_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_epochs_set_iterations_from_the_labelled_set(tiny):
    # 42 labelled images (6 per class) at batch 8: 2.5 epochs = ceil(105 / 8) = 14 steps
    summary = train(load_config(None, tiny + ["train.epochs=2.5", "train.iterations=999"]))
    assert summary["iterations"] == math.ceil(2.5 * 42 / 8) == 14


class _LeftRight(torch.nn.Module):
    """Logits that tell left-heavy images from right-heavy ones: a mirror flips its answer."""

    def forward(self, x):
        w = x.shape[-1]
        left, right = x[..., : w // 2].mean((1, 2, 3)), x[..., w // 2:].mean((1, 2, 3))
        logits = torch.stack([left - right, right - left], 1) * 10
        return None, logits


def test_eval_flip_averages_image_and_mirror():
    images = np.zeros((3, 8, 8, 1), np.uint8)
    images[:, :, :4] = 255                                      # bright left half
    plain = predict_probs(_LeftRight(), images, torch.device("cpu"))
    flipped = predict_probs(_LeftRight(), images[:, :, ::-1].copy(), torch.device("cpu"))
    both = predict_probs(_LeftRight(), images, torch.device("cpu"), flip=True)
    assert plain[0, 0] > 0.99 and flipped[0, 1] > 0.99
    np.testing.assert_allclose(both, (plain + flipped) / 2, atol=1e-6)
    np.testing.assert_allclose(both, 0.5, atol=1e-6)            # the symmetric answer


class _Where(torch.nn.Module):
    """Logits that locate the single bright pixel: one class per pixel of the image."""

    def forward(self, x):
        return None, x.flatten(1) * 50


def test_shifted_views_move_the_image_with_reflection():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    views = shifted_views(x, 1)
    assert len(views) == 9 and torch.equal(views[0], x)
    assert all(v.shape == x.shape for v in views)
    # SHIFTS[1] = (1, 0): the view starts one row down; its last row reflects back to row 2
    assert torch.equal(views[1][0, 0], torch.cat([x[0, 0, 1:], x[0, 0, 2:3]]))
    assert shifted_views(x, 0) == [x]
    with pytest.raises(ValueError, match="test-time shift of 4 px needs images over 4 px a side"):
        shifted_views(x, 4)


def test_eval_shift_averages_the_nine_shifted_views_and_their_mirrors():
    images = np.zeros((1, 8, 8, 1), np.uint8)
    images[0, 3, 2] = 255                                       # one bright pixel, off the centre
    plain = predict_probs(_Where(), images, torch.device("cpu"), mean=0.0, std=1.0)
    assert plain[0].argmax() == 3 * 8 + 2
    shifted = predict_probs(_Where(), images, torch.device("cpu"), mean=0.0, std=1.0, shift=0.125)  # 1 px
    # each view puts the pixel at one of 9 places around it, each with probability ~1 / 9
    where = {(3 - dy, 2 - dx) for dy, dx in SHIFTS}
    np.testing.assert_allclose(sorted(shifted[0])[-9:], 1 / 9, atol=1e-4)
    assert {divmod(int(i), 8) for i in np.argsort(shifted[0])[-9:]} == where
    both = predict_probs(_Where(), images, torch.device("cpu"), mean=0.0, std=1.0, flip=True, shift=0.125)
    mirrored = {(r, 7 - c) for r, c in where}
    assert {divmod(int(i), 8) for i in np.argsort(both[0])[-18:]} == where | mirrored
    np.testing.assert_allclose(both[0].sum(), 1.0, atol=1e-5)


def _convs(model):
    return sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def test_cnn_depths_per_stage():
    assert _convs(create_model("cnn_small", 7)) == 8           # 2 per stage, as before
    assert _convs(create_model("cnn_fer", 7)) == 1 + 2 + 3 + 3
    model = create_model("cnn_small", 7, widths=(8, 16), depths=(1, 3))
    assert _convs(model) == 4
    assert model.forward_features(torch.zeros(2, 1, 48, 48)).shape == (2, 16, 12, 12)
    with pytest.raises(ValueError, match="one count >= 1 per stage"):
        create_model("cnn_small", 7, widths=(8, 16), depths=(1, 2, 3))


def test_throughput_counts_flops_of_a_conv_by_hand():
    spec = importlib.util.spec_from_file_location("throughput", os.path.join(ROOT, "benchmarks", "throughput.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1, bias=False)
    x = torch.randn(1, 2, 4, 4)
    # forward: 2 FLOPs per multiply-add, 3 out x 16 px x (2 in x 9 taps)
    assert mod.flops_of(lambda: conv(x)) == 2 * 3 * 16 * 2 * 9
    assert mod.parse_model('cnn_small{"widths": [8, 16]}') == ("cnn_small", {"widths": [8, 16]})


def test_switching_the_algorithm_drops_the_recipes_options(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("algorithm:\n  name: ema_teacher\n  tau: 0.7\n  teacher_momentum: 0.99\n")
    cfg = load_config(str(recipe), ["algorithm.name=supervised"])
    assert cfg.algorithm == {"name": "supervised"}
    assert "options tau, teacher_momentum are dropped" in capsys.readouterr().out
    cfg = load_config(str(recipe), ["algorithm.name=fixmatch", "algorithm.tau=0.8"])
    assert cfg.algorithm == {"name": "fixmatch", "tau": 0.8}                 # an override is kept
    cfg = load_config(str(recipe), ["algorithm.tau=0.85"])                   # same algorithm: merged
    assert cfg.algorithm == {"name": "ema_teacher", "tau": 0.85, "teacher_momentum": 0.99}


@pytest.mark.parametrize("recipe", ["fer2013_cpu_hour.yaml", "fer2013_cpu_hour_ssl.yaml"])
@pytest.mark.parametrize("algorithm", [None, "supervised"])
def test_cpu_hour_recipes_build(recipe, algorithm):
    from semifer.algorithms import create_algorithm

    cfg = load_config(os.path.join(ROOT, "recipes", recipe), [f"algorithm.name={algorithm}"] if algorithm else [])
    options = {k: v for k, v in cfg.algorithm.items() if k != "name"}
    create_algorithm(cfg.algorithm["name"], 7, 10, 100, **options)
    model = create_model(cfg.model.name, 7, drop_rate=cfg.model.drop_rate, **cfg.model.options)
    assert model(torch.zeros(2, 1, 48, 48))[1].shape == (2, 7)
    assert cfg.train.eval_flip and cfg.train.eval_shift == 0.06 and cfg.train.threads == 1


def test_amp_fast_is_bf16_only_where_the_hardware_has_it(monkeypatch):
    from semifer.engine import evaluate

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert evaluate.resolve_amp("auto", cpu) == "none" and evaluate.resolve_amp("auto", cuda) == "bf16"
    monkeypatch.setattr(evaluate, "cpu_has_native_bf16", lambda: False)
    assert evaluate.resolve_amp("fast", cpu) == "none" and evaluate.resolve_amp("fast", cuda) == "bf16"
    monkeypatch.setattr(evaluate, "cpu_has_native_bf16", lambda: True)
    assert evaluate.resolve_amp("fast", cpu) == "bf16"
    assert evaluate.resolve_amp("none", cpu) == "none"
    with pytest.raises(ValueError, match="expected auto, fast"):
        evaluate.resolve_amp("fp8", cpu)


def test_channels_last_gradients_match_a_float64_reference():
    # NHWC is a memory layout, not a different model: one step's gradients equal float64's.
    torch.manual_seed(0)
    model = create_model("cnn_fer", num_classes=7, in_chans=1, widths=(8, 16, 32, 64))
    reference = copy.deepcopy(model).double()
    nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x, y = torch.randn(4, 1, 48, 48), torch.tensor([0, 1, 2, 3])
    for net, inputs in ((nhwc, x), (reference, x.double())):
        torch.nn.functional.cross_entropy(net(inputs)[1], y).backward()
    for (name, p), (_, ref) in zip(nhwc.named_parameters(), reference.named_parameters()):
        err = (p.grad.double() - ref.grad).abs().max() / ref.grad.abs().max().clamp(min=1e-12)
        assert err < 1e-4, f"{name}: relative gradient error {err:.1e}"


def test_channels_last_run_checkpoint_loads_into_a_plain_model(tmp_path):
    from semifer.checkpoint import load_weights, split_prefix
    from conftest import TINY

    run = tmp_path / "run"
    summary = train(load_config(None, TINY + [f"data.cache_dir={tmp_path / 'cache'}", f"out={run}",
                                              "algorithm.name=supervised", "train.channels_last=true"]))
    assert summary["iterations"] == 6
    weights, _ = load_weights(str(run / "ckpt" / "last.safetensors"))  # written contiguous
    fresh = create_model("cnn_small", num_classes=7, in_chans=1)
    fresh.load_state_dict(split_prefix(weights, "model."))
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_ensemble_of_runs_scores_the_mean_probability(tiny, tmp_path):
    """benchmarks/ensemble.py: a run with itself scores what the run scored; two runs score the
    argmax of their mean probability, and the row pairs with its first member's split."""
    from semifer.engine.evaluate import correctness

    spec = importlib.util.spec_from_file_location("ensemble", os.path.join(ROOT, "benchmarks", "ensemble.py"))
    ensemble = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ensemble)
    runs = []
    for seed in (0, 1):
        run = tmp_path / f"run{seed}"
        summary = train(load_config(None, tiny + [f"out={run}", "algorithm.name=supervised", f"train.seed={seed}",
                                                  "train.eval_flip=true"]))
        runs.append((str(run), summary))
    data = "synthetic:?n=240"
    row = {"run": runs[0][0], "dataset": data, "algorithm": "supervised", "seed": 0, "overrides": ["x=1"],
           "labels_per_class": 6, "iterations": 6, "model": "cnn_small", "curves": []}
    cpu = torch.device("cpu")
    same = ensemble.ensemble_row([runs[0][0], runs[0][0]], data, [row], cpu)
    assert same["val_accuracy"] == pytest.approx(runs[0][1]["accuracy"])
    assert same["overrides"] == ["x=1", "ensemble:2", "run0"] and "curves" not in same

    both = ensemble.ensemble_row([runs[0][0], runs[1][0]], data, [row], cpu)
    (p0, y, ids, classes, _), (p1, *_) = (ensemble.member_probs(r, data, cpu) for r, _ in runs)
    mean_pred = (p0 + p1).argmax(1)
    assert both["val_accuracy"] == pytest.approx(float((mean_pred == y).mean()))
    _, right = correctness({i: (classes[a], classes[b]) for i, a, b in zip(ids, y, mean_pred)})
    assert both["val_correct"] == "".join("1" if r else "0" for r in right)
    with pytest.raises(ValueError, match="no row of it"):
        ensemble.ensemble_row([runs[1][0], runs[0][0]], data, [row], cpu)
