"""SimCLR pre-training (``semifer pretrain method=simclr``): NT-Xent by hand, and a CNN encoder
that loads into the classifier ``semifer train model.init=`` builds."""
import math

import pytest
import torch

from semifer import checkpoint as ckpt
from semifer.models import create_model
from semifer.models.io import init_from
from semifer.ssl import pretrain as pre
from semifer.ssl.simclr import SimCLR, global_nt_xent, nt_xent

TINY_CNN = ["model.name=cnn_small", "model.options={widths: [8, 16]}"]


def test_nt_xent_by_hand():
    # Two images, two orthogonal directions: view 1 of image a = view 2 of image a = e1, same for b
    # with e2. Each anchor sees its partner at cosine 1 and the other two views at 0.
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[2.0, 0.0], [0.0, 3.0]])     # lengths do not matter: cosines
    loss, acc = nt_xent(z1, z2, tau=0.5)
    assert loss.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 2)), rel=1e-6)
    assert acc.item() == 1.0
    # Swap image b's second view for image a's direction: b's anchors now face a tie they lose.
    z2 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    loss, acc = nt_xent(z1, z2, tau=1.0)
    # anchors a1, a2: partner 1, others {b1: 0, b2: 1} -> -log(e / (e + 1 + e)); two of them
    # anchor b1 (0, 1): partner b2 (1, 0) at 0, others a1 0, a2 0 -> -log(1 / 3)
    # anchor b2 (1, 0): partner b1 at 0, others a1 1, a2 1 -> -log(1 / (1 + 2e))
    e = math.e
    by_hand = (2 * -math.log(e / (2 * e + 1)) - math.log(1 / 3) - math.log(1 / (1 + 2 * e))) / 4
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)


def test_simclr_gradient_reaches_the_encoder():
    enc = create_model("cnn_small", 7, 1, widths=(8, 16)).backbone
    model = SimCLR(enc, proj_dim=4, temperature=0.2)
    assert model.projector[0].in_features == 16 and model.projector[-1].out_features == 4
    loss, acc = model(torch.randn(6, 1, 16, 16), torch.randn(6, 1, 16, 16))
    loss.backward()
    assert torch.isfinite(loss) and 0 <= acc.item() <= 1
    assert enc.stages[0][0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="temperature"):
        SimCLR(enc, temperature=0)


def _cfg(tmp_path, *extra):
    return pre.load_pretrain_config(None, [
        f"out={tmp_path / 'run'}", "method=simclr", "data.sources=synthetic:?n=120", "data.size=32",
        f"data.cache_dir={tmp_path / 'cache'}", *TINY_CNN, "train.batch_size=8", "train.iterations=3",
        "train.warmup=1", "train.log_every=1", "train.threads=1", *extra])


def test_simclr_pretrain_writes_an_encoder_the_classifier_loads(tmp_path, capsys):
    summary = pre.pretrain(_cfg(tmp_path))
    assert summary["kind"] == "simclr_pretrain" and summary["iterations"] == 3
    assert "positive found" in capsys.readouterr().out
    path = str(tmp_path / "run" / "encoder.safetensors")
    weights, meta = ckpt.load_weights(path)
    assert meta["kind"] == "simclr_encoder" and all(k.startswith("encoder.") for k in weights)
    model = create_model("cnn_small", 7, 1, widths=(8, 16))
    report = init_from(model, path)
    assert report["loaded"] == sorted(model.backbone.state_dict()) and not report["missing"]
    w = "stages.0.0.weight"
    assert torch.equal(model.backbone.state_dict()[w], weights[f"encoder.{w}"])
    assert not (tmp_path / "run" / "vis").exists()   # the reconstruction grid is MAE's


def test_unknown_method_is_named(tmp_path):
    with pytest.raises(ValueError, match="method='byol'; expected one of mae, simclr"):
        pre.pretrain(_cfg(tmp_path, "method=byol"))


def test_views_are_drawn_outside_autocast(tmp_path, monkeypatch):
    """Under bf16 autocast the crop's sampling grid loses precision (measured: 78 % of the pixels of
    a random-resized crop change, by 2.3 gray levels on average), so augmentation stays in fp32."""
    seen = []

    def spy(x, *args, **kw):
        seen.append(torch.is_autocast_enabled("cpu"))
        return strong_view(x, *args, **kw)

    from semifer.data.transforms import strong_view
    monkeypatch.setattr(pre, "strong_view", spy)
    pre.pretrain(_cfg(tmp_path, "train.amp=bf16", "train.iterations=1"))
    assert seen and not any(seen)


def test_linear_probe_reads_out_the_features(tmp_path):
    """benchmarks/linear_probe.py: features that hold the class score 100 % by both read-outs,
    features that do not score at chance; and the script probes a real encoder file end to end."""
    import importlib.util
    import json
    import os
    import subprocess
    import sys

    import numpy as np

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("linear_probe", os.path.join(root, "benchmarks", "linear_probe.py"))
    lp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lp)
    rng = np.random.default_rng(0)
    y, y_test = np.repeat(np.arange(3), 20), np.repeat(np.arange(3), 10)
    onehot = lambda labels: np.eye(3)[labels] * 5 + rng.normal(0, 0.1, (len(labels), 3))  # noqa: E731
    assert lp.probe(onehot(y), y, onehot(y_test), y_test, k=5) == {"linear_probe": 1.0, "knn5": 1.0}
    noise = lp.probe(rng.normal(size=(60, 3)), y, rng.normal(size=(30, 3)), y_test, k=5)
    assert noise["linear_probe"] < 0.7 and noise["knn5"] < 0.7

    pre.pretrain(_cfg(tmp_path))
    encoder = str(tmp_path / "run" / "encoder.safetensors")
    out = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "linear_probe.py"), "--data", "synthetic:?n=140",
                          "--encoders", "random", encoder, "--config", "", "-k", "3", *TINY_CNN,
                          "data.labels_per_class=4", "data.size=32", f"data.cache_dir={tmp_path / 'cache'}"],
                         capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["encoder"] for r in rows] == ["random", encoder]
    assert all(r["labelled"] == 28 and r["dim"] == 16 and 0 <= r["linear_probe"] <= 100 for r in rows)


def _two_views() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)


def _rank_global_nt_xent(rank: int):
    """Rank r holds rows 3r..3r+2 of a 6-image batch; returns its loss and its rows' gradient."""
    z1, z2 = _two_views()
    rows = slice(3 * rank, 3 * rank + 3)
    a, b = z1[rows].clone().requires_grad_(), z2[rows].clone().requires_grad_()
    loss, acc = global_nt_xent(a, b, tau=0.5)
    loss.backward()
    return loss.detach(), acc, a.grad, b.grad


def test_simclr_negatives_span_all_ranks(on_ranks):
    """Under torchrun the NT-Xent is the single-process one on the global batch (2N = 12 views,
    10 negatives each), and a rank's gradient, once DDP averages it over the 2 ranks, is that loss's."""
    z1, z2 = (z.requires_grad_() for z in _two_views())
    full, full_acc = nt_xent(z1, z2, tau=0.5)
    full.backward()
    for rank, (loss, acc, g1, g2) in enumerate(on_ranks(_rank_global_nt_xent)):
        rows = slice(3 * rank, 3 * rank + 3)
        assert torch.allclose(loss, full.detach(), atol=1e-6) and torch.isclose(acc, full_acc)
        assert torch.allclose(g1 / 2, z1.grad[rows], atol=1e-6) and torch.allclose(g2 / 2, z2.grad[rows], atol=1e-6)
