"""The one schema of a trial: what it holds, how it failed, where its files are.

A trial's results live in its Optuna user attributes, so that any Optuna tool (the
dashboard, ``study.trials_dataframe()``) sees them. This module is the only code that
writes or reads them: :func:`record_plan`, :func:`record_candidate`,
:func:`record_failure` and :func:`enqueue` write; :meth:`TrialRecord.of` reads one
finished (or running) trial back as a typed, frozen record. The attribute keys are the
field names of :class:`TrialRecord`, so a study written by an older autoprune reads
back the same way, and a key that a trial lacks is ``None`` by declaration, not by typo.

Example:
    >>> from autoprune.trials import TrialRecord
    >>> records = [TrialRecord.of(t) for t in study.get_trials(deepcopy=False)]
    >>> [r.latency_ms for r in records if r.complete]
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autoprune.export import OnnxArtifact
    from autoprune.measure import Measurement
    from autoprune.pruning import PruneReport


class FailStage(str, enum.Enum):
    """Where a trial failed. ``interrupted``: not the candidate's fault (its worker or
    its board died); such a trial does not count toward ``--trials`` and runs again."""

    PRUNE = "prune"
    RECOVER = "recover"
    SCREEN = "screen"  # staged evaluation's zero-shot accuracy
    EVALUATE = "evaluate"
    EXPORT = "export"
    QUANTIZE = "quantize"  # the float export to the candidate's precision (INT8 calibration)
    BUILD = "build"
    MEASURE = "measure"
    INTERRUPTED = "interrupted"


class TrialFailure(Exception):
    """A candidate failed at ``stage``; ``reason`` is what the trial records.

    ``device_lost``: the device died during the measurement, so the candidate is not to
    blame (the search marks the trial interrupted and runs its plan again).
    """

    def __init__(self, stage: FailStage | str, reason: str, *, device_lost: bool = False) -> None:
        self.stage = FailStage(stage)
        super().__init__(f"{self.stage.value}: {reason}")
        self.reason = reason
        self.device_lost = device_lost


@dataclass(frozen=True)
class TrialFiles:
    """Where one trial's files are, under ``<study>/trials/<number>/``."""

    dir: Path

    @classmethod
    def of(cls, study_dir: str | Path, number: int) -> TrialFiles:
        return cls(Path(study_dir) / "trials" / str(number))

    @property
    def onnx(self) -> Path:
        return self.dir / "model.onnx"

    @property
    def float_onnx(self) -> Path:
        """The float32 export a quantized candidate (``model.onnx``) was made from."""
        return self.dir / "model.float.onnx"

    @property
    def state(self) -> Path:
        return self.dir / "state.pt"

    @property
    def plan(self) -> Path:
        return self.dir / "plan.json"

    @property
    def final(self) -> TrialFiles:
        """``autoprune finalize``'s longer fine-tune of the trial (same file names)."""
        return TrialFiles(self.dir / "final")

    def device(self, name: str) -> Path:
        """The work folder for building and timing on a further device."""
        return self.dir / "devices" / name


@dataclass(frozen=True)
class Candidate:
    """What a successful trial produced (the objective's result)."""

    accuracy: float
    latency: Measurement
    latency_cached: bool
    size_mb: float
    onnx: OnnxArtifact
    pruned: PruneReport
    stage_s: dict[str, float]
    violation: str | None = None  # the unpruned reference may break the space's caps
    evaluation: str = "full"  # or "zero-shot: <why the fine-tune was skipped>"
    zero_shot_accuracy: float | None = None  # after BN recalibration, before fine-tuning
    build_info: dict[str, Any] = field(default_factory=dict)  # BuildResult.info; empty if cached
    also: dict[str, Measurement] = field(default_factory=dict)  # latency on each other device
    finetune_steps: int = 0  # the fidelity of ``accuracy``: total fine-tune steps behind it
    eval_samples: int | None = None  # validation examples ``accuracy`` was scored on
    rung_accuracy: dict[int, float] = field(default_factory=dict)  # total steps -> accuracy at that rung
    promotion: str | None = None  # why it stopped before the last rung (None: it reached it, or no rungs)
    precision: str = "float32"
    quantization: dict[str, Any] = field(default_factory=dict)  # how it was quantized (autoprune.quantize)
    float_accuracy: float | None = None  # a quantized candidate's float model, before quantization
    latency_rounds: list[float] = field(default_factory=list)  # each timing's median, when taken again


# the per-device figures recorded for every further device, as ``<key>@<profile>``
DEVICE_KEYS = ("latency_ms", "latency_p90_ms", "latency_cv", "latency_noisy", "latency_session_spread")


