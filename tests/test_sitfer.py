"""SIT-FER: p_text, p_ins and the fused label on hand-made features; the buffer and its cap; the
co-supervision loss by hand; the text encoders (MiniLM offline, random, CLIP's error); a short
engine run whose text loss decreases and whose fused predictor is saved and reloaded."""
import json
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

from semifer.algorithms import create_algorithm
from semifer.algorithms.sitfer import (FusedPredictor, cosupervision_loss, fuse_mean, fuse_weighted, instance_scores,
                                       parse_levels, text_scores)
from semifer.engine.diagnostics import step_scores
from semifer.text import class_embeddings, class_texts, create_text_encoder, load_descriptions

torch.set_num_threads(1)


def rows(*r):
    return torch.tensor(r, dtype=torch.float32)


def softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


# ---- pure maths on hand-made unit vectors ----------------------------------------------------

def test_p_text_is_cosine_over_temperature_softmax():
    t = rows([1, 0], [0, 1], [-1, 0])                       # three class embeddings
    f = rows([0.6, 0.8])
    s = text_scores(f, t)
    assert torch.allclose(s, rows([0.6, 0.8, -0.6]))
    p = FusedPredictor(2, 2, 3, temperature=0.5)
    p.text_emb.copy_(t)
    got = p.level_scores(f, torch.zeros(1, 3), torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))["text"][1]
    assert torch.allclose(got, torch.tensor([softmax([1.2, 1.6, -1.2])]), atol=1e-6)


def test_p_ins_per_class_max_and_knn_vote():
    mem = rows([1, 0], [0.8, 0.6], [0, 1], [-1, 0])
    lab = torch.tensor([0, 0, 1, 1])
    f = rows([0.6, 0.8])                                      # cosines 0.6, 0.96, 0.8, -0.6
    s, p = instance_scores(f, mem, lab, 3, "max", temperature=0.1)
    assert torch.allclose(s, rows([0.96, 0.8, -1.0]))         # class 2 has no entry: -1
    assert torch.allclose(p, torch.tensor([softmax([9.6, 8.0, -10.0])]), atol=1e-6)
    s, p = instance_scores(f, mem, lab, 3, "knn", k=2, temperature=0.1)
    w = softmax([9.6, 8.0])                                   # the two nearest: class 0, class 1
    assert torch.allclose(p, torch.tensor([[w[0], w[1], 0.0]]), atol=1e-6) and torch.equal(s, p)
    s, p = instance_scores(f, torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), 3)
    assert torch.allclose(p, torch.full((1, 3), 1 / 3))       # empty buffer: uniform


def test_fused_label_mean_and_weighted():
    p_sem, p_text, p_ins = rows([0.5, 0.4, 0.1]), rows([0.1, 0.8, 0.1]), rows([0.3, 0.6, 0.1])
    fused = fuse_mean([p_sem, p_text, p_ins])
    assert torch.allclose(fused, rows([0.3, 0.6, 0.1])) and fused.argmax().item() == 1
    assert p_sem.argmax().item() == 0                         # the semantic level alone is wrong here
    z, s_text = rows([2.0, 0.0, 0.0]), rows([0.0, 1.0, 0.0])
    got = fuse_weighted([z, s_text], [0.6, 0.4])
    assert torch.allclose(got, torch.tensor([softmax([1.2, 0.4, 0.0])]))


def test_cosupervision_loss_by_hand():
    t = rows([1, 0], [0, 1])
    f = rows([1, 0], [0.6, 0.8])
    y = torch.tensor([0, 0])
    # sample 1: logits (10, 0); sample 2: logits (6, 8); T = 0.1
    want = (-math.log(softmax([10, 0])[0]) - math.log(softmax([6, 8])[0])) / 2
    assert abs(float(cosupervision_loss(f, t, y, 0.1)) - want) < 1e-5


def test_levels_parse_and_reject():
    assert parse_levels("ins, sem") == ("sem", "ins")
    with pytest.raises(ValueError, match="levels"):
        parse_levels("text,ins")
    with pytest.raises(ValueError, match="levels"):
        parse_levels("sem,txt")


# ---- the buffer ------------------------------------------------------------------------------

class Tiny(nn.Module):
    num_features = 2

    def forward(self, x):
        return x, x


def make_algo(**kw):
    algo = create_algorithm("sitfer", 3, total_steps=10, text_encoder="random", text_dim=2, **kw)
    algo.setup(Tiny())
    algo.setup_data(SimpleNamespace(classes=("neutral", "happy", "sad"), labelled=[9, 2, 5]))
    return algo


