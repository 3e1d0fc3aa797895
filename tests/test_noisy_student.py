"""Noisy Student end to end: a run whose teacher is another run's checkpoint (its loss by hand and
its fixed teacher: tests/test_algorithms.py)."""
import json
import math

import pytest
import torch

from semifer.algorithms import create_algorithm
from semifer.config import load_config
from semifer.engine.train import train


def test_a_student_learns_from_another_runs_checkpoint(tiny, tmp_path):
    teacher_run = tmp_path / "teacher"
    train(load_config(None, tiny + [f"out={teacher_run}", "algorithm.name=supervised"]))
    cfg = load_config(None, tiny + [f"out={tmp_path / 'student'}", "algorithm.name=noisy_student",
                                    f"algorithm.teacher={teacher_run}"])
    summary = train(cfg)
    assert summary["unlabelled_used"] > 0 and math.isfinite(summary["accuracy"])
    logged = [json.loads(line) for line in open(tmp_path / "student" / "metrics.jsonl")]
    assert any("loss_u" in r for r in logged)
    with pytest.raises(ValueError, match="classes"):     # a teacher of other classes is refused
        create_algorithm("noisy_student", 4, teacher=str(teacher_run)).teachers(torch.device("cpu"))


def test_a_list_of_teachers_labels_with_their_mean_probability():
    class RowLogits(torch.nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(scale))

        def forward(self, x):
            return x, x * self.scale

    algo = create_algorithm("noisy_student", 2, teacher=[RowLogits(2.0), RowLogits(0.0)], teacher_flip=False)
    batch = {"x": torch.tensor([[1.0, 0.0]]), "y": torch.tensor([0]),
             "u_w": torch.tensor([[1.0, 0.0]]), "u_s": torch.tensor([[0.0, 0.0]])}
    out = algo.step(RowLogits(1.0), batch, step=0)
    q0 = (math.e ** 2 / (math.e ** 2 + 1) + 0.5) / 2        # mean of softmax(2, 0) and softmax(0, 0)
    assert out.pseudo_labels.tolist() == [0]
    assert abs(float(out.logs["loss_u"]) - math.log(2)) < 1e-6   # H(q, uniform) = log 2 for any q
    loss_x = math.log(1 + math.e ** -1)
    assert abs(float(out.loss) - (loss_x + math.log(2)) / 2) < 1e-6
    out = algo.step(RowLogits(1.0), {**batch, "u_s": torch.tensor([[1.0, 0.0]])}, step=0)
    want = -(q0 * math.log(math.e / (math.e + 1)) + (1 - q0) * math.log(1 / (math.e + 1)))
    assert abs(float(out.logs["loss_u"]) - want) < 1e-6


def test_a_student_of_two_runs(tiny, tmp_path):
    teacher_run = tmp_path / "teacher"
    train(load_config(None, tiny + [f"out={teacher_run}", "algorithm.name=supervised"]))
    cfg = load_config(None, tiny + [f"out={tmp_path / 'student'}", "algorithm.name=noisy_student",
                                    f"algorithm.teacher=[{teacher_run},{teacher_run}]"])
    assert math.isfinite(train(cfg)["accuracy"])
    with pytest.raises(ValueError, match="needs algorithm.teacher"):
        create_algorithm("noisy_student", 4, teacher=[])
