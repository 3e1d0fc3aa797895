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
        create_algorithm("noisy_student", 4, teacher=str(teacher_run)).teacher(torch.device("cpu"))
