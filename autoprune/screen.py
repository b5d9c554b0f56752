"""The screen: a cheap score of a pruned, untrained candidate.

A search cannot fine-tune hundreds of plans, but it can prune them, re-estimate their
BatchNorm statistics on a few training batches (EagleEye, ECCV 2020: stale statistics,
not lost capacity, are what make a freshly pruned network look broken), give them a
few distilled steps, and score them on a small validation subset, in seconds. The
screen's ranking is only worth what it agrees with the final (fully fine-tuned)
accuracy: ``benchmarks/fidelity.py`` measures Kendall's tau between the two, per
scoring method, and the space's ``screen:`` section holds the one the search uses.

:func:`select` then picks the plans worth training: the screen's Pareto layers within
the latency budget, spread across latency. With two waves (the space's ``screen.waves``)
it picks half of them, and once those are trained :func:`between` places the rest where
their trained front is steepest. Between screening and choosing, the search screens tilts of
the screen's front (``ResolvedSpace.tilted_params``): the plans it found best, with
channels moved from one part of the model to another.

Example:
    >>> model, report = objective.prune(ctx, plan, seed)
    >>> score = screen(model, report.masks, ctx.task, ctx.space.space.screen, ctx.distill, seed)
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
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
    arch: str = ""  # what its latency depends on (architecture and precision); "": unknown


def select(screened: Sequence[ScreenedPlan], k: int, budget_ms: float, near: float,
           taken: Collection[int] = (), best_first: bool = False) -> list[int]:
    """The keys of at most ``k`` plans worth training, best first.

    Within the budget, plans are taken by Pareto layer of (score up, latency down):
    the screen's front first, then the next layer, and so on, skipping any plan more
    than ``near`` points behind the best score at least as fast (the screen cannot
    tell such a plan apart from worse). Within a layer that does not fit whole, the
    plans are spread across its latency range, so the trained plans cover the front.
    Plans in ``taken`` (chosen already) are not chosen again but still count in how far
    behind the others are: without them the next layer would be a front of its own.

    ``best_first``: a layer that does not fit whole gives its best-scoring plans instead,
    for a budget that binds, where what counts is the best model within it: of `make
    demo`'s two trained plans, the spread put one at the front's fast end (83-88% once
    trained, 17-32x in the search); it was the pick only where the other had timed over the
    budget, and then 1.6 and 3.7 points below the baseline.
    """
    pool = [s for s in screened if s.latency_ms <= budget_ms and s.key not in taken]
    chosen: list[ScreenedPlan] = []
    while pool and len(chosen) < k:
        layer = front(pool)
        pool = [s for s in pool if s not in layer]
        fits = [s for s in layer if _behind(s, screened) <= near]
        room = k - len(chosen)
        if len(fits) <= room:
            chosen += fits
        else:
            chosen += sorted(fits, key=lambda s: (-s.score, s.latency_ms))[:room] if best_first else _spread(fits, room)
        if not fits:
            break  # every later layer is further behind still
    return [s.key for s in chosen]


def between(screened: Sequence[ScreenedPlan], trained: Sequence[ScreenedPlan], k: int, budget_ms: float,
            near: float, taken: Collection[int] = (), clip: float | None = None) -> list[int]:
    """The keys of at most ``k`` more screened plans to train, placed where the plans
    trained so far leave the most unknown.

    ``trained`` holds the trained plans with their trained metric as ``score`` (at their
    screen latency, so both waves share one latency axis). Between two neighbours on
    their front, what is unknown is the metric they differ by times the log latency they
    span: the front's steepest stretch, where the screen's ranking decided least (a
    uniform spread had put two of eight trained plans where accuracy collapses and none
    in the band between, where random search's winners lay). The largest stretch is
    bisected with the screen's plan nearest its middle (in log latency) among the
    screen's front inside it; its two halves are then weighed with the metric
    interpolated there. Plans in ``taken`` (trained already) and plans more than ``near``
    behind the screen's best at least as fast (as :func:`select`) are left out.

    ``clip`` (points; None: off, the default) weighs a stretch with the metric raised to
    at least the best trained minus ``clip``, so a collapse far below the best counts no
    more than a drop of ``clip``. It is not the default: replayed on the compare's studies
    (``benchmarks/replay_waves.py``) it moved the reference task's plans out of the
    collapse but took the U-Net's best plans away, whose low search-time scores recover at
    finalize.
    """
    pool = [s for s in screened if s.latency_ms <= budget_ms and s.key not in taken and _behind(s, screened) <= near]
    points = sorted(front(trained), key=lambda s: s.latency_ms)
    stretches = [(a.latency_ms, a.score, b.latency_ms, b.score) for a, b in zip(points, points[1:])]
    floor = max((s.score for s in points), default=0.0) - clip if clip is not None else -math.inf

    def unknown(g: tuple[float, float, float, float]) -> float:
        return (max(g[3], floor) - max(g[1], floor)) * math.log(g[2] / g[0]) if g[2] > g[0] else 0.0

    chosen: list[ScreenedPlan] = []
    while stretches and len(chosen) < k:
        stretches.sort(key=unknown)
        lo, lo_score, hi, hi_score = stretches.pop()
        inside = [s for s in pool if lo < s.latency_ms < hi and s not in chosen]
        if not inside:
            continue
        mid = math.sqrt(lo * hi)
        pick = min(front(inside), key=lambda s: (abs(math.log(s.latency_ms / mid)), -s.score))
        chosen.append(pick)
        guess = lo_score + (hi_score - lo_score) * math.log(pick.latency_ms / lo) / math.log(hi / lo)
        stretches += [(lo, lo_score, pick.latency_ms, guess), (pick.latency_ms, guess, hi, hi_score)]
    return [s.key for s in chosen]


def second_wave(screened: Sequence[ScreenedPlan], trained: Sequence[ScreenedPlan], k: int, budget_ms: float,
                near: float, first: Collection[int], clip: float | None = None) -> list[int]:
    """The keys of the second wave's ``k`` plans: :func:`between` the first wave's trained
    plans, then, where no stretch of their front has a plan inside, the screen's next best
    (:func:`select`) among the plans not chosen yet."""
    chosen = between(screened, trained, k, budget_ms, near, taken=first, clip=clip)
    if len(chosen) < k:
        chosen += select(screened, k - len(chosen), budget_ms, near, taken={*first, *chosen})
    return chosen


def worth_training(screened: Sequence[ScreenedPlan], known: Collection[str] = (),
                   below_ms: float = math.inf) -> list[ScreenedPlan]:
    """The plans worth a training slot: faster than ``below_ms`` (the fastest model trained
    already: the unpruned one, whose accuracy a pruned plan at best matches), and by
    architecture, of the plans that share one (``arch``), the best-scoring only, none whose
    architecture is in ``known`` (trained already). Plans of one architecture time alike,
    so the others can only tie or trail at that latency. In the compare's studies a
    ratio-0 tilt had taken one of eight training slots to train the unpruned model again
    (seg seed 1), and the first wave's slow end had gone to a plan as slow as the trained
    unpruned model or slower (reference seed 0: 1.38 ms against 0.47 ms). Plans of unknown
    architecture are kept."""
    best: dict[str, ScreenedPlan] = {}
    screened = [s for s in screened if s.latency_ms < below_ms]
    for s in screened:
        if s.arch and s.arch not in known:
            held = best.get(s.arch)
            if held is None or (s.score, -s.latency_ms, -s.key) > (held.score, -held.latency_ms, -held.key):
                best[s.arch] = s
    return [s for s in screened if not s.arch or best.get(s.arch) is s]


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
