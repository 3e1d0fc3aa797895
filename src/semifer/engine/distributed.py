"""torchrun-native DDP helpers: read RANK / WORLD_SIZE / LOCAL_RANK from the environment."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from semifer.models.io import resolve_device


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Average a dict of scalars over ranks (same keys on every rank)."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: v / self.world for k, v in zip(keys, t.tolist())}

    def any(self, *flags: bool) -> list[bool]:
        """Each flag OR-ed over ranks, in one all-reduce, so that all ranks act on it together."""
        if not self.enabled:
            return [bool(f) for f in flags]
        t = torch.tensor([float(f) for f in flags], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]


def launch_rank() -> int:
    """This process's rank as torchrun set it (0 outside torchrun), readable before the group exists."""
    return int(os.environ.get("RANK", 0))


def init_distributed(device: str = "auto") -> Dist:
    """Set up the process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    use_cuda = resolve_device(device).type == "cuda"
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank, local = launch_rank(), int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank, world, local, dev)


_keep_group = False


@contextlib.contextmanager
def one_process_group():
    """Keep the process group of the first run inside the block for every later one (the pipeline's
    stages), and destroy it at the end. Destroyed and created again at once, a gloo group can hand
    a rank its peer's old address, and the connection is refused."""
    global _keep_group
    _keep_group = True
    try:
        yield
    finally:
        _keep_group = False
        cleanup()


def cleanup() -> None:
    if not _keep_group and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def average_grads_over_ranks(module: torch.nn.Module) -> None:
    """All-reduce (mean) the gradient of each trainable parameter of ``module`` as backward
    produces it. For modules outside the DDP-wrapped model, such as an algorithm's extra heads,
    whose gradients DDP does not average, so each rank's copy would drift from the others."""
    from semifer.algorithms.common import all_reduce_mean_

    for p in module.parameters():
        if p.requires_grad:
            p.register_hook(lambda grad: all_reduce_mean_(grad.clone()))


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` concatenated along dim 0 in rank order, differentiable (the backward pass
    returns each rank its rows' gradient summed over the ranks); ``x`` itself outside torchrun.
    For losses whose terms span the global batch, such as SimCLR's negatives."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums the global batch's gradient over the ranks and hands each
    rank its own rows (what ``torch.distributed.nn.all_gather`` did before its deprecation
    warning, which torchrun printed once per rank)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every rank's loss depends on every rank's rows
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]
