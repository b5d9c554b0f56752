"""One trial: plan -> prune -> recover -> evaluate -> export -> build -> measure.

Every stage runs inside :func:`_stage`, which turns any exception into a
:class:`~autoprune.trials.TrialFailure` naming the stage. The search records it on the
trial (:func:`autoprune.trials.record_failure`) and goes on.

Each stage, and each trial's start, is announced as an audit event (PEP 578:
``autoprune.stage``, ``autoprune.trial``): nothing listens in a search, and the test
harness's fault injection (``autoprune.testing.faults``) hooks them.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from autoprune import pruning
from autoprune.device import Device
from autoprune.errors import DataError
from autoprune.evaluate import OnnxModel
from autoprune.export import OnnxArtifact, count_params, to_onnx
from autoprune.limits import time_limit
from autoprune.measure import RETIME_PAUSE_S, RETIMES, Measurement, MeasurementCache, slower
from autoprune.profiles import DeviceProfile
from autoprune.quantize import Quantized, calibration_inputs, quantize
from autoprune.recover import Distill, TrainConfig, recalibrate_bn, train
from autoprune.screen import screen as screen_score
from autoprune.space import ResolvedSpace
from autoprune.tasks import Task
from autoprune.trials import Candidate, FailStage, TrialFailure, TrialFiles

# A full disk or a read-only folder fails every candidate alike: it stops the search
# (one line, exit 2) rather than being recorded as this candidate's failure.
MACHINE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


@dataclass
class Stager:
    """Who earns how much recovery, judged from the study so far.

    Optuna's pruners and intermediate values do not apply to multi-objective studies,
    so autoprune judges its own, always between figures of equal fidelity:

    - **staged evaluation** (``skips``): latency is measured first (cheap); a candidate
      far over the budget is only BN-recalibrated and scored zero-shot; one whose
      zero-shot accuracy plus the largest fine-tune gain seen so far (plus a margin)
      cannot reach the first-rung accuracy of a feasible, faster trial is not
      fine-tuned either.
    - **rungs** (multi-fidelity recovery): after each rung, a feasible candidate goes on
      to the next (longer) one unless a feasible trial at least as fast was more than
      ``promote_margin`` points more accurate *at the same rung*.

    Every decision is recorded on the trial, never hidden.
    """

    budget_ms: float
    over_budget_factor: float = 1.5
    min_observations: int = 3  # fine-tune gains seen before any candidate is judged dominated
    margin: float = 1.0  # accuracy points added to the best gain seen
    front: list[tuple[float, float]] = field(default_factory=list)  # (latency_ms, first-rung accuracy), feasible
    gains: list[float] = field(default_factory=list)  # first-rung minus zero-shot accuracy
    skips: bool = True  # staged evaluation on (the space's staging.enabled)
    promote_margin: float = 1.0
    promote_share: float = 1.0  # only the best this share of a rung's candidates go on (ASHA's 1/eta)
    rung_fronts: dict[int, list[tuple[float, float]]] = field(default_factory=dict)  # steps -> feasible (ms, acc)

    def skip_recovery(self, latency_ms: float) -> str | None:
        if self.skips and latency_ms > self.budget_ms * self.over_budget_factor:
            return (f"latency {latency_ms:.3f} ms is over {self.over_budget_factor:g}x the "
                    f"{self.budget_ms:g} ms budget")
        return None

    def skip_finetune(self, latency_ms: float, zero_shot: float) -> str | None:
        if not self.skips or len(self.gains) < self.min_observations:
            return None
        reach = zero_shot + max(self.gains) + self.margin
        rival = max((acc for lat, acc in self.front if lat <= latency_ms), default=None)
        if rival is not None and reach < rival:
            return (f"zero-shot {zero_shot:.2f}% + best fine-tune gain {max(self.gains):.2f} + margin "
                    f"{self.margin:g} < {rival:.2f}% of a faster feasible trial")
        return None

    def stop_at(self, steps: int, latency_ms: float, accuracy: float) -> str | None:
        """Why a candidate with ``accuracy`` after ``steps`` stops at this rung, or None to go on."""
        if latency_ms > self.budget_ms:
            return f"not promoted past {steps} steps: over the {self.budget_ms:g} ms budget"
        points = [*self.rung_fronts.get(steps, []), (latency_ms, accuracy)]
        mine = _behind(points, len(points) - 1)
        if mine > self.promote_margin:
            return (f"not promoted past {steps} steps: {accuracy:.2f}% is more than {self.promote_margin:g} pt "
                    f"behind {accuracy + mine:.2f}% of a feasible trial at least as fast, at the same rung")
        # Bounded cost, as in ASHA: only the best share of a rung's candidates go on, ranked
        # by how far each is behind the rung's front (0 on it), whenever it was scored.
        better = sum(_behind(points, i) < mine for i in range(len(points) - 1))
        if better >= max(1.0, self.promote_share * len(points)):
            return (f"not promoted past {steps} steps: {better} of {len(points)} candidates at this rung are "
                    f"closer to its front (promote_share {self.promote_share:g})")
        return None


def _behind(points: list[tuple[float, float]], i: int) -> float:
    """How many accuracy points ``points[i]`` is behind the best at least as fast (0: on the front)."""
    lat, acc = points[i]
    rival = max((a for j, (la, a) in enumerate(points) if j != i and la <= lat), default=-math.inf)
    return max(0.0, rival - acc)


@dataclass
class Context:
    """Everything a trial needs that is built once per search."""

    task: Task
    device: Device
    space: ResolvedSpace
    cache: MeasurementCache | None
    seed: int = 0
    stager: Stager | None = None  # None: every candidate gets the full recovery
    also: list[Device] = field(default_factory=list)  # further devices every candidate is timed on
    example_input: torch.Tensor = field(init=False)
    gradient_batches: list[tuple[torch.Tensor, torch.Tensor]] = field(init=False)
    base_params: tuple[int, int] = field(init=False)  # (params, nonzero) of the unpruned model

    def __post_init__(self) -> None:
        self.example_input = self.task.example_input(self.profile.batch_size)
        rec = self.space.space.recovery
        gen = torch.Generator().manual_seed(self.seed)
        self.gradient_batches = []
        for _ in range(rec.gradient_batches):
            idx = torch.randint(len(self.task.train), (rec.batch_size,), generator=gen)
            self.gradient_batches.append(self.task.train.take(idx))
        self.base_params = count_params(self.task.model)

    @property
    def profile(self) -> DeviceProfile:
        return self.device.profile

    @functools.cached_property
    def distill(self) -> Distill | None:
        """Distillation from the unpruned model, as the space's recovery section says
        (one per search, so its teacher outputs are computed once for all trials)."""
        rec = self.space.space.recovery
        if rec.distill_weight <= 0:
            return None
        return Distill(self.task.model, rec.distill_weight, rec.distill_temperature, outputs=self.task.distill)

    @functools.cached_property
    def calibration_inputs(self):
        """The training inputs INT8 activation ranges are calibrated on: the space's
        ``calibration_samples``, drawn once per search (the same for every candidate)."""
        return calibration_inputs(self.task.train, self.space.space.precision.calibration_samples, self.seed)


def export_candidate(ctx: Context, model, precision: str, path: Path, times: dict[str, float],
                     latency_only: bool = False) -> Quantized:
    """Export ``model`` (float32, parity-checked against PyTorch) and bring it to
    ``precision``: ``path`` is the candidate as it is built and timed; a quantized
    candidate's float export is kept beside it (``model.float.onnx``).

    ``latency_only``: the file is only timed (staged evaluation's shape-only model), so
    INT8 calibrates on one batch: activation ranges do not change the graph or its speed.
    """
    sp = ctx.space.space
    float_path = path if precision == "float32" else path.with_name(path.stem + ".float.onnx")
    with _stage("export", times):
        onnx = to_onnx(model, ctx.example_input, float_path, sp.parity_atol, sp.parity_rtol)
    if precision == "float32":
        return Quantized(onnx, {"precision": "float32"})
    calib = ctx.calibration_inputs
    if latency_only:
        calib = calib[:ctx.profile.batch_size]
    with _stage("quantize", times):
        return quantize(onnx, precision, path, calibration=calib, method=sp.precision.calibration,
                        percentile=sp.precision.percentile, int8=ctx.profile.precision.int8)


@contextlib.contextmanager
def _stage(name: str, times: dict[str, float], limit_s: float | None = None):
    start = time.perf_counter()
    try:
        with time_limit(limit_s, name):
            sys.audit("autoprune.stage", name)
            yield
    except TrialFailure:
        raise
    except DataError as exc:  # the data's fault, not the candidate's: the search stops, the trial runs again on resume
        raise DataError(data_error_message(exc)) from None
    except OSError as exc:
        if exc.errno in MACHINE_ERRNOS:
            raise  # the machine's fault, not the candidate's: the search stops, and the trial runs again on resume
        raise TrialFailure(name, f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - a bad candidate must not stop the study
        raise TrialFailure(name, f"{type(exc).__name__}: {exc}") from exc
    finally:  # summed: iterative pruning enters prune and recover several times
        times[name] = round(times.get(name, 0.0) + time.perf_counter() - start, 4)


def data_error_message(exc: DataError) -> str:
    """A DataError's own line: one re-raised from a DataLoader worker carries the worker's
    whole traceback, whose last line is the message."""
    text = str(exc)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    return last.split("DataError: ", 1)[-1]


def prune(ctx: Context, plan: pruning.PruningPlan, seed: int, model=None, fraction: float = 1.0,
          original: pruning.PruneReport | None = None, masks: dict[str, torch.Tensor] | None = None):
    return pruning.apply(
        ctx.task.model if model is None else model,
        plan,
        ctx.example_input[:1],
        ignored_layers=ctx.task.ignored_layers,
        gradient_batches=ctx.gradient_batches,
        seed=seed,
        fraction=fraction,
        original=original,
        masks=masks,
        loss_fn=ctx.task.loss_of,
    )


def prune_and_recover(ctx: Context, plan: pruning.PruningPlan, seed: int, times: dict[str, float],
                      gate: Callable[[Any], str | None] | None = None):
    """Surgery then recovery; with ``recovery.iterations = k`` the plan is applied in k
    equal shares, each followed by BN recalibration and steps/k of fine-tuning, so the
    total fine-tune budget is the same as one-shot pruning."""
    rec = ctx.space.space.recovery
    k = 1 if plan.is_identity else rec.iterations
    model, first, report = None, None, None
    widths: dict[str, tuple[int, int]] = {}
    heads: dict[str, tuple[int, int]] = {}
    for step in range(1, k + 1):
        with _stage("prune", times, ctx.space.space.prune_timeout_s):
            # the previous step's masks carry over, so its zeros stay zero
            model, report = prune(ctx, plan, seed, model, step / k, first, report.masks if report else None)
            first = first or report
            for seen, now in ((widths, report.widths), (heads, report.heads)):
                seen.update({g: (seen.get(g, w)[0], w[1]) for g, w in now.items()})
            if step == k and not plan.is_identity:  # final shape and zeros: check caps before recovery
                _check_constraints(ctx, model)
        with _stage("recover", times):
            if not plan.is_identity:  # the baseline is the user's model as it is
                recalibrate_bn(model, ctx.task.train, rec.bn_batches, rec.batch_size)
                if step == k and gate is not None and (why := gate(model)):
                    report.widths, report.heads = widths, heads
                    return model, report, why
                steps = rec.finetune_steps // k + (rec.finetune_steps % k if step == k else 0)
                cfg = TrainConfig(steps, rec.batch_size, rec.lr, hflip=ctx.task.hflip, seed=seed + step - 1)
                train(model, ctx.task.train, cfg, masks=report.masks, distill=ctx.distill, loss_fn=ctx.task.loss_of)
                # again after the fine-tune: its running averages lag its last weights, and
                # a BN momentum like MNASNet's 3e-4 leaves them unusable (outputs of 1e14)
                recalibrate_bn(model, ctx.task.train, rec.bn_batches, rec.batch_size)
    report.widths, report.heads = widths, heads
    return model, report, None


def climb(ctx: Context, model, masks, latency_ms: float, rungs: dict[int, float], seed: int,
          times: dict[str, float]) -> tuple[dict[int, float], str | None]:
    """Fine-tune a recovered candidate rung by rung while ``ctx.stager`` lets it go on.

    ``rungs`` holds the first rung's accuracy ({steps: accuracy}); each later rung trains
    on (a fresh one-cycle schedule over the added steps) to the space's next total and is
    scored on the same validation subset. Returns every rung reached and why it stopped
    (None: it reached the last).
    """
    rec = ctx.space.space.recovery
    rungs = dict(rungs)
    for total in rec.rungs:
        steps = max(rungs)
        if (why := ctx.stager.stop_at(steps, latency_ms, rungs[steps])) is not None:
            return rungs, why
        with _stage("recover", times):
            cfg = TrainConfig(total - steps, rec.batch_size, rec.lr, hflip=ctx.task.hflip, seed=seed + total)
            train(model, ctx.task.train, cfg, masks=masks, distill=ctx.distill, loss_fn=ctx.task.loss_of)
            recalibrate_bn(model, ctx.task.train, rec.bn_batches, rec.batch_size)
        with _stage("evaluate", times):
            rungs[total] = ctx.task.metric(model, ctx.task.val, rec.eval_samples)
    return rungs, None


def _check_constraints(ctx: Context, model) -> None:
    """Fail a candidate over the space's caps before paying for its recovery (masks keep
    the zeros through the fine-tune, so the counts are final here)."""
    why = ctx.space.space.constraints.violation(*count_params(model), *ctx.base_params)
    if why:
        raise TrialFailure(FailStage.PRUNE, f"constraint: {why}")


def measure(ctx: Context, onnx: OnnxArtifact, work_dir: Path, times: dict[str, float], number: int = -1,
            device: Device | None = None) -> tuple[Measurement, bool, dict[str, Any]]:
    """Build and time an exported model on ``device`` (default: the main one), or take its
    latency from the cache; the build and the timing are stages of the trial."""
    device = device or ctx.device
    got = device.measure(onnx, work_dir, cache=ctx.cache, tag=f"trial {number}" if number >= 0 else "",
                         stage=lambda name: _stage(name, times))
    if got.cached:
        times["build"] = times["measure"] = 0.0
    return got.measurement, got.cached, got.build_info


def measure_against(ctx: Context, onnx: OnnxArtifact, work_dir: Path, times: dict[str, float], number: int,
                    expected_ms: float | None,
                    pause_s: float = RETIME_PAUSE_S) -> tuple[Measurement, bool, dict[str, Any], list[float]]:
    """:func:`measure`, then, where a fresh figure is more than ``RETIME_OFF`` slower than
    ``expected_ms`` (the screen's figure for this architecture), up to ``RETIMES`` more
    rounds ``pause_s`` apart, keeping the fastest, which the cache then holds. Returns
    :func:`measure`'s figures and every round's median (empty: timed once).

    Why: the screen chose the plan by its latency, and a slow spell of a shared machine
    (results/benchmarks/process_modes-intel.md) timed four of six such plans 1.6x slower
    once trained, over the budget, so they were cut at the first rung. Every round is a
    full measurement, and a spell only ever adds time."""
    latency, cached, info = measure(ctx, onnx, work_dir, times, number)
    taken = [latency.median_ms]
    while not cached and len(taken) <= RETIMES and slower(latency.median_ms, expected_ms):
        time.sleep(pause_s)
        again = ctx.device.measure(onnx, work_dir, tag=f"trial {number} again" if number >= 0 else "",
                                   stage=lambda name: _stage(name, times)).measurement  # fresh: no cache
        taken.append(again.median_ms)
        if again.median_ms < latency.median_ms:
            latency = again
    if len(taken) == 1:
        return latency, cached, info, []
    if ctx.cache is not None and ctx.profile.measurement.cache:
        ctx.cache.put(ctx.device.cache_key(onnx), latency)
    return latency, cached, info, taken


def run_candidate(ctx: Context, plan: pruning.PruningPlan, trial_dir: Path, seed: int, number: int = -1,
                  expected_ms: float | None = None) -> Candidate:
    """Evaluate one plan end to end; raise TrialFailure(stage, reason) on any failure.

    ``expected_ms``: an earlier figure of the plan's architecture (the screen's): a timing
    much slower than it is taken again (:func:`measure_against`)."""
    sys.audit("autoprune.trial", number)
    try:
        return _run_candidate(ctx, plan, trial_dir, seed, number, expected_ms)
    finally:
        sys.audit("autoprune.trial", -1)  # work outside a trial (the budget check) is never a target


def _run_candidate(ctx: Context, plan: pruning.PruningPlan, trial_dir: Path, seed: int,
                   number: int, expected_ms: float | None) -> Candidate:
    times: dict[str, float] = {}
    rec = ctx.space.space.recovery
    files = TrialFiles(trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)
    early = None
    gate = None
    build_info: dict[str, Any] = {}
    zero: dict[str, float] = {}
    if ctx.stager is not None and not plan.is_identity:
        # Stage 1: latency first. The shape-only plan has the final architecture, and
        # dense-kernel latency depends on nothing else, so this is the trial's latency.
        with _stage("prune", times, ctx.space.space.prune_timeout_s):
            shaped, _ = prune(ctx, plan.shape_only(), seed)
        early = export_candidate(ctx, shaped, plan.precision, files.onnx, times, latency_only=True).artifact
        latency, cached, info, rounds = measure_against(ctx, early, trial_dir, times, number, expected_ms)
        build_info.update(info)
        over = ctx.stager.skip_recovery(latency.median_ms)

        def screen(model) -> str | None:  # stage 2: zero-shot accuracy after BN recalibration
            if over:
                return over
            with _stage("screen", times):
                zero["accuracy"] = ctx.task.metric(model, ctx.task.val, rec.eval_samples)
            return ctx.stager.skip_finetune(latency.median_ms, zero["accuracy"])

        gate = screen if ctx.stager.skips else None

    model, report, skipped = prune_and_recover(ctx, plan, seed, times, gate)
    with _stage("evaluate", times):
        acc = zero["accuracy"] if skipped and "accuracy" in zero else ctx.task.metric(model, ctx.task.val, rec.eval_samples)
    fine_tuned = not skipped and not plan.is_identity
    steps = rec.finetune_steps if fine_tuned else 0
    rungs = {steps: acc} if fine_tuned else {}
    stopped = None
    if fine_tuned and ctx.stager is not None:  # multi-fidelity: the promising ones recover longer
        rungs, stopped = climb(ctx, model, report.masks, latency.median_ms, rungs, seed, times)
        steps = max(rungs)
        acc = rungs[steps]
    exported = export_candidate(ctx, model, plan.precision, files.onnx, times)
    onnx = exported.artifact
    with _stage("export", times):
        torch.save(model.state_dict(), files.state)
        files.plan.write_text(json.dumps(plan.to_dict(), indent=1))
    float_acc = None
    if plan.precision != "float32":  # the candidate's accuracy is the quantized model's own
        float_acc = acc
        with _stage("evaluate", times):
            acc = ctx.task.metric(OnnxModel(onnx.path), ctx.task.val, rec.eval_samples)
    if early is None or early.arch_hash != onnx.arch_hash:
        latency, cached, build_info, rounds = measure_against(ctx, onnx, trial_dir, times, number, expected_ms)
    also = {device.name: measure_on(ctx, device, onnx, trial_dir, times, number) for device in ctx.also}
    return Candidate(
        accuracy=acc,
        latency=latency,
        latency_cached=cached,
        size_mb=(onnx.gzip_bytes if ctx.space.space.size_metric == "gzip" else onnx.bytes) / 1e6,
        onnx=onnx,
        pruned=report,
        violation=ctx.space.space.constraints.violation(onnx.params, onnx.nonzero_params, *ctx.base_params),
        stage_s=times,
        evaluation=f"zero-shot: {skipped}" if skipped else "full",
        zero_shot_accuracy=zero.get("accuracy"),
        build_info=build_info,
        also=also,
        finetune_steps=steps,
        eval_samples=min(len(ctx.task.val), rec.eval_samples or len(ctx.task.val)),
        rung_accuracy=rungs,
        promotion=stopped,
        precision=plan.precision,
        quantization=exported.settings if plan.precision != "float32" else {},
        float_accuracy=float_acc,
        latency_rounds=rounds,
    )


@dataclass(frozen=True)
class Screened:
    """What screening one plan found: its latency (the screen's short protocol) and,
    within reach of the budget, its screen score."""

    latency: Measurement
    score: float | None
    note: str | None  # why it was not scored
    precision: str
    onnx: OnnxArtifact
    pruned: pruning.PruneReport
    stage_s: dict[str, float]

    def attrs(self) -> dict[str, Any]:
        """The trial attributes it is recorded as (``trials.record_screen``)."""
        return {"screen_score": self.score, "screen_latency_ms": self.latency.median_ms, "screen_note": self.note,
                "arch_hash": self.onnx.arch_hash, "macs": self.onnx.macs,
                "params": self.onnx.params, "widths": {k: list(v) for k, v in self.pruned.widths.items()},
                "dropped_blocks": list(self.pruned.dropped_blocks), "precision": self.precision,
                "stage_s": self.stage_s}


def screen_candidate(ctx: Context, plan: pruning.PruningPlan, trial_dir: Path, seed: int, number: int,
                     device: Device, budget_ms: float) -> Screened:
    """Screen one plan: surgery, the export its precision ships as, a short timing on
    ``device`` (the main device with the screen's protocol), and, when that latency is
    within ``budget_ms``, the screen's score (``autoprune.screen.screen``); no training
    beyond the screen's few steps, nothing kept on disk.

    Raises:
        TrialFailure: the plan could not be pruned, exported or timed.
    """
    sys.audit("autoprune.trial", number)
    times: dict[str, float] = {}
    trial_dir.mkdir(parents=True, exist_ok=True)
    try:
        with _stage("prune", times, ctx.space.space.prune_timeout_s):
            model, report = prune(ctx, plan, seed)
            _check_constraints(ctx, model)
        onnx = export_candidate(ctx, model, plan.precision, TrialFiles(trial_dir).onnx, times,
                                latency_only=True).artifact
        latency, _, _ = measure(ctx, onnx, trial_dir, times, number, device)
        score, note = None, None
        if latency.median_ms > budget_ms:
            note = f"latency {latency.median_ms:.3f} ms is over the {budget_ms:g} ms budget"
        else:
            with _stage(FailStage.SCREEN.value, times):
                score = screen_score(model, report.masks, ctx.task, ctx.space.space.screen, ctx.distill, seed)
        return Screened(latency, score, note, plan.precision, onnx, report, times)
    finally:
        sys.audit("autoprune.trial", -1)
        shutil.rmtree(trial_dir, ignore_errors=True)  # the record holds what the screen found


def measure_on(ctx: Context, device: Device, onnx: OnnxArtifact, trial_dir: Path,
               times: dict[str, float], number: int = -1) -> Measurement:
    """Build and time the candidate for one more device (same cache, its own profile hash)."""
    own: dict[str, float] = {}
    work = TrialFiles(trial_dir).device(device.name)
    work.mkdir(parents=True, exist_ok=True)
    try:
        latency, _, _ = measure(ctx, onnx, work, own, number, device)
    except TrialFailure as exc:
        raise TrialFailure(exc.stage, f"on {device.name}: {exc.reason}", device_lost=exc.device_lost) from None
    times[f"measure@{device.name}"] = own.get("build", 0.0) + own.get("measure", 0.0)
    return latency