@dataclass(frozen=True)
class TrialRecord:
    """One trial as stored: how it was queued, what it ran, what it measured or why it failed.

    Fields that a trial has not reached are ``None`` (a failed trial has no latency).
    ``build`` holds what the backend reported (``build_<key>`` attributes) and
    ``devices`` each further device's figures (``<key>@<profile>`` attributes).
    """

    number: int
    state: str  # Optuna's TrialState name: COMPLETE, FAIL, RUNNING, WAITING
    params: dict[str, Any]
    duration_s: float | None = None
    # how it was queued
    baseline: bool = False
    warm_start: str | None = None
    retry_of: int | None = None
    queued_params: dict[str, Any] | None = None  # an enqueued trial's plan, kept whole for a retry
    # the screen (autoprune/screen.py): a screened plan is pruned and scored cheaply, never
    # trained, and ends PRUNED; a trained plan the screen chose names its screened trial
    screen: bool = False
    screened_from: int | None = None
    screen_score: float | None = None  # the screen's metric (search-time, see the space's screen:)
    screen_latency_ms: float | None = None  # measured with the screen's short protocol
    screen_note: str | None = None  # why it was not scored (over the budget)
    owner: str | None = None  # host:pid of the process running it
    plan: dict[str, Any] | None = None
    # how it failed
    fail_stage: FailStage | None = None
    fail_reason: str | None = None
    # what it measured
    accuracy: float | None = None
    latency_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_ci_low_ms: float | None = None
    latency_ci_high_ms: float | None = None
    latency_cv: float | None = None
    latency_runs: int | None = None
    latency_noisy: bool | None = None
    latency_cached: bool | None = None
    latency_threads: int | None = None
    latency_sessions: int | None = None
    latency_session_spread: float | None = None
    latency_rounds: list[float] | None = None  # each timing round's median, when it was taken again
    load_avg: float | None = None
    size_mb: float | None = None
    onnx_bytes: int | None = None
    gzip_bytes: int | None = None
    onnx_sha256: str | None = None
    arch_hash: str | None = None
    macs: int | None = None
    params_count: int | None = None  # stored as ``params`` (Optuna's ``params`` is the plan's choices)
    nonzero_params: int | None = None
    parity_max_abs_diff: float | None = None
    widths: dict[str, list[int]] | None = None
    sparsity: dict[str, float] | None = None
    heads: dict[str, list[int]] | None = None
    dropped_blocks: list[str] | None = None
    skipped: dict[str, str] | None = None
    prune_warnings: list[str] | None = None  # what Torch-Pruning warned (said once at set-up)
    evaluation: str | None = None
    zero_shot_accuracy: float | None = None
    finetune_steps: int | None = None  # the fidelity of ``accuracy`` (None: written before rungs existed)
    eval_samples: int | None = None
    rung_accuracy: dict[str, float] | None = None  # total steps (as text: JSON keys) -> accuracy
    promotion: str | None = None
    precision: str | None = None  # None: written before precisions existed (float32)
    quantization: dict[str, Any] | None = None
    float_accuracy: float | None = None  # the float model's accuracy when ``accuracy`` is a quantized one's
    constraint_violation: str | None = None
    stage_s: dict[str, float] | None = None
    build: dict[str, Any] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, trial: Any) -> TrialRecord:
        """Read an Optuna trial (``FrozenTrial``, or a running ``Trial``)."""
        attrs = dict(trial.user_attrs)
        state = getattr(trial, "state", None)
        duration = getattr(trial, "duration", None)
        known = {f.name for f in fields(cls)} - {"number", "state", "params", "duration_s", "build", "devices",
                                                 "params_count", "fail_stage"}
        values: dict[str, Any] = {k: attrs[k] for k in known if k in attrs}
        stage = attrs.get("fail_stage")
        return cls(
            number=trial.number,
            state=state.name if state is not None else "RUNNING",
            params=dict(trial.params),
            duration_s=duration.total_seconds() if duration else None,
            params_count=attrs.get("params"),
            fail_stage=FailStage(stage) if stage else None,
            build={k[len("build_"):]: v for k, v in attrs.items() if k.startswith("build_")},
            devices=_devices(attrs),
            **values,
        )

    @property
    def complete(self) -> bool:
        return self.state == "COMPLETE"

    @property
    def first_rung_accuracy(self) -> float | None:
        """Accuracy after the first rung of fine-tuning (what staging and rung 0 compare)."""
        if not self.rung_accuracy:
            return self.accuracy if self.evaluation == "full" and self.finetune_steps is None else None
        return self.rung_accuracy[min(self.rung_accuracy, key=int)]

    @property
    def interrupted(self) -> bool:
        """Failed through no fault of the candidate: its worker or board died.

        A FAIL without a recorded stage was failed from outside (a dead worker's trial,
        failed by Optuna's heartbeat check before autoprune's own check saw it).
        """
        return self.state == "FAIL" and self.fail_stage in (None, FailStage.INTERRUPTED)

    @property
    def counts(self) -> bool:
        """Counts toward ``--trials``: finished because of its candidate, or running."""
        if self.screen:  # screened plans are many and cheap: --trials counts trained ones
            return False
        return self.state in ("COMPLETE", "RUNNING") or (self.state == "FAIL" and not self.interrupted)

    def retry_attrs(self) -> dict[str, Any]:
        """What a retry of this trial is queued with: its role, and where it came from."""
        return {k: v for k, v in (("baseline", self.baseline), ("warm_start", self.warm_start),
                                  ("screen", self.screen), ("screened_from", self.screened_from)) if v}

    @property
    def retry_params(self) -> dict[str, Any]:
        """The plan a retry runs: the queued plan whole, or the parameters stored so far."""
        return dict(self.queued_params) if self.queued_params else dict(self.params)


