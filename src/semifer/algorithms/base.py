"""What every algorithm is: a loss on one batch, plus its own small state.

The engine owns the loop, the optimiser, the EMA teacher, logging and checkpoints. An algorithm
declares the unlabelled views it needs in ``views`` (name in the batch -> transform), computes
its loss in ``step`` and never calls backward.

Batch keys: ``x`` [B, C, H, W] labelled weak view, ``y`` [B] labels, and one key per entry of
``views`` for the unlabelled batch (e.g. ``u_w``, ``u_s``), plus ``x_idx`` and ``u_idx`` (indices
of the labelled / unlabelled items in the train split, for per-sample state such as FlexMatch's).
An algorithm never sees the true labels of the unlabelled items, nor the test set: ``setup_data``
gets a ``semifer.data.prepare.TrainView``, and the engine scores the pseudo-labels a step
returns (``StepOutput``) against the truth it holds.
"""
from __future__ import annotations

import abc
import inspect
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from semifer.registry import Registry

ALGORITHMS: Registry[type["Algorithm"]] = Registry("algorithm")
register_algorithm = ALGORITHMS.register


@dataclass
class StepOutput:
    loss: torch.Tensor                       # scalar to minimise
    logs: dict[str, float] = field(default_factory=dict)
    pseudo_labels: torch.Tensor | None = None  # [uB] hard pseudo-labels, for diagnostics
    mask: torch.Tensor | None = None           # [uB] 1 where the pseudo-label was used
    # more pseudo-labels to score, name -> (labels [uB], mask [uB]): e.g. SIT-FER's per level,
    # logged as pl_acc_<name>, pl_acc_<name>_masked and mask_<name>
    levels: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    negatives: torch.Tensor | None = None      # [uB, K] bool: complementary labels used (negative
                                               # learning), logged as snl_wrong and snl_precision


class Algorithm(nn.Module, abc.ABC):
    """Base class. Subclasses take their constants as keyword arguments with defaults.

    It is an ``nn.Module`` so that tensor state (thresholds, buffers, projection heads)
    moves with ``.to(device)`` and is saved through ``state_dict``."""

    views: dict[str, str] = {}      # unlabelled views; empty = labelled data only
    uses_teacher: bool = False      # needs the engine's EMA model as a teacher
    teacher_momentum: float | None = None  # overrides train.ema when set (e.g. SSFER's 0.999)

    def __init__(self, num_classes: int, total_steps: int = 1, num_unlabelled: int = 0):
        super().__init__()
        self.num_classes = num_classes
        self.total_steps = total_steps
        self.num_unlabelled = num_unlabelled

    @abc.abstractmethod
    def step(self, model: nn.Module, batch: dict, step: int, teacher: nn.Module | None = None) -> StepOutput:
        """The loss on one batch (the engine does backward and the optimiser step)."""

    def setup(self, model: nn.Module) -> None:
        """Called once with the (unwrapped) model before the optimiser is built: create
        parameters that depend on it (e.g. a projection head sized to the feature width)."""

    def setup_data(self, data) -> None:
        """Called once with the training data as an algorithm sees it
        (``semifer.data.prepare.TrainView``: no true label of an unlabelled item, no test set):
        per-image properties an algorithm needs, such as face boxes, indexed by ``batch["x_idx"]``."""

    def sync(self) -> None:
        """Called after the optimiser step: all-reduce state that drives thresholds (DDP)."""

    def export_predictor(self) -> tuple[dict[str, torch.Tensor], dict] | None:
        """A predictor beyond the classifier (e.g. SIT-FER's fused one), saved with every
        checkpoint: (tensors, stored as ``algo.*``; JSON options, stored in the metadata). None
        when the classifier alone predicts."""
        return None

    @classmethod
    def load_predictor(cls, tensors: dict[str, torch.Tensor], options: dict) -> nn.Module:
        """Rebuild what ``export_predictor`` saved: a module mapping the model's ``(feat, logits)``
        to class probabilities [B, K]."""
        raise ValueError(f"checkpoint metadata names a predictor for {cls.__name__}, which exports none; "
                         "the checkpoint was written by a different semifer or edited")


def create_algorithm(name: str, num_classes: int, total_steps: int = 1, num_unlabelled: int = 0,
                     **options) -> Algorithm:
    """Build a registered algorithm; an option it does not take is an error naming the option."""
    check_algorithm(name, options)
    return ALGORITHMS.get(name)(num_classes=num_classes, total_steps=total_steps, num_unlabelled=num_unlabelled,
                                **options)


def check_algorithm(name: str, options: dict) -> None:
    """Raise (naming it) for an unknown algorithm or an option it does not take; needs no data,
    so training calls it before decoding anything."""
    cls = ALGORITHMS.get(name)
    accepted = {name for c in cls.__mro__ if issubclass(c, Algorithm)
                for name, p in inspect.signature(c.__init__).parameters.items() if p.kind != p.VAR_KEYWORD}
    unknown = sorted(set(options) - accepted)
    if unknown:
        known = sorted(accepted - {"self", "num_classes", "total_steps", "num_unlabelled"})
        raise ValueError(f"algorithm {name!r} has no option {unknown[0]!r}; its options: {', '.join(known) or 'none'}")


def algorithm_options(name: str) -> dict[str, object]:
    """Option names and defaults of a registered algorithm (for ``semifer list``/docs)."""
    cls = ALGORITHMS.get(name)
    params = inspect.signature(cls.__init__).parameters
    skip = {"self", "num_classes", "total_steps", "num_unlabelled"}
    return {k: p.default for k, p in params.items() if k not in skip and p.kind != p.VAR_KEYWORD}
