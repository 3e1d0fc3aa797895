"""Noisy Student: the loss against hand arithmetic, its fixed teacher kept out of the optimiser and
the checkpoints, and a run whose teacher is another run's checkpoint."""
import json
import math

import pytest
import torch
import torch.nn as nn

from semifer.algorithms import create_algorithm
from semifer.config import load_config
from semifer.engine.train import train

E = math.e


class RowLogits(nn.Module):
    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale))

    def forward(self, x):
        return x, x * self.scale


def rows(*r):
    return torch.tensor(r, dtype=torch.float32)


BATCH = {"x": rows([1, 0, 0]), "y": torch.tensor([0]),
         "u_w": rows([1, 0, 0], [0, 0, 0]),      # teacher (x2): softmax(2, 0, 0) and uniform
         "u_s": rows([0, 1, 0], [0, 0, 0])}      # student: softmax(0, 1, 0) and uniform


def test_soft_pseudo_labels_and_one_weight_per_image():
    teacher = RowLogits(2.0)
    algo = create_algorithm("noisy_student", 3, teacher=teacher, teacher_flip=False)
    out = algo.step(RowLogits(), BATCH, step=0)
    q1 = 1 / (E**2 + 2)                                    # teacher's class-1 probability, image 1
    h1 = math.log(E + 2) - q1                              # H(q, softmax(0, 1, 0)) = log(e + 2) - q_1
    loss_u = (h1 + math.log(3)) / 2
    loss_x = math.log(E + 2) - 1
    assert abs(float(out.logs["loss_u"]) - loss_u) < 1e-5
    assert abs(float(out.loss) - (1 * loss_x + 2 * loss_u) / 3) < 1e-5     # B = 1, uB = 2
    assert out.pseudo_labels.tolist()[0] == 0 and out.mask.tolist() == [1.0, 1.0]
    # tau drops the uniform image; lambda_u weighs the unlabelled images
    out = create_algorithm("noisy_student", 3, teacher=teacher, teacher_flip=False, tau=0.5, lambda_u=2.0).step(
        RowLogits(), BATCH, step=0)
    assert out.mask.tolist() == [1.0, 0.0]
    assert abs(float(out.loss) - (loss_x + 4 * h1 / 2) / 5) < 1e-5
    assert teacher.scale.grad is None


def test_the_teacher_is_neither_optimised_nor_checkpointed():
    algo = create_algorithm("noisy_student", 3, teacher=RowLogits(2.0))
    assert list(algo.parameters()) == [] and algo.state_dict() == {}
    with pytest.raises(ValueError, match="algorithm.teacher"):
        create_algorithm("noisy_student", 3)


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
        create_algorithm("noisy_student", 4, teacher=str(teacher_run)).teacher(torch.device("cpu"))
