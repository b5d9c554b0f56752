"""The screen: a cheap score of a pruned, untrained candidate.

A search cannot fine-tune hundreds of plans, but it can prune them, re-estimate their
BatchNorm statistics on a few training batches (EagleEye, ECCV 2020: stale statistics,
not lost capacity, are what make a freshly pruned network look broken), give them a
few distilled steps, and score them on a small validation subset, in seconds. The
screen's ranking is only worth what it agrees with the final (fully fine-tuned)
accuracy: ``benchmarks/fidelity.py`` measures Kendall's tau between the two, per
scoring method, and the space's ``screen:`` section holds the one the search uses.

:func:`select` then picks the plans worth training: the screen's Pareto layers within
the latency budget, spread across latency. Between the two, the search screens tilts of
the screen's front (``ResolvedSpace.tilted_params``): the plans it found best, with
channels moved from one part of the model to another.

Example:
    >>> model, report = objective.prune(ctx, plan, seed)
    >>> score = screen(model, report.masks, ctx.task, ctx.space.space.screen, ctx.distill, seed)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from autoprune.recover import Distill, TrainConfig, recalibrate_bn, train
from autoprune.space import ScreenConfig
from autoprune.tasks import Task


def screen(model: torch.nn.Module, masks: Mapping[str, torch.Tensor] | None, task: Task, config: ScreenConfig,
           distill: Distill | None, seed: int) -> float:
    """Re-estimate BatchNorm, take ``config.steps`` distilled steps, score the task's
    metric on ``config.samples`` validation examples; ``model`` is changed in place."""
    recalibrate_bn(model, task.train, config.bn_batches, config.batch_size)
    if config.steps:
        cfg = TrainConfig(config.steps, config.batch_size, config.lr, hflip=task.hflip, seed=seed)
        train(model, task.train, cfg, masks=masks, distill=distill, loss_fn=task.loss_of)
        recalibrate_bn(model, task.train, config.bn_batches, config.batch_size)
    return task.metric(model, task.val, config.samples)


@dataclass(frozen=True)
class ScreenedPlan:
    """One screened plan, as :func:`select` sees it (``score`` in the metric's own sense:
    higher is better after the caller applied the metric's sign)."""

    key: int  # the caller's identifier (a trial number)
    score: float
    latency_ms: float


def select(screened: Sequence[ScreenedPlan], k: int, budget_ms: float, near: float) -> list[int]:
    """The keys of at most ``k`` plans worth training, best first.

    Within the budget, plans are taken by Pareto layer of (score up, latency down):
    the screen's front first, then the next layer, and so on, skipping any plan more
    than ``near`` points behind the best score at least as fast (the screen cannot
    tell such a plan apart from worse). Within a layer that does not fit whole, the
    plans are spread across its latency range, so the trained plans cover the front.
    """
    pool = [s for s in screened if s.latency_ms <= budget_ms]
    chosen: list[ScreenedPlan] = []
    while pool and len(chosen) < k:
        layer = front(pool)
        pool = [s for s in pool if s not in layer]
        fits = [s for s in layer if _behind(s, screened) <= near]
        room = k - len(chosen)
        chosen += fits if len(fits) <= room else _spread(fits, room)
        if not fits:
            break  # every later layer is further behind still
    return [s.key for s in chosen]


def front(screened: Sequence[ScreenedPlan]) -> list[ScreenedPlan]:
    """The plans that no other plan beats on both score and latency."""
    return [s for s in screened if not any(_dominates(o, s) for o in screened)]


def _dominates(a: ScreenedPlan, b: ScreenedPlan) -> bool:
    return a.score >= b.score and a.latency_ms <= b.latency_ms and (a.score > b.score or a.latency_ms < b.latency_ms)


def _behind(s: ScreenedPlan, everyone: Sequence[ScreenedPlan]) -> float:
    """Points behind the best score of a plan at least as fast (0 on the front)."""
    best = max((o.score for o in everyone if o.latency_ms <= s.latency_ms), default=s.score)
    return max(0.0, best - s.score)


def _spread(layer: list[ScreenedPlan], n: int) -> list[ScreenedPlan]:
    """``n`` plans of ``layer`` evenly spaced by latency rank, both ends included."""
    ordered = sorted(layer, key=lambda s: s.latency_ms)
    if n == 1:
        return [max(ordered, key=lambda s: s.score)]
    idx = sorted({round(i * (len(ordered) - 1) / (n - 1)) for i in range(n)})
    return [ordered[i] for i in idx]
