"""Shared by the latency benchmarks: the x86-ort profile, pruned models, one timing.

Every timing here is the profile's full protocol (build, then ``sessions`` separate
timing processes, median of their medians) with no measurement cache.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

QUICK_MEASUREMENT = {
    "sessions": 1,
    "max_seconds": 0.3,
    "min_repeats": 10,
    "max_repeats": 200,
    "noise_retries": 0,
    "warmup": 3,
}


def profile(name: str = "x86-ort", quick: bool = False):
    """The device profile, with the cache off; ``quick`` shortens the protocol (smoke runs)."""
    from autoprune.profiles import load_profile

    p = load_profile(name)
    m = dataclasses.replace(p.measurement, cache=False, **(QUICK_MEASUREMENT if quick else {}))
    return dataclasses.replace(p, measurement=m)


def context(task, prof, recovery: dict | None = None):
    """A trial context for ``task`` on ``prof`` with the default space (no cache)."""
    from autoprune.device import Device
    from autoprune.objective import Context
    from autoprune.space import load_space, resolve

    space = load_space("default")
    if recovery:
        space = dataclasses.replace(space, recovery=dataclasses.replace(space.recovery, **recovery))
    resolved = resolve(space, task.model, task.example_input(1), task.ignored_layers)
    return Context(task, Device.of(prof), resolved, cache=None)


def uniform_plan(ctx, ratio: float, round_to: int, method: str = "l1"):
    from autoprune.pruning import GroupChoice, PruningPlan

    if ratio <= 0:
        return PruningPlan()
    return PruningPlan(
        {g.info.name: GroupChoice(method, ratio) for g in ctx.space.groups}, round_to=round_to
    )


def export(ctx, plan, work_dir: Path, name: str = "model"):
    """Prune (no recovery: weights do not change dense latency) and export; an OnnxArtifact."""
    from autoprune.export import to_onnx
    from autoprune.objective import prune

    model, _ = prune(ctx, plan, seed=0)
    work_dir.mkdir(parents=True, exist_ok=True)
    # parity is checked against random-ish weights too; a loose bound keeps big models exportable
    return to_onnx(model, ctx.example_input, work_dir / f"{name}.onnx", parity_atol=1e-2)


def time_onnx(onnx_path: str | Path, prof, work_dir: Path):
    """Build and time an ONNX file with the full protocol; returns a Measurement (raises on failure)."""
    from autoprune.device import Device
    from autoprune.export import OnnxArtifact
    from autoprune.trials import TrialFailure

    art = OnnxArtifact(
        path=str(onnx_path),
        sha256="",
        arch_hash="",
        bytes=0,
        macs=0,
        params=0,
        nonzero_params=0,
        max_abs_diff=0.0,
        input_shape=(),
        output_shape=(),
    )
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        return Device.of(prof).measure(art, work_dir).measurement  # no cache: every call times
    except TrialFailure as exc:
        raise RuntimeError(f"{exc.stage.value} failed for {onnx_path}: {exc.reason}") from None
