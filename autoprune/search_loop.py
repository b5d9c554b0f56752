"""The search loop: ``autoprune search`` and ``autoprune worker`` share it.

Objectives are accuracy (maximise), latency_ms (minimise) and size_mb (minimise), then
one latency per further device. The latency budget is a constraint
(``Trial.set_constraint``): infeasible trials are kept and ranked behind feasible
ones. Trial 0 is the unpruned model, the baseline; the uniform plans a user would try
by hand come next (warm start).

The path, for a new search, a resumed one and a worker alike:

1. :func:`_set_up` checks every name, file and device and the results folder (nothing
   is written, nothing heavy imported);
2. the storage is opened and an existing study of the name vetted (:mod:`autoprune.storage`);
3. :func:`_prepare` loads the task, resolves the space and, for a new study, checks that
   the budget is reachable, then writes ``config.json``;
4. the study is created or loaded, and :func:`run_trials` runs this process's share.

Example:
    >>> import autoprune
    >>> result = autoprune.search(task="digits", device="x86-ort",
    ...                           latency_budget_ms=0.05, n_trials=8)
    >>> result.front[["trial", "accuracy", "latency_ms"]]
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprune import accelerator, storage
from autoprune._config import atomic_write_text, scratch_dir
from autoprune.device import Device
from autoprune.errors import BudgetError, ConfigError, StudyError, TaskError
from autoprune.evaluate import MetricInfo
from autoprune.limits import SETUP_TIMEOUT_S
from autoprune.trials import FailStage, TrialFailure, TrialFiles, TrialRecord

if TYPE_CHECKING:
    from autoprune.objective import Context, Stager
    from autoprune.results import SearchResult
    from autoprune.space import SearchSpace
    from autoprune.tasks import Task

CONFIG_SCHEMA = "autoprune.study/1"
DIRECTIONS = ("maximize", "minimize", "minimize")
OBJECTIVES = ("accuracy", "latency_ms", "size_mb")
WARM_START_RATIOS = (0.5, 0.3)
SAMPLERS = ("tpe", "nsga2", "gp", "random")
SCREEN_ENV = "AUTOPRUNE_SCREEN_PLANS"  # the default of --screen-plans, when set
# A screen scores `plans` plans within the budget; a plan timed over it (or one that failed)
# costs only its timing and does not count, up to this many drawn per plan to score. Under
# an 8x budget on an Intel host every INT8 ladder plan timed over it, and `make demo` had
# scored 1-3 of its 24 plans.
SCREEN_DRAWS = 4


def screen_plans_default() -> int | None:
    """``$AUTOPRUNE_SCREEN_PLANS`` as a number of plans, or None when unset.

    Raises:
        ConfigError: it is set to something other than a whole number >= 0.
    """
    value = os.environ.get(SCREEN_ENV)
    if value is None or value == "":
        return None
    if not value.strip().isdigit():
        raise ConfigError(f"{SCREEN_ENV} must be a whole number of plans >= 0 (0: no screen), got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class SearchConfig:
    """What a search is; two runs with the same identity are the same study."""

    task: str
    device: str
    # None only with ``speedup``, until the search has measured the unpruned model
    latency_budget_ms: float | None
    n_trials: int
    space: str = "default"
    study_name: str | None = None
    results_dir: str = "results"
    storage: str | None = None
    seed: int = 0
    data_dir: str | None = None
    sampler: str = "tpe"
    warm_start: bool = True  # enqueue the uniform plans users try by hand
    # keyword arguments for a task factory (``--task-arg key=value``; identity when given)
    task_args: tuple[tuple[str, Any], ...] = ()
    # processes loading a Dataset split (None: tasks._base.default_workers); not identity
    workers: int | None = None
    # More devices, each timed for every candidate: (profile, budget ms or None). Their
    # latencies are extra objectives; a budget also makes them a per-device constraint.
    also: tuple[tuple[str, float | None], ...] = ()
    # What to do with the finished trials (not part of the study's identity).
    finalize: bool = True  # fine-tune and re-time the front's best at the end
    final_members: int | None = None  # at most this many (None: the space's recovery.final_members)
    max_drop: float = 1.0  # accuracy points: the recommended pick's allowance
    min_metric: float | None = None  # least accuracy shown on the front (default: baseline - 10)
    artifacts: str | None = None  # an artifact store URL the trials' files go through (autoprune.artifacts)
    # where this process trains (autoprune.accelerator; resolved: "cpu", "cuda:0") and its
    # mixed precision; not identity: latency never depends on it
    train_device: str = "cpu"
    amp: str = "off"
    # How long and how much memory tracing the model at set-up may take (None: no time
    # limit / half the memory available); not identity either.
    setup_timeout_s: float | None = SETUP_TIMEOUT_S
    setup_memory_gb: float | None = None
    # The precisions to search, overriding the space's `precision.choices` (identity:
    # recorded in config.json when given)
    precisions: tuple[str, ...] | None = None
    # Plans screened before training, overriding the space's `screen.plans` (0: no
    # screen; identity: recorded in config.json when given)
    screen_plans: int | None = None
    # The budget as a speed-up over the unpruned model on ``device`` (``--speedup``): a
    # new study measures that model and records latency / speedup as its budget, so a
    # resume keeps the budget it started with (identity: recorded when given).
    speedup: float | None = None

    def __post_init__(self) -> None:
        if not (self.max_drop >= 0 and math.isfinite(self.max_drop)):
            raise ConfigError(f"--max-drop must be a number of accuracy points >= 0, got {self.max_drop}.")
        if self.min_metric is not None and not math.isfinite(self.min_metric):
            raise ConfigError(f"--min-metric must be a finite number, got {self.min_metric}.")
        for flag, value in (("--setup-timeout-s", self.setup_timeout_s), ("--setup-memory-gb", self.setup_memory_gb)):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{flag} must be a positive number, got {value}.")
        names = [self.device, *(name for name, _ in self.also)]
        if len(set(names)) != len(names):
            raise ConfigError(f"a device is named twice ({', '.join(names)}); name each once.")
        for name, budget in self.also:
            if budget is not None and not (budget > 0 and math.isfinite(budget)):
                raise ConfigError(f"the latency budget for {name} must be a positive number of ms, got {budget}.")
        if self.precisions is not None:
            from autoprune.profiles import PRECISIONS

            unknown = [p for p in self.precisions if p not in PRECISIONS]
            if unknown or not self.precisions:
                raise ConfigError(f"--precision takes a comma-separated list of {', '.join(PRECISIONS)}; "
                                  f"got {','.join(self.precisions) or 'nothing'}.")
        if self.screen_plans is not None and self.screen_plans < 0:
            raise ConfigError(f"--screen-plans must be 0 (no screen) or more, got {self.screen_plans}.")
        if self.final_members is not None and self.final_members < 1:
            raise ConfigError(f"--final-members must be 1 or more, got {self.final_members}.")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"--workers must be 0 (load in the main process) or more, got {self.workers}.")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}.")
        if self.speedup is not None and not (self.speedup >= 1 and math.isfinite(self.speedup)):
            raise ConfigError(f"--speedup must be a number >= 1 (the budget is the unpruned model's latency "
                              f"divided by it, e.g. --speedup 4), got {self.speedup}.")
        if self.latency_budget_ms is None and self.speedup is None:
            raise ConfigError("give the latency budget: --latency-budget-ms MS, or --speedup X for the unpruned "
                              "model's latency on the device divided by X.")
        if self.latency_budget_ms is not None and not (self.latency_budget_ms > 0
                                                        and math.isfinite(self.latency_budget_ms)):
            raise ConfigError(
                f"the latency budget must be a positive number of milliseconds, got {self.latency_budget_ms}."
            )
        if self.n_trials < 1:
            raise ConfigError(f"--trials must be at least 1 (trial 0 is the baseline), got {self.n_trials}.")
        if self.study_name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", self.study_name):
            raise ConfigError(
                f"study name {self.study_name!r} must start with a letter or digit and use only "
                "letters, digits, '.', '_', '+' and '-'."
            )

    @property
    def name(self) -> str:
        if self.study_name:
            return self.study_name
        # other devices by profile name (a YAML path's stem), so the name stays short
        devices = "+".join([self.device, *(Path(n).stem if n.endswith((".yaml", ".yml")) else n
                                           for n, _ in self.also)])
        return re.sub(r"[^A-Za-z0-9_.+-]+", "-", f"{self.task}-{devices}").strip("-")

    @property
    def study_dir(self) -> Path:
        return Path(self.results_dir) / self.name


def directions(n_also: int, metric: MetricInfo | None = None) -> list[str]:
    """the metric (accuracy unless named), latency, size, then one latency per additional device."""
    first = (metric or MetricInfo()).optuna_direction
    return [first, *DIRECTIONS[1:], *("minimize",) * n_also]


def make_sampler(name: str, seed: int):
    """Optuna's samplers by name; all handle the latency budget as a constraint.

    The default is TPE: see results/benchmarks/samplers.md for the equal-budget comparison.
    """
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=8)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=8)
    return optuna.samplers.RandomSampler(seed=seed)


# -- 1. set-up: every check before anything is written --------------------------------


@dataclass(frozen=True)
class _Setup:
    config: SearchConfig
    device: Device
    also: list[Device]
    space: SearchSpace
    identity: dict[str, Any]
    resuming: bool

    @property
    def study_dir(self) -> Path:
        return self.config.study_dir


def _set_up(config: SearchConfig, *, worker: bool) -> _Setup:
    from autoprune.tasks._loader import check_task_spec

    check_task_spec(config.task)
    recorded = _read_config(config.study_dir)  # the study this folder holds, if any
    config = _recorded_budget(config, recorded)
    device = Device.open(config.device, config.latency_budget_ms)
    space, screen_plans = _study_space(config, recorded)
    also = [Device.open(name, budget) for name, budget in config.also]
    identity = _identity(config, device, space, also, screen_plans)
    study_dir = config.study_dir
    if worker:  # the study exists in the storage: nothing to measure first
        resuming = True
        if (study_dir / "config.json").is_file():
            _check_study_dir(study_dir, identity, config.storage)
    elif config.storage is None:
        resuming = _check_study_dir(study_dir, identity, config.storage)
    else:
        resuming = (study_dir / "config.json").is_file() and _check_study_dir(study_dir, identity, config.storage)
    _check_writable(Path(config.results_dir))
    return _Setup(config, device, also, space, identity, resuming)


def _read_config(study_dir: Path) -> dict[str, Any] | None:
    try:
        old = json.loads((study_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return old if isinstance(old, dict) else None


def _recorded_budget(config: SearchConfig, recorded: dict[str, Any] | None) -> SearchConfig:
    """A ``--speedup`` search resuming: the budget its study resolved when it started
    (re-measuring would move it with the machine's noise, and the trials so far were
    judged by the first one). Anything else is left for the identity check to refuse."""
    if config.speedup is None or config.latency_budget_ms is not None or not recorded:
        return config
    budget = recorded.get("latency_budget_ms")
    if recorded.get("speedup") != config.speedup or not isinstance(budget, (int, float)):
        return config
    return dataclasses.replace(config, latency_budget_ms=float(budget))


def _with_budget(setup: _Setup, budget_ms: float) -> _Setup:
    """The set-up of a new ``--speedup`` search once its budget is measured."""
    return dataclasses.replace(setup, config=dataclasses.replace(setup.config, latency_budget_ms=budget_ms),
                               device=dataclasses.replace(setup.device, budget_ms=budget_ms),
                               identity={**setup.identity, "latency_budget_ms": budget_ms})


def _study_space(config: SearchConfig, old: dict[str, Any] | None) -> tuple[SearchSpace, int | None]:
    """The space of this search and the ``--screen-plans`` that changed it (None: it did not).

    It is the named space, or, for the study in ``study_dir`` (``old``: its config.json) made before the named space
    changed, the space that study recorded (:func:`autoprune.space.space_of`); a study of
    another space is refused later.
    """
    from autoprune.space import space_of

    recorded = isinstance(old, dict) and old.get("space") == config.space and old.get("space_hash")
    # the named space (or its retired version); the override is this command's to apply
    space = space_of(old, screen_plans_applied=False) if recorded else space_of({"space": config.space})
    if config.screen_plans is None or config.screen_plans == space.screen.plans:
        return space, None
    return space.with_screen_plans(config.screen_plans), config.screen_plans


def _identity(config: SearchConfig, device: Device, space: SearchSpace, also: list[Device],
              screen_plans: int | None = None) -> dict[str, Any]:
    # [profile name (its columns are latency_ms@name), profile hash, budget, as given (name or path)]
    extra = {"also": [[d.name, d.profile.hash, d.budget_ms, given]
                      for d, (given, _) in zip(also, config.also, strict=True)]} if also else {}
    return {
        "schema": CONFIG_SCHEMA,
        "study": config.name,
        "task": config.task,
        "device": config.device,
        "profile_hash": device.profile.hash,
        "space": config.space,
        "space_hash": space.hash,
        "latency_budget_ms": config.latency_budget_ms,
        "seed": config.seed,
        "sampler": config.sampler,
        **extra,  # absent for one device, so older studies keep their identity
        **({"precisions": list(config.precisions)} if config.precisions else {}),
        **({"screen_plans": screen_plans} if screen_plans is not None else {}),
        **({"task_args": dict(config.task_args)} if config.task_args else {}),
        **({"speedup": config.speedup} if config.speedup is not None else {}),
    }


def _with_metric(identity: dict[str, Any], metric: MetricInfo) -> dict[str, Any]:
    """The identity with the task's metric; top-1 accuracy is left out, so studies from
    before metrics had names keep their identity."""
    return identity if metric == MetricInfo() else {**identity, "metric": metric.describe()}


def _load_task(setup: _Setup, log: Callable[[str], None]):
    """The task, checked before trial 0 (its baseline must run: see tasks._validate)."""
    from autoprune.tasks import load_task
    from autoprune.tasks._base import DataSplit
    from autoprune.tasks._validate import validate

    config = setup.config
    task = load_task(config.task, config.data_dir, dict(config.task_args))
    for note in task.notes:
        log(note)
    if config.workers is not None:
        for split in (task.train, task.val):
            if isinstance(split, DataSplit):
                split.workers = config.workers
    validate(task)
    info, floor = task.metric.info, config.min_metric
    if floor is not None and info.unit == "%" and not 0.0 <= floor <= 100.0:
        # a percentage floor outside 0-100 hides every candidate: say so now, not as an empty recommendation
        raise ConfigError(f"--min-metric {floor:g} is outside 0-100: {info.name} is a percentage. Give the least "
                          f"{info.name} worth showing, e.g. --min-metric 85.")
    return task


def _check_study_dir(study_dir: Path, identity: dict[str, Any], storage_url: str | None) -> bool:
    """Return True if resuming; refuse a folder that holds anything else.

    A results folder belongs to one study in one storage: the same settings with
    another ``--storage`` would be another study writing into this one's trial folders.
    """
    cfg = study_dir / "config.json"
    if cfg.is_file():
        try:
            old = json.loads(cfg.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StudyError(f"{cfg} is unreadable ({exc}); move the folder away or pick another --study.") from None
        if not isinstance(old, dict):
            raise StudyError(f"{cfg} is damaged (not a JSON object); move the folder away or pick another --study.")
        if any(old.get(k) != v for k, v in identity.items()):
            raise StudyError(
                f"{study_dir} holds a different study ({storage.diff(old, identity)}). Nothing was changed. "
                "Use another --study NAME or --results-dir, or the original settings to resume."
            )
        there, here = old.get("storage"), storage.without_password(storage_url)
        if there != here:
            raise StudyError(
                f"{study_dir} holds the study stored in {there or 'its own study.db'}, and this command names "
                f"{here or 'the default study.db in the folder'}. Nothing was changed. Resume with the "
                "same --storage as before, or use another --results-dir or --study NAME."
            )
        return True
    if study_dir.exists() and not study_dir.is_dir():
        raise StudyError(f"{study_dir} exists and is a file, not a study folder. Nothing was changed. "
                         "Choose another --study NAME or --results-dir.")
    if study_dir.exists() and any(study_dir.iterdir()):
        raise StudyError(
            f"{study_dir} exists and is not an autoprune study (no config.json). Nothing was "
            "changed. Choose another --study NAME or --results-dir."
        )
    return False


def _check_writable(folder: Path) -> None:
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"results directory {folder} is not writable (checked {probe}).")


# -- 3. the task, the resolved space, the budget check, config.json ------------------


def _prepare(setup: _Setup, task, log: Callable[[str], None]) -> tuple[_Setup, Context]:
    from autoprune.measure import MeasurementCache
    from autoprune.objective import Context
    from autoprune.space import resolve_task

    config = setup.config
    resolved = resolve_task(setup.space, task, config.setup_timeout_s, config.setup_memory_gb)
    try:
        resolved = resolved.offer(setup.device.profile, config.precisions)
    except ValueError as exc:
        raise ConfigError(f"{exc} Choose --precision among those, or another --device.") from None
    dropped = [p for p in (config.precisions or setup.space.precision.choices) if p not in resolved.precisions]
    if dropped:
        log(f"precision {', '.join(dropped)} not offered: {setup.device.name} supports "
            f"{', '.join(setup.device.profile.precision.supported)}")
    log_trace(resolved, log)
    if not resolved.found:
        raise ConfigError(
            f"nothing in the model of task {task.name!r} can be pruned: autoprune cuts the output channels of "
            "nn.Conv*/nn.Linear layers (and what they reach), and none of this model's can be cut (why: "
            "'not offered for pruning' above). Build the model from those layers, or prune another one."
        )
    if not resolved.groups:
        raise ConfigError(
            f"search space {config.space!r} leaves no prunable group in task "
            f"{task.name!r}; check its rules (`autoprune groups --task {config.task}`)."
        )
    ctx = Context(task, setup.device, resolved, None, config.seed, also=setup.also)
    measured = {}
    if not setup.resuming or config.latency_budget_ms is None:
        measured, budget = _check_budget(ctx, config.latency_budget_ms, log, config.speedup)
        if config.latency_budget_ms is None:  # --speedup: the budget is now measured
            setup = _with_budget(setup, budget)
            ctx.device = setup.device
    # config.json first: a folder holding it is a study that the same command resumes.
    # not identity; the storage URL never with its password (config.json is readable by others)
    record = dict(setup.identity, storage=storage.without_password(config.storage), data_dir=config.data_dir)
    atomic_write_text(setup.study_dir / "config.json", json.dumps(record, indent=2) + "\n")
    if setup.device.profile.measurement.cache:
        ctx.cache = MeasurementCache(setup.study_dir / "measurements.json")
        for key, m in measured.items():
            ctx.cache.put(key, m)
        ctx.cache.flush()
    return setup, ctx


def log_trace(resolved, log: Callable[[str], None]) -> None:
    """Say once what tracing found that the user did not ask for: protected groups and
    Torch-Pruning's warnings (each trial's own copies go to its record, not the screen)."""
    if resolved.protected:
        log("not offered for pruning: " + "; ".join(f"{k} ({why})" for k, why in resolved.protected.items()))
    for said in resolved.warnings:
        log(f"Torch-Pruning warned: {' '.join(said.split())}")  # whole: a cut warning hid its advice


def _check_budget(ctx: Context, budget_ms: float | None, log: Callable[[str], None],
                  speedup: float | None = None) -> tuple[dict[str, Any], float]:
    """Measure the unpruned model and the most-pruned one at each offered precision;
    refuse a budget that the fastest of them cannot reach.

    Every precision is timed because which is fastest is the device's to say: INT8's
    quantize/dequantize steps can cost more than they save in a small model. Returns
    the measurements by cache key, so that trial 0 need not time the unpruned model again,
    and the budget: ``budget_ms``, or with ``budget_ms`` None the unpruned model's median
    latency / ``speedup``.
    """
    from autoprune.objective import export_candidate, prune
    from autoprune.pruning import PruningPlan

    log("measuring the unpruned and the most-pruned model to check the budget")
    found = {}
    smallest = ctx.space.smallest_plans()  # by precision
    tmp = scratch_dir(Path(tempfile.gettempdir()), "autoprune-preflight-")
    try:
        for label, plan in (("unpruned", PruningPlan()), *smallest.items()):
            try:
                model, _ = prune(ctx, plan, ctx.seed)
                onnx = export_candidate(ctx, model, plan.precision, Path(tmp) / f"{label}.onnx", {},
                                        latency_only=True).artifact
                m = ctx.device.measure(onnx, Path(tmp)).measurement
            except Exception as exc:  # noqa: BLE001 - whatever Torch-Pruning or the exporter raises, said in one line
                if label == "unpruned":
                    raise StudyError(
                        f"the unpruned {ctx.task.name} model cannot be exported and timed on "
                        f"{ctx.device.name}: {exc}"
                    ) from None
                log(f"the most-pruned model at {label} failed ({type(exc).__name__}: {exc}); "
                    "it does not judge the budget")
                continue
            found[label] = (onnx, m)
        timings = [found["unpruned"][1].median_ms]
        if budget_ms is None:
            # The budget is the unpruned model's figure / --speedup, so a slow spell of a shared
            # machine at that one timing loosens it by as much (1.10-1.15 ms here against 0.84-0.89
            # ms in the same hour): the model is timed again after the others, the faster counts.
            onnx, first = found["unpruned"]
            try:
                again = ctx.device.measure(onnx, Path(tmp)).measurement
            except TrialFailure as exc:  # it timed a moment ago: the first figure stands
                log(f"timing the unpruned model again failed ({exc.reason}); its first timing sets the budget")
            else:
                timings.append(again.median_ms)
                if again.median_ms < first.median_ms:
                    found["unpruned"] = (onnx, again)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    measured = {ctx.device.cache_key(o): m for o, m in found.values()}
    base = found["unpruned"][1].median_ms
    from_speedup = budget_ms is None
    if from_speedup:
        # 4 significant figures: the budget is a measurement's quotient, not a user's round number
        budget_ms = float(f"{base / speedup:.4g}")
        both = " and ".join(f"{ms:.3f}" for ms in timings)
        given = (f"budget {budget_ms:g} ms (--speedup {speedup:g}: the unpruned model's {base:.4g} ms, the faster of "
                 f"its timings {both} ms, / {speedup:g})")
    else:
        given = f"budget {budget_ms:g} ms"
    timed = {precision: m for precision, (_, m) in found.items() if precision in smallest}
    if not timed:
        log(f"{given}; not checked: no most-pruned model could be timed")
        return measured, budget_ms
    fastest, small = min(timed.items(), key=lambda kv: kv[1].min_ms)
    each = ", ".join(f"{precision} {m.median_ms:.3f} ms" for precision, m in timed.items())
    log(f"unpruned {base:.3f} ms, most-pruned {each}; {given}")
    # Refuse only what is out of reach beyond doubt: below the fastest single run of
    # the fastest most-pruned model (medians drift between measurements on a shared machine).
    if budget_ms < small.min_ms:
        fix = (f"Lower --speedup to at most {base / small.median_ms:.1f}" if from_speedup
               else f"Raise --latency-budget-ms to at least {small.median_ms:.3f}")
        raise BudgetError(
            f"latency budget {budget_ms:g} ms is below what any candidate can "
            f"reach on {ctx.device.name}: the unpruned model takes {base:.3f} ms and the most "
            f"pruned one the space allows takes {small.median_ms:.3f} ms at {fastest}, "
            f"its fastest precision (fastest run {small.min_ms:.3f} ms). {fix}, or widen the space's ratio range."
        )
    return measured, budget_ms


# -- 4. one trial, and the loop -------------------------------------------------------


def _stager(setup: _Setup, study) -> Stager:
    """The recovery judge (staging and rungs), from the trials finished so far (by any worker)."""
    import optuna

    from autoprune.objective import Stager

    cfg, rec = setup.space.staging, setup.space.recovery
    stager = Stager(setup.config.latency_budget_ms, cfg.over_budget_factor, cfg.min_observations, cfg.margin,
                    skips=cfg.enabled, promote_margin=rec.promote_margin, promote_share=rec.promote_share)
    for r in storage.records(study, states=(optuna.trial.TrialState.COMPLETE,)):
        if r.latency_ms is None or r.accuracy is None:
            continue
        first = r.first_rung_accuracy
        # with more devices a slower candidate here may be faster there: no dominance judgement
        if r.latency_ms <= setup.config.latency_budget_ms and not setup.also:
            if first is not None:
                stager.front.append((r.latency_ms, first))
            for steps, acc in (r.rung_accuracy or {}).items():
                stager.rung_fronts.setdefault(int(steps), []).append((r.latency_ms, acc))
        if first is not None and r.zero_shot_accuracy is not None:
            stager.gains.append(first - r.zero_shot_accuracy)
    return stager


def _objective(setup: _Setup, ctx: Context, store) -> Callable[[Any], tuple[float, ...]]:
    import optuna

    from autoprune import trials
    from autoprune.objective import run_candidate, screen_candidate

    config = setup.config
    screen_device = Device.of(setup.device.profile.for_screen(), setup.device.budget_ms)

    def screen(trial, plan, files: TrialFiles) -> None:
        """Screen the plan, record what it found, and end the trial PRUNED (never trained)."""
        try:
            found = screen_candidate(ctx, plan, files.dir, config.seed + trial.number, trial.number, screen_device,
                                     config.latency_budget_ms)
        except TrialFailure as exc:
            trials.record_failure(trial, exc)
            raise
        trials.record_screen(trial, found.attrs())
        raise optuna.TrialPruned(found.note or "screened")

    def objective(trial) -> tuple[float, ...]:
        sys.audit("autoprune.trial", trial.number)
        plan = ctx.space.suggest(trial)
        trials.record_plan(trial, plan.to_dict())
        files = TrialFiles.of(setup.study_dir, trial.number)
        record = TrialRecord.of(trial)
        if record.screen:
            screen(trial, plan, files)
        ctx.stager = _stager(setup, trial.study)
        expected_ms = None
        if record.screened_from is not None:  # the screen chose it: its zero-shot figure does not judge it again
            ctx.stager.skips = False
            expected_ms = _screen_latency(trial.study, record.screened_from)
        try:
            cand = run_candidate(ctx, plan, files.dir, config.seed + trial.number, trial.number, expected_ms)
        except TrialFailure as exc:
            record = TrialRecord.of(trial)
            if exc.device_lost and record.retry_of is None:
                # The board died, not the candidate: the trial stays failed with its reason,
                # but like a dead worker's it is not counted and its plan runs once more
                # (otherwise a board lost during trial 0 would cost the study its baseline).
                trials.record_failure(trial, TrialFailure(FailStage.INTERRUPTED, exc.reason))
                storage.retry(store, trial.study, record)
            else:
                trials.record_failure(trial, exc)
            raise
        trials.record_candidate(trial, cand)
        # Feasible when <= 0. Optuna ranks infeasible trials behind feasible ones but
        # keeps them (Trial.set_constraint replaced the sampler's constraints_func in 5.0).
        trial.set_constraint("latency_budget", cand.latency.median_ms - config.latency_budget_ms)
        if ctx.space.space.constraints.any:  # only the unpruned reference gets here over a cap
            trial.set_constraint("space_caps", 1.0 if cand.violation else 0.0)
        for device in setup.also:
            if device.budget_ms is not None:
                trial.set_constraint(f"latency_budget@{device.name}",
                                     cand.also[device.name].median_ms - device.budget_ms)
        return (cand.accuracy, cand.latency.median_ms, cand.size_mb,
                *(cand.also[d.name].median_ms for d in setup.also))

    return objective


SCREEN_ATTR = "autoprune.screen_selected"  # study attribute: the screened trials chosen for training
TILT_ATTR = "autoprune.screen_tilted"  # study attribute: the tilts of the screen's front are queued
WAVE_ATTR = "autoprune.screen_second_wave"  # study attribute: the second wave's screened trials (queued)


@dataclass
class Screening:
    """The screen phase of a search (``autoprune/screen.py``): ``plans`` screened trials,
    then, once all are done, the choice of the plans to train, queued as trials.

    Screened plans come from the study's queue (the uniform ladder), then the tilts of
    the front that the ladder draws within the budget (``space``'s ``tilted_params``),
    then Optuna's RandomSampler; each step and the choice are recorded on the study, so a
    resumed search or another worker goes on from where it was. With ``waves`` 2 the
    choice is queued in two waves: half first, the rest once those are trained.
    """

    plans: int
    budget_ms: float
    near: float
    seed: int
    sign: float = 1.0  # the metric's direction (+1: higher is better)
    log: Callable[[str], None] = print
    space: Any = None  # the ResolvedSpace whose plans are tilted (None: no tilts)
    waves: int = 1

    def phase(self, study, target: int) -> str:
        """``screen`` (ask a screened trial), ``wait`` (others' are running) or ``train``."""
        if SCREEN_ATTR in study.user_attrs:
            if self.waves == 1 or WAVE_ATTR in study.user_attrs:
                return "train"
            return self._second_wave(study, target)
        records = storage.records(study)
        if _pending(records) >= target:  # nothing left to train: nothing to screen for
            return "train"
        screened = [r for r in records if r.screen and not r.interrupted]
        waiting = any(r.state == "WAITING" for r in screened)
        room = min(self.plans - _scoring(screened), self.plans * SCREEN_DRAWS - len(screened))
        if self.space is not None and room > 0 and not waiting \
                and TILT_ATTR not in study.user_attrs:  # (a storage read: last)
            if any(r.state == "RUNNING" for r in screened):
                return "wait"  # the front is not all in yet
            self.tilt(study, records, room)
            return "screen"
        if room > 0 or waiting:
            return "screen"
        if any(r.state == "RUNNING" for r in screened):
            return "wait"
        self.choose(study, records, target)
        return "train"

    def ask(self, store, study):
        """The next screened trial: a queued one first (Optuna's queue is FIFO), else a
        fresh random plan. The queue may hand out a trained trial (the baseline) too."""
        import optuna

        seeded = optuna.samplers.RandomSampler(seed=self.seed * 100_003 + len(study.get_trials(deepcopy=False)))
        trial = optuna.Study(study_name=study.study_name, storage=store, sampler=seeded).ask()
        if "queued_params" not in trial.user_attrs:  # fresh: the sampler's plan
            trial.set_user_attr("screen", True)
        return trial

    def tilt(self, study, records: list[TrialRecord], room: int) -> None:
        """Queue, for screening, up to ``room`` tilts of the plans on the screen's front
        within the budget, the best-scoring plan's first."""
        from autoprune import trials
        from autoprune.screen import ScreenedPlan, front
        from autoprune.space import TILTS

        by_number = {r.number: r for r in records}
        pool = [ScreenedPlan(r.number, self.sign * r.screen_score, r.screen_latency_ms) for r in records
                if r.screen and r.state == "PRUNED" and r.screen_score is not None
                and r.screen_latency_ms is not None and r.screen_latency_ms <= self.budget_ms]
        seen = [r.queued_params or r.params for r in records]
        queued, best = [], front(pool)
        for base in sorted(best, key=lambda s: -s.score):
            for name in TILTS:
                params = self.space.tilted_params(by_number[base.key].params, name)
                if params is not None and params not in seen and len(queued) < room:
                    seen.append(params)
                    queued.append(params)
        for params in queued:
            trials.enqueue(study, params, screen=True)
        study.set_user_attr(TILT_ATTR, len(queued))
        self.log(f"screen: {len(queued)} tilts of the {len(best)} plans on its front within the budget "
                 "queued (channels moved between early and late, inner and shared layers)")

    def choose(self, study, records: list[TrialRecord], target: int) -> None:
        """Queue the screened plans :func:`autoprune.screen.select` picks for training."""
        from autoprune.screen import select

        room = max(0, target - _pending(records))
        # a budget faster than the unpruned model binds: what counts is the best model within it, so
        # the best-scoring plans are trained, in one wave (the waves spread the trained plans over the
        # front's latency range, whose fast end is far from the best within a budget)
        binds = self.budget_ms < self.unpruned_ms(records) < math.inf
        # two waves need two points to bisect between and one to place: three or more
        first = (room + 1) // 2 if self.waves == 2 and room >= 3 and not binds else room
        pool = self.pool(records)
        chosen = select(pool, first, self.budget_ms, self.near, best_first=binds)
        _queue_screened(study, records, chosen)
        study.set_user_attr(SCREEN_ATTR, chosen)
        if first == room:
            study.set_user_attr(WAVE_ATTR, [])  # one wave: nothing is left to place
        screened = [r for r in records if r.screen and r.state == "PRUNED"]
        spent = sum(r.duration_s or 0.0 for r in screened)
        wave = f", the first wave of {room}" if first < room else ""
        wave += ", the best-scoring: the budget is faster than the unpruned model" if binds and chosen else ""
        self.log(f"screened {len(screened)} plans in {spent:.0f} s ({_scoring(screened)} within the budget and "
                 f"scored, {len(pool)} worth training: faster than the unpruned model, one per architecture); "
                 f"training {len(chosen)} of them{wave} (screened trials {', '.join(map(str, chosen)) or 'none'})")

    def pool(self, records: list[TrialRecord]) -> list:
        """The screened plans worth training, scored (ScreenedPlan: the screen's score at its
        latency; :func:`autoprune.screen.worth_training`): faster than the trained unpruned
        model (the baseline, and its unpruned warm starts), one per architecture, none of an
        architecture trained outside the screen's choice."""
        from autoprune.screen import ScreenedPlan, worth_training

        known = [r for r in records if not r.screen and r.screened_from is None and r.state == "COMPLETE"]
        scored = [ScreenedPlan(r.number, self.sign * r.screen_score, r.screen_latency_ms, _arch(r))
                  for r in records if r.screen and r.state == "PRUNED" and r.screen_score is not None]
        return worth_training(scored, {_arch(r) for r in known} - {""}, self.unpruned_ms(records))

    @staticmethod
    def unpruned_ms(records: list[TrialRecord]) -> float:
        """The fastest trained unpruned model's latency (the baseline, or its unpruned warm
        starts; inf: none trained). Only the unpruned model bounds what is worth training: a
        plan slower than a trained pruned one may be more accurate."""
        return min((r.latency_ms for r in records if not r.screen and r.screened_from is None
                    and r.state == "COMPLETE" and r.latency_ms
                    and (r.baseline or (r.warm_start or "").startswith("unpruned"))), default=math.inf)

    def trained(self, records: list[TrialRecord], first: Collection[int], pool: list) -> list:
        """The first wave's trained plans (screened trials ``first``): their trained metric at
        their screen latency (from ``pool``, :meth:`pool`'s), so both waves share one axis."""
        from autoprune.screen import ScreenedPlan

        latency = {s.key: s.latency_ms for s in pool}
        return [ScreenedPlan(r.screened_from, self.sign * r.accuracy, latency[r.screened_from]) for r in records
                if r.screened_from in first and not r.interrupted and r.state == "COMPLETE"
                and r.accuracy is not None and r.screened_from in latency]

    def _second_wave(self, study, target: int) -> str:
        """Once the first wave is trained, queue the rest of the screen's choice where its
        trained front is steepest (:func:`autoprune.screen.second_wave`); ``train`` while the
        first wave is queued, ``wait`` while another process trains it."""
        from autoprune.screen import second_wave

        records = storage.records(study)
        first = set(study.user_attrs[SCREEN_ATTR])
        wave = [r for r in records if r.screened_from in first and not r.interrupted]
        if any(r.state == "WAITING" for r in records if not r.screen):
            return "train"  # the first wave (or a retry) is queued: run it
        if any(r.state == "RUNNING" for r in wave) or len({r.screened_from for r in wave}) < len(first):
            return "wait"
        room = max(0, target - _pending(records))
        pool = self.pool(records)
        chosen = second_wave(pool, self.trained(records, first, pool), room, self.budget_ms, self.near, first)
        _queue_screened(study, records, chosen)
        study.set_user_attr(SCREEN_ATTR, [*study.user_attrs[SCREEN_ATTR], *chosen])
        study.set_user_attr(WAVE_ATTR, chosen)
        self.log(f"screen: the second wave trains {len(chosen)} more where the first wave's front is steepest "
                 f"(screened trials {', '.join(map(str, chosen)) or 'none'})")
        return "train"


def _screen_latency(study, number: int) -> float | None:
    """The screen's latency figure of screened trial ``number`` (None: not recorded)."""
    found = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    return found[0].user_attrs.get("screen_latency_ms") if found else None


def _arch(record: TrialRecord) -> str:
    """What a trial's latency depends on: its architecture and precision ("" unknown)."""
    return f"{record.arch_hash}:{record.precision or 'float32'}" if record.arch_hash else ""


def _queue_screened(study, records: list[TrialRecord], chosen: list[int]) -> None:
    """Queue the plans of the screened trials ``chosen`` for training, each naming its own."""
    from autoprune import trials

    by_number = {r.number: r for r in records}
    for number in chosen:
        trials.enqueue(study, by_number[number].params, screened_from=number)


def _scoring(screened: list[TrialRecord]) -> int:
    """The screened plans that count toward ``plans``: scored, or not finished yet (a plan
    timed over the budget, or one that failed, has no score and does not count)."""
    return sum(r.screen_score is not None or r.state in ("WAITING", "RUNNING") for r in screened)


def _pending(records: list[TrialRecord]) -> int:
    """Trained trials that count toward --trials, or are queued to."""
    return sum(r.counts or (r.state == "WAITING" and not r.screen) for r in records)


def run_trials(store, study, target: int, objective: Callable, after_trial: Callable | None = None,
               study_dir: Path | None = None, screening: Screening | None = None) -> int:
    """Run trials until the study holds ``target`` counted trials; return how many ran here.

    ``study_dir``: where trial folders are; an interrupted trial's half-written files
    there are removed when it is queued again. ``screening``: screen its plans first,
    then train the ones it chooses (queued trials, such as the baseline, run as they
    come).
    """
    import optuna

    from autoprune import trials

    ran = 0
    while True:
        with storage.study_lock(store, study.study_name):
            for dead in storage.fail_dead(store, study):
                if study_dir is not None:
                    shutil.rmtree(TrialFiles.of(study_dir, dead.number).dir, ignore_errors=True)
            phase = screening.phase(study, target) if screening is not None else "train"
            if phase == "screen":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    trial = screening.ask(store, study)
                trials.record_owner(trial, storage.OWNER)
            elif phase == "wait":  # others' screened plans are still running
                trial = None
            elif storage.counted(study) >= target:
                # Others' trials still running may yet die; stay until they finish so a
                # retry is run here rather than left for a later command.
                if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                    return ran
                trial = None
            else:
                with warnings.catch_warnings():  # "heartbeat is meant for optimize()": we beat ourselves
                    warnings.simplefilter("ignore", UserWarning)
                    trial = study.ask()
                trials.record_owner(trial, storage.OWNER)
        if trial is None:
            time.sleep(storage.HEARTBEAT_S)
            continue
        state, values = optuna.trial.TrialState.FAIL, None
        with storage.heartbeat(store, storage.trial_id(store, study, trial.number)):
            try:
                values = objective(trial)
                state = optuna.trial.TrialState.COMPLETE
            except TrialFailure:
                pass
            except optuna.TrialPruned:  # a screened plan: recorded, never trained
                state = optuna.trial.TrialState.PRUNED
            except BaseException:  # Ctrl-C, a full disk or a bug: the trial is retried, not lost
                # (if the database refuses even that, the next start finds the trial's owner dead)
                with contextlib.suppress(Exception):
                    storage.requeue(store, study, TrialRecord.of(trial), f"its worker {storage.OWNER} stopped")
                raise
        frozen = study.tell(trial, values, state=state)
        ran += 1
        if after_trial is not None:
            after_trial(study, frozen)


def staging_summary(df) -> str | None:
    """One line: how many fine-tunes staged evaluation skipped and the time it saved.

    Saved time is estimated per skipped trial as the median recovery time of the fully
    evaluated pruned trials minus what the skipped trial spent in recovery and screening.
    """
    if df.empty or "evaluation" not in df:
        return None
    done = df[(df["state"] == "COMPLETE") & ~df["baseline"].astype(bool)]
    full = done[done["evaluation"] == "full"]
    skipped = done[done["evaluation"].astype(str).str.startswith("zero-shot")]
    if skipped.empty or full.empty or "recover_s" not in df:
        return None
    screen = skipped["screen_s"].fillna(0) if "screen_s" in skipped else 0
    saved = (full["recover_s"].median() - skipped["recover_s"] - screen).clip(lower=0).sum()
    over = skipped["evaluation"].str.contains("over").sum()
    return (f"staged evaluation: {len(skipped)} of {len(done)} pruned candidates were not fine-tuned "
            f"({over} far over budget, {len(skipped) - over} dominated), saving about {saved:.0f} s")


@dataclass
class Session:
    """An opened search: the study in its storage, the trial context, the objective.

    ``search`` and ``worker`` open one and run it; a benchmark can run it a trial at a
    time (``session.run(storage.counted(session.study) + 1)``).
    """

    setup: _Setup
    ctx: Context
    store: Any  # the Optuna RDBStorage
    study: Any  # the optuna.Study
    log: Callable[[str], None] = print

    @property
    def study_dir(self) -> Path:
        return self.setup.study_dir

    def run(self, target: int, after_trial: Callable | None = None) -> int:
        """Run trials until the study holds ``target`` counted trials; return how many ran here."""
        return run_trials(self.store, self.study, target, _objective(self.setup, self.ctx, self.store), after_trial,
                          self.study_dir, self.screening)

    @property
    def screening(self) -> Screening | None:
        sc = self.ctx.space.space.screen
        if not sc.plans:
            return None
        return Screening(sc.plans, self.setup.config.latency_budget_ms, sc.near, self.setup.config.seed,
                         self.ctx.task.metric.info.sign, self.log, self.ctx.space, sc.waves)


def open_session(config: SearchConfig, *, worker: bool = False, store=None,
                 log: Callable[[str], None] = print) -> Session:
    """Set up, open the storage, prepare, and create or load the study (steps 1-4)."""
    import optuna

    setup = _set_up(config, worker=worker)  # checks names and files before the heavy imports below
    # Failed candidates are reported by autoprune with their stage; Optuna's own
    # warning for each would say the same thing again.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = config.storage or storage.default_url(setup.study_dir)
    task = _load_task(setup, log)
    setup = dataclasses.replace(setup, identity=_with_metric(setup.identity, task.metric.info))
    if setup.resuming and (setup.study_dir / "config.json").is_file():
        _check_study_dir(setup.study_dir, setup.identity, config.storage)  # now with the metric
    wanted = directions(len(setup.also), task.metric.info)
    # A new search's default SQLite file is created with the study folder, after the
    # set-up checks; any other storage is opened and vetted before anything is written.
    if store is None and (config.storage is not None or setup.resuming):
        store = storage.open_storage(url)
    if store is not None and (existing := storage.load(store, config.name)) is not None:
        kept = _recorded_budget(setup.config, storage.identity(existing))  # a --speedup study in this storage
        if kept.latency_budget_ms is not None and setup.config.latency_budget_ms is None:
            setup = _with_budget(setup, kept.latency_budget_ms)
        storage.vet(existing, setup.identity, wanted)
    setup, ctx = _prepare(setup, task, log)
    store = store or storage.open_storage(url)
    queue = [{"params": ctx.space.baseline_params(), "baseline": True}]
    if config.warm_start and ctx.space.space.screen.plans:
        # the unpruned model at each faster precision is trained (it needs no fine-tune);
        # the uniform ladder a user would try by hand is screened with the rest
        queue += [{"params": {**ctx.space.baseline_params(), "precision": p}, "warm_start": f"unpruned {p}"}
                  for p in ctx.space.precisions if p != "float32"]
        queue = queue[:config.n_trials]
        queue += [{"params": ctx.space.uniform_params(r / 10, precision=p), "screen": True}
                  for r in range(1, 10) for p in ctx.space.precisions][:ctx.space.space.screen.plans]
    elif config.warm_start:  # the plans a user would try by hand come next
        fast = ctx.space.fastest_precision
        if fast != "float32":  # the unpruned model quantized: what a user gets without pruning
            queue.append({"params": {**ctx.space.baseline_params(), "precision": fast},
                          "warm_start": f"unpruned {fast}"})
        label = "" if fast == "float32" else f" {fast}"
        queue += [{"params": ctx.space.uniform_params(r, precision=fast), "warm_start": f"uniform l1 {r}{label}"}
                  for r in WARM_START_RATIOS]
        queue = queue[:config.n_trials]  # a queued trial beyond the target would wait in the storage for ever
    study = storage.create(store, config.name, sampler=make_sampler(config.sampler, config.seed),
                           directions=wanted, wanted=setup.identity,
                           metric_names=[*OBJECTIVES, *(f"latency_ms@{d.name}" for d in setup.also)], queue=queue)
    if not worker:
        storage.set_run_info(study, {"target_trials": config.n_trials, "data_dir": config.data_dir,
                                     "max_drop": config.max_drop, "min_metric": config.min_metric,
                                     "final_members": config.final_members, "finalize": config.finalize,
                                     "artifacts": config.artifacts or storage.run_info(study).get("artifacts")})
    return Session(setup, ctx, store, study, log)


def _artifacts_url(url: str | None) -> str | None:
    """An artifact store URL as recorded for other processes: a folder made absolute."""
    if not url or "://" in url:
        return url
    return str(Path(url).expanduser().resolve())


def _publish(study, store, study_dir: Path, numbers: list[int] | None, log: Callable[[str], None]) -> None:
    """Upload the files of the completed trials ``numbers`` (None: every one) that are in
    ``study_dir`` and not yet in the store. A failed upload is said, not fatal: the
    files stay here, and the next run of this folder tries again."""
    import optuna

    from autoprune.artifacts import FILES_ATTR, TRIAL_FILES, publish_or_say

    indexed = {key for key in study.user_attrs if key.startswith(FILES_ATTR)}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if (numbers is not None and t.number not in numbers) or f"{FILES_ATTR}{t.number}" in indexed:
            continue
        files = TrialFiles.of(study_dir, t.number)
        if not files.plan.is_file():
            continue  # another process's trial
        publish_or_say(study, store, str(t.number), files.dir, TRIAL_FILES, log)


def _execute(config: SearchConfig, *, target: int, worker: bool, progress: bool, store=None) -> SearchResult:
    """Open a session, run this process's share of the trials, write the results."""
    from autoprune import results
    from autoprune.artifacts import open_store
    from autoprune.progress import SearchProgress

    # a bad URL stops here, before anything is written
    artifact_store = open_store(config.artifacts, create=True) if config.artifacts else None
    train = accelerator.TrainDevice(config.train_device, config.amp)
    accelerator.use(train)  # this process and those it starts (DataLoader workers)
    with SearchProgress(enabled=progress) as bar:
        if not train.on_cpu:
            bar.log(f"training on {train.describe()}; latency is measured on {config.device}")
        session = open_session(config, worker=worker, store=store, log=bar.log)
        config = session.setup.config  # with the budget a --speedup search measured
        bar.metric = session.ctx.task.metric.info
        bar.screen_total = session.ctx.space.space.screen.plans
        done = storage.finished(session.study)
        if done:
            bar.log(f"study {config.name!r}: {done} trial(s) already finished, {max(0, target - done)} to go")
        bar.start(total=target, done=done)

        url = config.artifacts or storage.run_info(session.study).get("artifacts")  # a resumed search's too
        if artifact_store is None and url:
            artifact_store = open_store(url, create=True)

        def after_trial(study, trial) -> None:
            bar.advance(TrialRecord.of(trial), config.latency_budget_ms)
            sys.audit("autoprune.results", trial.number)
            results.write_trials(study, session.study_dir)
            if artifact_store is not None:
                _publish(study, artifact_store, session.study_dir, [trial.number], bar.log)

        session.run(target, after_trial)
        if artifact_store is not None:  # what a killed run of this folder left unpublished
            _publish(session.study, artifact_store, session.study_dir, None, bar.log)
        saved = staging_summary(results.trials_frame(session.study))
        if saved:
            bar.log(saved)
        result = results.SearchResult.load(session.study_dir, storage=config.storage)
        result.write_all()  # the search-time results are saved before finalize starts
        # every process finalizes (a search and its workers): members are claimed through
        # the storage, each finalized once, and each process waits for the others' members
        if config.finalize and storage.finished(session.study) >= target:
            if result.front.empty or result.baseline is None:
                bar.log("finalize skipped: no feasible front member or no baseline yet")
            else:
                from autoprune.finalize import finalize

                bar.log("finalizing the front: full fine-tune, whole validation set, paired re-timing "
                        "(--no-finalize skips this)")
                finalize(session.study_dir, members=config.final_members, log=bar.log, storage=config.storage,
                         retry_failed=False, artifacts=url)
                result = results.SearchResult.load(session.study_dir, storage=config.storage)
                result.write_all()
    return result


def search(
    *,
    task: str | Task,
    device: str,
    latency_budget_ms: float | None = None,
    n_trials: int,
    space: str = "default",
    study_name: str | None = None,
    results_dir: str | Path = "results",
    storage: str | None = None,
    seed: int = 0,
    data_dir: str | Path | None = None,
    progress: bool = True,
    sampler: str = "tpe",
    warm_start: bool = True,
    also: dict[str, float | None] | None = None,
    finalize: bool = True,
    final_members: int | None = None,
    max_drop: float = 1.0,
    min_metric: float | None = None,
    setup_timeout_s: float | None = SETUP_TIMEOUT_S,
    setup_memory_gb: float | None = None,
    precisions: list[str] | tuple[str, ...] | None = None,
    screen_plans: int | None = None,
    task_args: dict[str, Any] | None = None,
    workers: int | None = None,
    artifacts: str | None = None,
    train_device: str = "auto",
    amp: str = "auto",
    speedup: float | None = None,
) -> SearchResult:
    """Run (or resume) a search and return its :class:`~autoprune.results.SearchResult`.

    ``task`` is a built-in name, ``package.module:factory`` (called with ``task_args``
    as keyword arguments), or a :class:`~autoprune.tasks.Task` object (its ``name``
    names the study; finalize and export in this process use the object).
    ``workers``: processes loading a task's ``Dataset`` splits (default: the cores less
    one, at most 4).

    ``n_trials`` is the total the study should hold, baseline included: running the same
    call again after an interruption finishes the remaining trials only. ``also`` names
    more device profiles to time every candidate on, each with its own budget (or None):
    ``also={"rpi4-ort": 40.0}``. Their latencies are objectives too, so the front holds
    the models that are best on any device.

    The budget on ``device`` is ``latency_budget_ms``, or ``speedup`` (one of the two):
    the unpruned model's latency on the device, measured when the study starts, divided
    by it (``speedup=8``: a model at least 8 times faster). The study records the budget
    it measured, and resuming keeps it, so it carries across devices without being re-set.

    With ``finalize`` (the default) the search ends by fine-tuning the front's most
    accurate feasible members to the space's ``final_steps``, scoring them on the whole
    validation set and timing them again paired with the baseline (at most
    ``final_members`` of them; default: the space's ``recovery.final_members``)
    (:func:`autoprune.finalize.finalize`); the result's front shows those final figures.
    ``result.recommend()`` names the fastest model within ``max_drop`` accuracy points
    and the most accurate within the budget. ``min_metric`` (default: the baseline's
    accuracy less 10 points) hides lower candidates from the front and plots.
    ``setup_timeout_s`` and ``setup_memory_gb`` bound tracing the model before trial 0
    (default: 60 s, half the memory available). ``precisions`` (e.g. ``["float32",
    "int8"]``) overrides the space's precision choices; only those the device profile
    supports are offered. ``screen_plans`` overrides the space's ``screen.plans``: how
    many plans are screened cheaply before the best ``n_trials`` are trained (0: none).
    ``train_device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) is where recovery,
    distillation, batch-norm re-estimation, gradients and scoring run (``auto``: CUDA
    when torch sees it); ``amp`` (``auto``, ``bf16``, ``fp16``, ``off``) its mixed
    precision (``auto``: bf16 on CUDA where supported, off on the CPU). Latency is
    measured by the device profile either way.

    Raises:
        AutopruneError: a set-up problem (unknown names, bad files, unreachable budget,
            a results directory holding another study). Candidate failures never raise.
    """
    if not isinstance(task, str):
        from autoprune.tasks import Task
        from autoprune.tasks._loader import remember

        if not isinstance(task, Task):
            raise TaskError(f"task must be a task name or an autoprune.tasks.Task, got {type(task).__name__}.")
        task = remember(task)
    if latency_budget_ms is not None and speedup is not None:
        raise ConfigError("give the latency budget once: --latency-budget-ms MS or --speedup X, not both.")
    train = accelerator.resolve(train_device, amp)
    config = SearchConfig(
        task=task,
        device=device,
        latency_budget_ms=None if latency_budget_ms is None else float(latency_budget_ms),
        n_trials=int(n_trials),
        space=space,
        study_name=study_name,
        results_dir=str(results_dir),
        storage=storage,
        seed=seed,
        data_dir=None if data_dir is None else str(data_dir),
        sampler=sampler,
        warm_start=warm_start,
        also=tuple((name, None if b is None else float(b)) for name, b in (also or {}).items()),
        finalize=finalize,
        final_members=final_members,
        max_drop=float(max_drop),
        min_metric=None if min_metric is None else float(min_metric),
        setup_timeout_s=setup_timeout_s,
        setup_memory_gb=setup_memory_gb,
        precisions=None if precisions is None else tuple(precisions),
        screen_plans=screen_plans if screen_plans is not None else screen_plans_default(),
        task_args=tuple(sorted((task_args or {}).items())),
        workers=workers,
        artifacts=_artifacts_url(artifacts),
        train_device=train.device,
        amp=train.amp,
        speedup=None if speedup is None else float(speedup),
    )
    return _execute(config, target=config.n_trials, worker=False, progress=progress)


def join(
    *,
    storage: str,
    study_name: str,
    results_dir: str | Path = "results",
    n_trials: int | None = None,
    data_dir: str | Path | None = None,
    progress: bool = True,
    setup_timeout_s: float | None = SETUP_TIMEOUT_S,
    setup_memory_gb: float | None = None,
    finalize: bool = True,
    artifacts: str | None = None,
    train_device: str = "auto",
    amp: str = "auto",
) -> SearchResult:
    """Join a running study as a worker: run its trials until it holds its target, then
    finalize, with the other processes, the front members whose trial files are here
    (``finalize=False``: leave that to the others).

    The study's task, device profile, space and budget come from the storage; this
    machine must have the same device profile (by hash: latencies must be comparable)
    and search space. Trial files go to ``results_dir/<study>/trials/`` here.
    ``train_device`` and ``amp``: as :func:`search`'s, for this process.

    Raises:
        StudyError: no such study in the storage, or it was not created by autoprune.
        AutopruneError: this machine's profile or space differs from the study's.
    """
    import optuna

    from autoprune import storage as storage_mod

    train = accelerator.resolve(train_device, amp)  # before the storage: a typo costs nothing
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    store = storage_mod.open_storage(storage)
    existing = storage_mod.load(store, study_name)
    if existing is None:
        names = storage_mod.study_names(store)
        raise StudyError(
            f"storage {storage_mod.without_password(storage)!r} has no study {study_name!r} "
            f"(it has: {', '.join(names) or 'none'}). "
            "Start it first with `autoprune search ... --storage URL --study NAME`."
        )
    identity = storage_mod.identity(existing)
    if identity is None:
        raise StudyError(f"study {study_name!r} in {storage_mod.without_password(storage)!r} was not created by "
                         "autoprune.")
    run = storage_mod.run_info(existing)
    target = int(n_trials if n_trials is not None else run.get("target_trials", 0))
    if data_dir is None:
        data_dir = run.get("data_dir")
    config = SearchConfig(
        task=identity["task"], device=identity["device"], latency_budget_ms=identity["latency_budget_ms"],
        n_trials=max(1, target), space=identity["space"], study_name=study_name, results_dir=str(results_dir),
        storage=storage, seed=identity["seed"], data_dir=None if data_dir is None else str(data_dir),
        sampler=identity.get("sampler", "tpe"),
        also=tuple((given, budget) for _, _, budget, given in identity.get("also", [])),
        precisions=tuple(identity["precisions"]) if identity.get("precisions") else None,
        screen_plans=identity.get("screen_plans"),
        speedup=identity.get("speedup"),
        task_args=tuple(sorted(identity.get("task_args", {}).items())),
        setup_timeout_s=setup_timeout_s, setup_memory_gb=setup_memory_gb,
        finalize=finalize and bool(run.get("finalize", True)),  # a search run with --no-finalize: none of its workers
        final_members=run.get("final_members"),  # the search's: every process chooses the same members
        artifacts=_artifacts_url(artifacts) or run.get("artifacts"),
        train_device=train.device,
        amp=train.amp,
    )
    return _execute(config, target=target, worker=True, progress=progress, store=store)
