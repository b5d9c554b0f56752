"""Recovery after surgery: batch-norm recalibration, then a short fine-tune.

Pruning changes the activations that every BatchNorm layer normalises, so its running
statistics are stale; recalibrating them is nearly free and recovers much of the
accuracy. The fine-tune (a step budget from the search space) does the rest. The same
``train`` loop trains the built-in tasks' base models.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from autoprune.pruning import apply_masks

# _base, not the package: the package's loader builds the built-in tasks with ``train``
from autoprune.tasks._base import Split


@dataclass(frozen=True)
class TrainConfig:
    """Plain SGD with momentum and a cosine schedule over ``steps`` mini-batches."""

    steps: int
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    hflip: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(
                "`steps >= 0, batch_size >= 1, lr > 0` must hold, but got "
                f"(steps={self.steps}, batch_size={self.batch_size}, lr={self.lr})."
            )


@contextlib.contextmanager
def _seeded_rng(seed: int) -> Iterator[None]:
    """Seed torch's global CPU generator on a fork: layers that draw from it in train
    mode (dropout) get a reproducible stream, and the caller's stream is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def recalibrate_bn(model: nn.Module, data: Split, batches: int, batch_size: int = 128) -> None:
    """Re-estimate every BatchNorm's running mean/var from ``batches`` training batches."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or batches <= 0:
        return
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches below
    model.train()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad(), _seeded_rng(0):
        for _ in range(batches):
            idx = torch.randint(len(data.x), (batch_size,), generator=gen)
            model(data.x[idx])
    for bn, momentum in zip(bns, saved):
        bn.momentum = momentum
    model.eval()


def train(model: nn.Module, data: Split, config: TrainConfig, masks: Mapping[str, torch.Tensor] | None = None,
          progress: Callable[[int, float], None] | None = None) -> float:
    """Train ``model`` in place for ``config.steps`` steps; return the last loss.

    ``masks`` (``PruneReport.masks``) are re-applied after every optimiser step, so
    pruned weights stay zero. ``progress`` (optional) is called as
    ``progress(step, loss)`` every 20 steps.
    """
    if config.steps == 0:
        return float("nan")
    loss = torch.tensor(float("nan"))
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=True,
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=config.steps, pct_start=0.15
    )
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    with _seeded_rng(config.seed):
        for step in range(config.steps):
            idx = torch.randint(len(data.x), (config.batch_size,), generator=gen)
            x, y = data.x[idx], data.y[idx]
            if config.hflip:
                flip = torch.rand(len(x), generator=gen) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            if masks:
                apply_masks(model, masks)  # unstructured/N:M zeros stay zero through the fine-tune
            sched.step()
            if progress is not None and (step % 20 == 0 or step == config.steps - 1):
                progress(step, loss.item())
    model.eval()
    return loss.item()
