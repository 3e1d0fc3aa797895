"""cross_teacher in the engine: the peer starts from ``peer_init``, trains beside the model, and
benchmarks/peer_run.py turns its teacher into a run folder that loads and evaluates like any run.
(The loss against hand arithmetic is in test_algorithms.py, the exact resume in test_resume.py.)"""
import importlib.util
import json
import os

import numpy as np
import torch

from semifer import checkpoint as ckpt
from semifer.algorithms import create_algorithm
from semifer.config import load_config
from semifer.engine.train import train
from semifer.models import create_model
from semifer.models.io import load_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _peer_run_module():
    spec = importlib.util.spec_from_file_location("peer_run", os.path.join(ROOT, "benchmarks", "peer_run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peer_starts_from_peer_init_and_becomes_a_run_of_its_own(tiny, tmp_path):
    init = tmp_path / "init"
    train(load_config(None, tiny + [f"out={init}", "algorithm.name=supervised"]))
    init_backbone = ckpt.split_prefix(ckpt.load_weights(str(init / "ckpt" / "last.safetensors"))[0], "ema.backbone.")

    model = create_model("cnn_small", 7, in_chans=1)
    algo = create_algorithm("cross_teacher", 7, peer_init=str(init))
    algo.setup(model)
    for k, v in algo.peer.backbone.state_dict().items():   # the peer from the file, the model untouched
        assert torch.equal(v, init_backbone[k]), k
        assert torch.equal(algo.peer_teacher.backbone.state_dict()[k], v)
    assert not torch.equal(model.backbone.state_dict()[k], init_backbone[k])

    run = tmp_path / "cross"
    summary = train(load_config(None, tiny + [f"out={run}", "algorithm.name=cross_teacher",
                                              f"algorithm.peer_init={init}", "algorithm.tau=0.0"]))
    assert summary["iterations"] == 6
    logged = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss_u_peer" in r]
    assert logged and all(0 <= r["teachers_agree"] <= 1 for r in logged)

    peer = _peer_run_module().write_peer_run(str(run))
    assert peer == str(run) + "_peer"
    state = ckpt.load_state(str(run / "ckpt" / "last_state.pt"))["algorithm"]
    net, meta = load_model(peer)
    assert meta["peer_of"] == str(run) and len(meta["classes"]) == 7
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[f"peer_teacher.{k}"]), k
    a, _ = load_model(str(run))
    x = torch.randn(2, 1, 32, 32)
    assert not np.allclose(net(x)[1].detach().numpy(), a(x)[1].detach().numpy())   # two networks
    assert (tmp_path / "cross_peer" / "config.yaml").exists()