def _devices(attrs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in attrs.items():
        name, at, device = key.partition("@")
        if at and name in DEVICE_KEYS:
            out.setdefault(device, {})[name] = value
    return out


# -- writing ----------------------------------------------------------------------------


def record_owner(trial: Any, owner: str) -> None:
    trial.set_user_attr("owner", owner)


def record_plan(trial: Any, plan: dict[str, Any]) -> None:
    trial.set_user_attr("plan", plan)


def record_screen(trial: Any, attrs: dict[str, Any]) -> None:
    """Record what screening a plan found (``objective.Screened.attrs``)."""
    trial.set_user_attr("screen", True)
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def record_failure(trial: Any, failure: TrialFailure) -> None:
    trial.set_user_attr("fail_stage", failure.stage.value)
    trial.set_user_attr("fail_reason", failure.reason[:2000])


def record_candidate(trial: Any, c: Candidate) -> None:
    """Record what a successful trial measured (flat, JSON-friendly attributes)."""
    for key, value in candidate_attrs(c).items():
        trial.set_user_attr(key, value)


def candidate_attrs(c: Candidate) -> dict[str, Any]:
    """The attributes :func:`record_candidate` writes, keyed as :class:`TrialRecord` reads them."""
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
        "latency_rounds": c.latency_rounds or None,
        "load_avg": m.load_avg,
        "size_mb": c.size_mb,
        "onnx_bytes": c.onnx.bytes,
        "gzip_bytes": c.onnx.gzip_bytes,
        "onnx_sha256": c.onnx.sha256,
        "arch_hash": c.onnx.arch_hash,
        "macs": c.onnx.macs,
        "params": c.onnx.params,
        "nonzero_params": c.onnx.nonzero_params,
        "parity_max_abs_diff": c.onnx.max_abs_diff,
        "widths": {k: list(v) for k, v in c.pruned.widths.items()},
        "sparsity": c.pruned.sparsity,
        "heads": {k: list(v) for k, v in c.pruned.heads.items()},
        "dropped_blocks": list(c.pruned.dropped_blocks),
        "skipped": c.pruned.skipped,
        "prune_warnings": list(c.pruned.warnings) or None,
        "evaluation": c.evaluation,
        "zero_shot_accuracy": c.zero_shot_accuracy,
        "finetune_steps": c.finetune_steps,
        "eval_samples": c.eval_samples,
        "rung_accuracy": {str(k): v for k, v in c.rung_accuracy.items()},
        "promotion": c.promotion,
        "precision": c.precision,
        "quantization": c.quantization or None,
        "float_accuracy": c.float_accuracy,
        "constraint_violation": c.violation,
        "stage_s": c.stage_s,
        **{f"build_{k}": v for k, v in c.build_info.items()},
        **{f"{key}@{name}": value for name, m in c.also.items() for key, value in zip(DEVICE_KEYS, (
            m.median_ms, m.p90_ms, m.cv, m.noisy, m.session_spread), strict=True)},
    }


def enqueue(study: Any, params: dict[str, Any], *, baseline: bool = False, warm_start: str | None = None,
            retry_of: int | None = None, screen: bool = False, screened_from: int | None = None) -> None:
    """Queue a plan to run next (Optuna runs queued trials first, oldest first).

    The plan is also kept whole in ``queued_params``: a kill while Optuna stores a
    trial's parameters one by one must not turn its retry into a different plan.
    """
    attrs: dict[str, Any] = {"queued_params": params}
    if baseline:
        attrs["baseline"] = True
    if warm_start:
        attrs["warm_start"] = warm_start
    if retry_of is not None:
        attrs["retry_of"] = retry_of
    if screen:
        attrs["screen"] = True
    if screened_from is not None:
        attrs["screened_from"] = screened_from
    study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)


def retry(study: Any, record: TrialRecord) -> None:
    """Queue an interrupted trial's plan once more, with its role (baseline, warm start)."""
    enqueue(study, record.retry_params, retry_of=record.number, **record.retry_attrs())


def mark_interrupted(storage: Any, trial_id: int, reason: str) -> None:
    """Record, through a storage, that a running trial's worker died (before failing it)."""
    storage.set_trial_user_attr(trial_id, "fail_stage", FailStage.INTERRUPTED.value)
    storage.set_trial_user_attr(trial_id, "fail_reason", reason)
