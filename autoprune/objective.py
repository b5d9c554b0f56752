"""One trial: plan -> prune -> recover -> evaluate -> export -> build -> measure.

Every stage runs inside :func:`_stage`, which turns any exception into a
:class:`TrialFailure` naming the stage. The search records it on the trial
(``fail_stage``, ``fail_reason``) and goes on.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from autoprune import pruning
from autoprune.testing import faults
from autoprune.backends import Backend
from autoprune.evaluate import accuracy
from autoprune.export import OnnxArtifact, to_onnx
from autoprune.measure import Measurement, MeasurementCache
from autoprune.profiles import DeviceProfile
from autoprune.recover import TrainConfig, recalibrate_bn, train
from autoprune.runners import Runner
from autoprune.space import ResolvedSpace
from autoprune.tasks import Task

STAGES = ("prune", "recover", "evaluate", "export", "build", "measure")


class TrialFailure(Exception):
    """A candidate failed at ``stage``; the message is the reason recorded on the trial."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


@dataclass(frozen=True)
class Candidate:
    """What a successful trial produced."""

    accuracy: float
    latency: Measurement
    latency_cached: bool
    size_mb: float
    onnx: OnnxArtifact
    widths: dict[str, tuple[int, int]]
    stage_s: dict[str, float]
    build_info: dict[str, Any] = field(default_factory=dict)  # BuildResult.info; empty if cached


@dataclass
class Context:
    """Everything a trial needs that is built once per search."""

    task: Task
    profile: DeviceProfile
    space: ResolvedSpace
    backend: Backend
    runner: Runner
    cache: MeasurementCache | None
    seed: int = 0
    example_input: torch.Tensor = field(init=False)
    gradient_batches: list[tuple[torch.Tensor, torch.Tensor]] = field(init=False)

    def __post_init__(self) -> None:
        self.example_input = self.task.example_input(self.profile.batch_size)
        rec = self.space.space.recovery
        gen = torch.Generator().manual_seed(self.seed)
        self.gradient_batches = []
        for _ in range(rec.gradient_batches):
            idx = torch.randint(len(self.task.train), (rec.batch_size,), generator=gen)
            self.gradient_batches.append((self.task.train.x[idx], self.task.train.y[idx]))


@contextlib.contextmanager
def _stage(name: str, times: dict[str, float]):
    start = time.perf_counter()
    try:
        faults.inject(name)
        yield
    except TrialFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad candidate must not stop the study
        raise TrialFailure(name, f"{type(exc).__name__}: {exc}") from exc
    finally:
        times[name] = round(time.perf_counter() - start, 4)


def prune(ctx: Context, plan: pruning.PruningPlan, seed: int):
    return pruning.apply(
        ctx.task.model,
        plan,
        ctx.example_input[:1],
        ignored_layers=ctx.task.ignored_layers,
        gradient_batches=ctx.gradient_batches,
        seed=seed,
    )


def measure_onnx(ctx: Context, onnx: OnnxArtifact, work_dir: Path, times: dict[str, float],
                 build_info: dict[str, Any] | None = None) -> tuple[Measurement, bool]:
    """Build and time an exported model, or take its latency from the cache.

    ``build_info``, when given, receives what the build reports (``BuildResult.info``).
    """
    key = MeasurementCache.key(onnx.arch_hash, ctx.backend.name, ctx.profile.hash)
    cached = ctx.cache.get(key) if ctx.cache is not None else None
    if cached is not None:
        times["build"] = times["measure"] = 0.0
        return cached, True
    with _stage("build", times):
        built = ctx.backend.build(onnx, ctx.profile, work_dir)
        if build_info is not None:
            build_info.update(built.info)
        if built.error:
            raise TrialFailure("build", built.error)
    with _stage("measure", times):
        result = ctx.runner.measure(built, ctx.profile)
        if result.measurement is None:
            raise TrialFailure("measure", result.error or "no measurement")
    Path(built.artifact_path).unlink(missing_ok=True)  # rebuilt on export; saves disk
    if ctx.cache is not None:
        ctx.cache.put(key, result.measurement)
    return result.measurement, False


def run_candidate(ctx: Context, plan: pruning.PruningPlan, trial_dir: Path, seed: int, number: int = -1) -> Candidate:
    """Evaluate one plan end to end; raise TrialFailure(stage, reason) on any failure."""
    faults.set_trial(number)
    try:
        return _run_candidate(ctx, plan, trial_dir, seed)
    finally:
        faults.set_trial(-1)  # work outside a trial (the budget check) is never a target


def _run_candidate(ctx: Context, plan: pruning.PruningPlan, trial_dir: Path, seed: int) -> Candidate:
    times: dict[str, float] = {}
    rec = ctx.space.space.recovery
    trial_dir.mkdir(parents=True, exist_ok=True)
    with _stage("prune", times):
        model, widths = prune(ctx, plan, seed)
    with _stage("recover", times):
        if not plan.is_identity:  # the baseline is the user's model as it is
            recalibrate_bn(model, ctx.task.train, rec.bn_batches, rec.batch_size)
            cfg = TrainConfig(rec.finetune_steps, rec.batch_size, rec.lr, hflip=ctx.task.hflip, seed=seed)
            train(model, ctx.task.train, cfg)
    with _stage("evaluate", times):
        acc = accuracy(model, ctx.task.val, rec.eval_samples)
    with _stage("export", times):
        onnx = to_onnx(model, ctx.example_input, trial_dir / "model.onnx", ctx.space.space.parity_atol)
        torch.save(model.state_dict(), trial_dir / "state.pt")
        (trial_dir / "plan.json").write_text(json.dumps(plan.to_dict(), indent=1))
    build_info: dict[str, Any] = {}
    latency, cached = measure_onnx(ctx, onnx, trial_dir, times, build_info)
    return Candidate(
        accuracy=acc,
        latency=latency,
        latency_cached=cached,
        size_mb=onnx.bytes / 1e6,
        onnx=onnx,
        widths=widths,
        stage_s=times,
        build_info=build_info,
    )


def candidate_attrs(c: Candidate) -> dict[str, Any]:
    """The user attributes recorded on a finished trial (flat, JSON-friendly)."""
    m = c.latency
    return {
        "accuracy": c.accuracy,
        "latency_ms": m.median_ms,
        "latency_p90_ms": m.p90_ms,
        "latency_ci_low_ms": m.ci_low_ms,
        "latency_ci_high_ms": m.ci_high_ms,
        "latency_cv": m.cv,
        "latency_runs": m.runs,
        "latency_noisy": m.noisy,
        "latency_cached": c.latency_cached,
        "latency_threads": m.threads,
        "latency_sessions": m.sessions,
        "latency_session_spread": m.session_spread,
        "load_avg": m.load_avg,
        "size_mb": c.size_mb,
        "onnx_bytes": c.onnx.bytes,
        "onnx_sha256": c.onnx.sha256,
        "arch_hash": c.onnx.arch_hash,
        "macs": c.onnx.macs,
        "params": c.onnx.params,
        "nonzero_params": c.onnx.nonzero_params,
        "parity_max_abs_diff": c.onnx.max_abs_diff,
        "widths": {k: list(v) for k, v in c.widths.items()},
        "stage_s": c.stage_s,
        **{f"build_{k}": v for k, v in c.build_info.items()},
    }