def test_buffer_labelled_slots_and_pseudo_cap(tmp_path):
    algo = make_algo(ins_pseudo_cap=2, text_cache_dir=str(tmp_path))
    algo.update_labelled(rows([1, 0], [0, 1]), torch.tensor([0, 1]), torch.tensor([5, 2]))
    feats, labels = algo.memory()
    assert feats.tolist() == [[0, 1], [1, 0]] and labels.tolist() == [1, 0]   # slots in train-index order
    algo.update_labelled(rows([0.6, 0.8]), torch.tensor([2]), torch.tensor([5]))  # overwritten, not added
    feats, labels = algo.memory()
    assert len(feats) == 2 and labels.tolist() == [1, 2]
    with pytest.raises(ValueError, match="labelled set"):
        algo.update_labelled(rows([1, 0]), torch.tensor([0]), torch.tensor([3]))
    # three confident class-0 samples into a cap of 2: the oldest is dropped; unconfident ignored
    f = rows([1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1])
    algo.insert_pseudo(f, torch.tensor([0, 0, 0, 1]), torch.tensor([True, True, True, False]))
    assert algo.pl_valid.sum().item() == 2 and algo.pl_valid[1].sum().item() == 0
    stored = {tuple(round(v, 3) for v in r) for r in algo.pl_feat[0].tolist()}
    assert stored == {(0.8, 0.6), (0.6, 0.8)}
    feats, labels = algo.memory()
    assert len(feats) == 4 and labels.tolist() == [1, 2, 0, 0]


