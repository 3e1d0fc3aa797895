"""Checks of a training config that need no data, run before anything is decoded or written.

A typo in an algorithm option or a model name once surfaced only after the dataset had been
decoded (minutes), and left a run folder holding a config and a lock but no run.
"""
from __future__ import annotations

from semifer.algorithms import check_algorithm
from semifer.config import Config
from semifer.data.base import DATASETS, parse_spec
from semifer.models import check_model_name


def check_config(cfg: Config) -> None:
    """Raise ValueError / KeyError naming the first unknown algorithm, option, model or dataset."""
    import semifer.data.readers  # noqa: F401  (registers the dataset readers)

    algo = dict(cfg.algorithm)
    check_algorithm(algo.pop("name", "supervised"), algo)
    check_model_name(cfg.model.name)
    if cfg.train.epoch_over not in ("labelled", "unlabelled"):
        raise ValueError(f"train.epoch_over={cfg.train.epoch_over!r}; expected labelled or unlabelled")
    for spec in (cfg.data.train, cfg.data.test):
        if spec:
            DATASETS.get(parse_spec(spec)[0])