class Net(nn.Module):
    """A linear classifier on 3-d inputs that are their own features: (feat, logits)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return x, self.lin(x)


def test_step_logs_every_level_and_respects_ablation():
    torch.manual_seed(0)

    algo = create_algorithm("sitfer", 3, total_steps=10, text_encoder="random", text_dim=4, levels="sem",
                            lambda_t=0.0, tau=0.0)
    net = Net()
    algo.setup(SimpleNamespace(num_features=3))
    algo.setup_data(SimpleNamespace(classes=("neutral", "happy", "sad"), labelled=[0, 1, 2, 3]))
    batch = {"x": torch.randn(4, 3), "y": torch.tensor([0, 1, 2, 0]), "x_idx": torch.tensor([0, 1, 2, 3]),
             "u_w": torch.randn(6, 3), "u_s": torch.randn(6, 3)}
    out = algo.step(net, batch, 0)
    assert list(out.levels) == ["sem", "text", "ins", "fused"]   # every level, whatever is switched on
    # semantic only: the fused pseudo-label is the classifier's
    _, logits = net(batch["u_w"])
    assert torch.equal(out.pseudo_labels, logits.argmax(-1))
    assert torch.equal(out.levels["fused"][0], out.levels["sem"][0])
    # the engine scores each level against the truth it holds (tau = 0: every mask is full)
    truth = torch.tensor([0, 1, 2, 0, 1, 2])
    scores = step_scores(out, truth)
    for name in ("sem", "text", "ins", "fused"):
        right = (out.levels[name][0] == truth).float().mean().item()
        assert scores[f"pl_acc_{name}"] == pytest.approx(right) == scores[f"pl_acc_{name}_masked"]
        assert scores[f"mask_{name}"] == 1.0
    assert scores["pl_acc_fused"] == scores["pl_acc_sem"] == scores["pl_acc_all"]
    # lambda_t = 0: the projection head gets no gradient
    out.loss.backward()
    assert algo.predictor.proj.weight.grad is None or algo.predictor.proj.weight.grad.abs().sum() == 0


# ---- text encoders ---------------------------------------------------------------------------

def test_minilm_offline_unit_vectors_and_similarity(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = create_text_encoder("minilm")
    assert enc.dim == 384
    e = enc.encode(["A face image of happiness.", "A smiling, joyful face.", "The train leaves at noon."])
    assert e.shape == (3, 384) and torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.2
    # class embeddings: cached on disk, the second call reads the file
    texts = class_texts(["happy", "sad"], descriptions="default")
    t1 = class_embeddings(enc, texts, str(tmp_path))
    assert len(os.listdir(tmp_path)) == 1 and t1.shape == (2, 384)
    enc._encode = None                                         # would fail if called again
    assert torch.equal(class_embeddings(enc, texts, str(tmp_path)), t1)


def test_random_encoder_fixed_per_text():
    a, b = create_text_encoder("random", dim=64, seed=1), create_text_encoder("random", dim=64, seed=1)
    ea, eb = a.encode(["x", "y"]), b.encode(["y", "x"])
    assert torch.equal(ea[0], eb[1]) and torch.allclose(ea.norm(dim=1), torch.ones(2))
    assert not torch.allclose(ea, create_text_encoder("random", dim=64, seed=2).encode(["x", "y"]))


def test_each_text_encoder_takes_only_its_own_options():
    from semifer.text import text_encoder_options

    given = dict(model="ViT-B-32", checkpoint_path=None, pretrained="openai", dim=8)
    assert text_encoder_options("random", given) == {"dim": 8}
    assert text_encoder_options("minilm", given) == {}
    assert text_encoder_options("clip", given) == dict(model="ViT-B-32", checkpoint_path=None, pretrained="openai")
    # SIT-FER holds every encoder's settings and hands the chosen one its own
    assert create_algorithm("sitfer", 3, text_encoder="random", text_dim=8, text_model="ViT-B-32").encoder.dim == 8


def test_clip_refuses_to_download():
    with pytest.raises((ImportError, FileNotFoundError), match="clip"):
        create_text_encoder("clip", checkpoint_path="/nonexistent/clip.bin")


def test_descriptions_template_and_file(tmp_path):
    assert class_texts(["happy", "custom"]) == [["A face image of happiness."], ["A face image of custom."]]
    table = load_descriptions("default")
    assert {"neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt"} <= set(table)
    p = tmp_path / "d.yaml"
    p.write_text("happy: [Smiling., Laughing.]\n")
    assert class_texts(["happy"], template=None, descriptions=str(p)) == [["Smiling.", "Laughing."]]
    with pytest.raises(ValueError, match="no entry for class 'sad'"):
        class_texts(["sad"], descriptions=str(p))
    p.write_text("happy: {word: joy}\n")
    with pytest.raises(ValueError, match="non-empty list of sentences"):
        load_descriptions(str(p))


# ---- a short engine run ----------------------------------------------------------------------

def test_short_run_text_loss_decreases_and_fused_predictor_reloads(tiny, tmp_path):
    from semifer.config import load_config
    from semifer.engine.evaluate import predict_probs
    from semifer.engine.model_io import load_fused_model
    from semifer.engine.train import train

    over = [o for o in tiny if not o.startswith(("train.iterations", "train.log_every", "train.eval_every",
                                                 "train.ckpt_every"))]
    cfg = load_config(overrides=over + [
        "train.iterations=30", "train.log_every=10", "train.eval_every=30", "train.ckpt_every=30",
        "algorithm.name=sitfer", "algorithm.text_encoder=random", "algorithm.text_dim=32",
        f"algorithm.text_cache_dir={tmp_path / 'text'}"])
    summary = train(cfg)
    recs = [json.loads(line) for line in open(os.path.join(cfg.out, "metrics.jsonl"))]
    loss_t = [r["loss_t"] for r in recs if "loss_t" in r]
    assert len(loss_t) == 3 and loss_t[-1] < loss_t[0]
    assert {"pl_acc_text", "pl_acc_ins", "pl_acc_fused"} <= set(recs[0])
    assert 0.0 <= summary["fused_accuracy"] <= 1.0
    fused, meta = load_fused_model(cfg.out)
    assert fused is not None and meta["predictor"]["levels"] == ["sem", "text", "ins"]
    images = np.zeros((4, 32, 32, 1), dtype=np.uint8) + 128
    p = predict_probs(fused, images, torch.device("cpu"), meta["mean"], meta["std"])
    assert p.shape == (4, 7) and np.allclose(p.sum(1), 1, atol=1e-4)


def test_ins_tau_gates_the_buffer_not_the_loss():
    # tau gates L_u; ins_tau alone decides which pseudo-labelled features enter the buffer
    torch.manual_seed(0)
    batch = {"x": torch.randn(4, 3), "y": torch.tensor([0, 1, 2, 0]), "x_idx": torch.tensor([0, 1, 2, 3]),
             "u_w": torch.randn(6, 3), "u_s": torch.randn(6, 3)}
    inserted, masked = [], []
    for tau, ins_tau in ((0.0, 1.01), (1.01, 0.0)):
        algo = create_algorithm("sitfer", 3, total_steps=10, text_encoder="random", text_dim=4,
                                levels="sem,ins", tau=tau, ins_tau=ins_tau)
        algo.setup(SimpleNamespace(num_features=3))
        algo.setup_data(SimpleNamespace(classes=("neutral", "happy", "sad"), labelled=[0, 1, 2, 3]))
        out = algo.step(Net(), batch, 0)
        inserted.append(int(algo.pl_valid.sum()))
        masked.append(int(out.mask.sum()))
    assert masked == [6, 0] and inserted == [0, 6]
    assert create_algorithm("sitfer", 3, text_encoder="random", text_dim=4, tau=0.8).ins_tau == 0.8  # default: tau
