"""The Optuna study: objectives, the latency constraint, storage, resume.

Objectives are accuracy (maximise), latency_ms (minimise) and size_mb (minimise). The
latency budget is a constraint (``Trial.set_constraint``): infeasible trials are kept and
ranked behind feasible ones. Trial 0 is the unpruned model, the baseline.

Example:
    >>> import autoprune
    >>> result = autoprune.search(task="digits", device="x86-ort",
    ...                           latency_budget_ms=0.05, n_trials=8)
    >>> result.front[["trial", "accuracy", "latency_ms"]]
"""

from __future__ import annotations

import json
import re
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from autoprune._config import atomic_write_text
from autoprune.errors import BudgetError, ConfigError, StudyError

CONFIG_SCHEMA = "autoprune.study/1"
DIRECTIONS = ("maximize", "minimize", "minimize")
OBJECTIVES = ("accuracy", "latency_ms", "size_mb")
LOST_DEVICE = "was lost during the session"  # runners.rpc's reason when the board itself went away
WARM_START_RATIOS = (0.5, 0.3)
SAMPLERS = ("tpe", "nsga2", "gp", "random")


@dataclass(frozen=True)
class SearchConfig:
    """What a search is; two runs with the same identity are the same study."""

    task: str
    device: str
    latency_budget_ms: float
    n_trials: int
    space: str = "default"
    study_name: str | None = None
    results_dir: str = "results"
    storage: str | None = None
    seed: int = 0
    data_dir: str | None = None
    sampler: str = "tpe"
    warm_start: bool = True  # enqueue the uniform plans users try by hand
    # More devices, each timed for every candidate: (profile, budget ms or None). Their
    # latencies are extra objectives; a budget also makes them a per-device constraint.
    also: tuple[tuple[str, float | None], ...] = ()

    def __post_init__(self) -> None:
        names = [self.device, *(name for name, _ in self.also)]
        if len(set(names)) != len(names):
            raise ConfigError(f"a device is named twice ({', '.join(names)}); name each once.")
        for name, budget in self.also:
            if budget is not None and not budget > 0:
                raise ConfigError(f"the latency budget for {name} must be a positive number of ms, got {budget}.")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}.")
        if not self.latency_budget_ms > 0:
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


def default_storage(study_dir: Path) -> str:
    return f"sqlite:///{study_dir.resolve() / 'study.db'}"


def directions(n_also: int) -> list[str]:
    """accuracy, latency, size, then one latency per additional device."""
    return [*DIRECTIONS, *("minimize",) * n_also]


def _identity(config: SearchConfig, profile, space, also=()) -> dict[str, Any]:
    # [profile name (its columns are latency_ms@name), profile hash, budget, as given (name or path)]
    extra = {"also": [[d.name, d.profile.hash, d.budget_ms, given]
                      for d, (given, _) in zip(also, config.also, strict=True)]} if also else {}
    return {
        "schema": CONFIG_SCHEMA,
        "study": config.name,
        "task": config.task,
        "device": config.device,
        "profile_hash": profile.hash,
        "space": config.space,
        "space_hash": space.hash,
        "latency_budget_ms": config.latency_budget_ms,
        "seed": config.seed,
        "sampler": config.sampler,
        **extra,  # absent for one device, so older studies keep their identity
    }


def _check_study_dir(study_dir: Path, identity: dict[str, Any]) -> bool:
    """Return True if resuming; refuse a folder that holds anything else."""
    cfg = study_dir / "config.json"
    if cfg.is_file():
        try:
            old = json.loads(cfg.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StudyError(f"{cfg} is unreadable ({exc}); move the folder away or pick another --study.") from None
        if any(old.get(k) != v for k, v in identity.items()):
            raise StudyError(
                f"{study_dir} holds a different study ({_diff(old, identity)}). Nothing was changed. "
                "Use another --study NAME or --results-dir, or the original settings to resume."
            )
        return True
    if study_dir.exists() and any(study_dir.iterdir()):
        raise StudyError(
            f"{study_dir} exists and is not an autoprune study (no config.json). Nothing was "
            "changed. Choose another --study NAME or --results-dir."
        )
    return False


class _Searcher:
    """Builds everything once, then runs trials. Kept private: use :func:`search`."""

    def __init__(self, config: SearchConfig, worker: bool = False) -> None:
        from autoprune import backends, runners
        from autoprune.profiles import load_profile
        from autoprune.space import load_space

        from autoprune.tasks._loader import check_task_spec

        self.config = config
        check_task_spec(config.task)
        self.profile = load_profile(config.device)
        self.space = load_space(config.space)
        self.backend = backends.create(self.profile.backend)
        self.backend.check_available(self.profile)
        self.runner = runners.create(self.profile.runner)
        self.runner.check_available(self.profile)
        from autoprune.objective import OtherDevice

        self.also = []
        for name, budget in config.also:
            profile = load_profile(name)
            device = OtherDevice(profile.name, profile, backends.create(profile.backend),
                                 runners.create(profile.runner), budget)
            device.backend.check_available(profile)
            device.runner.check_available(profile)
            self.also.append(device)
        self.identity = _identity(config, self.profile, self.space, self.also)
        self.study_dir = config.study_dir
        self.worker = worker
        if worker:  # the study exists in the storage: nothing to measure first
            self.resuming = True
            if (self.study_dir / "config.json").is_file():
                _check_study_dir(self.study_dir, self.identity)
        elif config.storage is None:
            self.resuming = _check_study_dir(self.study_dir, self.identity)
        else:
            self.resuming = (self.study_dir / "config.json").is_file() and _check_study_dir(
                self.study_dir, self.identity
            )
        _check_writable(Path(config.results_dir))

    def prepare(self, log: Callable[[str], None]) -> None:
        from autoprune.measure import MeasurementCache
        from autoprune.objective import Context
        from autoprune.space import resolve
        from autoprune.tasks import load_task

        self.task = load_task(self.config.task, self.config.data_dir)
        resolved = resolve(self.space, self.task.model, self.task.example_input(1), self.task.ignored_layers)
        if not resolved.groups:
            raise ConfigError(
                f"search space {self.config.space!r} leaves no prunable group in task "
                f"{self.task.name!r}; check its rules (`autoprune groups --task {self.config.task}`)."
            )
        self.ctx = Context(self.task, self.profile, resolved, self.backend, self.runner, None, self.config.seed,
                           also=self.also)
        if not self.resuming:
            self._preflight(log)
        # config.json first: a folder holding it is a study that the same command resumes.
        record = dict(self.identity, storage=self.config.storage, data_dir=self.config.data_dir)  # not identity
        atomic_write_text(self.study_dir / "config.json", json.dumps(record, indent=2) + "\n")
        if self.profile.measurement.cache:
            self.ctx.cache = MeasurementCache(self.study_dir / "measurements.json")
            for key, m in getattr(self, "_preflight_measurements", {}).items():
                self.ctx.cache.put(key, m)
            self.ctx.cache.flush()

    def _preflight(self, log: Callable[[str], None]) -> None:
        """Measure the unpruned and the most-pruned model; refuse an unreachable budget."""
        from autoprune.export import to_onnx
        from autoprune.measure import MeasurementCache
        from autoprune.objective import TrialFailure, measure_onnx, prune
        from autoprune.pruning import PruningPlan

        log("measuring the unpruned and the most-pruned model to check the budget")
        found = {}
        with tempfile.TemporaryDirectory(prefix="autoprune-preflight-") as tmp:
            for label, plan in (("unpruned", PruningPlan()), ("smallest", self.ctx.space.smallest_plan())):
                try:
                    model, _ = prune(self.ctx, plan, self.config.seed)
                    path = Path(tmp) / f"{label}.onnx"
                    onnx = to_onnx(model, self.ctx.example_input, path, self.space.parity_atol)
                    m, _ = measure_onnx(self.ctx, onnx, Path(tmp), {})
                except (TrialFailure, RuntimeError, ValueError) as exc:
                    if label == "unpruned":
                        raise StudyError(
                            f"the unpruned {self.task.name} model cannot be exported and timed on "
                            f"{self.profile.name}: {exc}"
                        ) from None
                    log(f"[yellow]the most-pruned model failed ({exc}); budget not checked[/]")
                    continue
                found[label] = (onnx, m)
        self._preflight_measurements = {
            MeasurementCache.key(o.arch_hash, self.backend.name, self.profile.hash): m for o, m in found.values()
        }
        if "smallest" not in found:
            return
        base, small = found["unpruned"][1].median_ms, found["smallest"][1]
        log(f"unpruned {base:.3f} ms, most-pruned {small.median_ms:.3f} ms, "
            f"budget {self.config.latency_budget_ms:g} ms")
        # Refuse only what is out of reach beyond doubt: below the fastest single run of
        # the smallest model (medians drift between measurements on a shared machine).
        if self.config.latency_budget_ms < small.min_ms:
            raise BudgetError(
                f"latency budget {self.config.latency_budget_ms:g} ms is below what any candidate can "
                f"reach on {self.profile.name}: the unpruned model takes {base:.3f} ms and the most "
                f"pruned one the space allows takes {small.median_ms:.3f} ms (fastest run "
                f"{small.min_ms:.3f} ms). Raise --latency-budget-ms to at least {small.median_ms:.3f}, "
                "or widen the space's ratio range."
            )

    def check_storage(self) -> None:
        """Open the storage and vet an existing study of this name, before anything is written."""
        import optuna

        # Failed candidates are reported by autoprune with their stage; Optuna's own
        # warning for each would say the same thing again.
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        storage_url = self.config.storage or default_storage(self.study_dir)
        if self.config.storage is None and not self.resuming:
            self.storage_obj = None  # created with the study folder, after the set-up checks
            return
        self.storage_obj = _open_storage(storage_url)
        try:
            existing = optuna.load_study(study_name=self.config.name, storage=self.storage_obj)
        except KeyError:
            return
        self._vet_existing(existing)

    def _vet_existing(self, study) -> None:
        old = study.user_attrs.get("autoprune")
        if old is not None and old != self.identity:
            raise StudyError(
                f"storage study {self.config.name!r} was created with different settings "
                f"({_diff(old, self.identity)}). Use another --study NAME."
            )
        if old is None and study.trials:
            raise StudyError(
                f"storage study {self.config.name!r} already has trials that autoprune did not "
                "create. Use another --study NAME."
            )
        wanted = directions(len(self.also))
        if [d.name.lower() for d in study.directions] != wanted:
            raise StudyError(
                f"storage study {self.config.name!r} cannot be used: it has directions "
                f"{[d.name.lower() for d in study.directions]}, autoprune needs {wanted}. "
                "Use another --study NAME."
            )

    def open_study(self):
        import optuna

        storage_url = self.config.storage or default_storage(self.study_dir)
        storage = self.storage_obj or _open_storage(storage_url)
        sampler = make_sampler(self.config.sampler, self.config.seed)
        study = optuna.create_study(
            storage=storage,
            sampler=sampler,
            study_name=self.config.name,
            directions=directions(len(self.also)),
            load_if_exists=True,
        )
        self._vet_existing(study)
        if study.user_attrs.get("autoprune") is None:
            study.set_user_attr("autoprune", self.identity)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([*OBJECTIVES, *(f"latency_ms@{d.name}" for d in self.also)])
            study.enqueue_trial(self.ctx.space.baseline_params(), user_attrs={"baseline": True})
            # Warm start: the uniform plans a user would try by hand come next, so the
            # search starts from (and has to beat) them.
            for ratio in WARM_START_RATIOS if self.config.warm_start else ():
                study.enqueue_trial(self.ctx.space.uniform_params(ratio), user_attrs={"warm_start": f"uniform l1 {ratio}"})
        self.study = study
        return study

    def _stager(self):
        """The staging judge, from the trials finished so far (by any worker)."""
        import optuna

        from autoprune.objective import Stager

        cfg = self.space.staging
        stager = Stager(self.config.latency_budget_ms, cfg.over_budget_factor, cfg.min_observations, cfg.margin)
        for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            a = t.user_attrs
            if a.get("latency_ms") is None or a.get("accuracy") is None:
                continue
            # with more devices a slower candidate here may be faster there: no dominance skip
            if a["latency_ms"] <= self.config.latency_budget_ms and not self.also:
                stager.front.append((a["latency_ms"], a["accuracy"]))
            if a.get("evaluation") == "full" and a.get("zero_shot_accuracy") is not None:
                stager.gains.append(a["accuracy"] - a["zero_shot_accuracy"])
        return stager

    def objective(self, trial) -> tuple[float, ...]:
        from autoprune.objective import TrialFailure, candidate_attrs, run_candidate

        plan = self.ctx.space.suggest(trial)
        trial.set_user_attr("plan", plan.to_dict())
        self.ctx.stager = self._stager() if self.space.staging.enabled else None
        trial_dir = self.study_dir / "trials" / str(trial.number)
        try:
            cand = run_candidate(self.ctx, plan, trial_dir, self.config.seed + trial.number, trial.number)
        except TrialFailure as exc:
            trial.set_user_attr("fail_stage", exc.stage)
            trial.set_user_attr("fail_reason", exc.reason[:2000])
            if LOST_DEVICE in exc.reason and "retry_of" not in trial.user_attrs:
                # The board died, not the candidate: the trial stays failed with its reason,
                # but like a dead worker's it is not counted and its plan runs once more
                # (otherwise a board lost during trial 0 would cost the study its baseline).
                from autoprune.workers import KEEP_ON_RETRY

                trial.set_user_attr("fail_stage", "interrupted")
                keep = {k: v for k, v in trial.user_attrs.items() if k in KEEP_ON_RETRY}
                trial.study.enqueue_trial(trial.params, user_attrs=dict(keep, retry_of=trial.number),
                                          skip_if_exists=False)
            raise
        for k, v in candidate_attrs(cand).items():
            trial.set_user_attr(k, v)
        # Feasible when <= 0. Optuna ranks infeasible trials behind feasible ones but
        # keeps them (Trial.set_constraint replaced the sampler's constraints_func in 5.0).
        trial.set_constraint("latency_budget", cand.latency.median_ms - self.config.latency_budget_ms)
        if self.ctx.space.space.constraints.any:  # only the unpruned reference gets here over a cap
            trial.set_constraint("space_caps", 1.0 if cand.violation else 0.0)
        for device in self.also:
            if device.budget_ms is not None:
                trial.set_constraint(f"latency_budget@{device.name}",
                                     cand.also[device.name].median_ms - device.budget_ms)
        return (cand.accuracy, cand.latency.median_ms, cand.size_mb,
                *(cand.also[d.name].median_ms for d in self.also))


def _open_storage(url: str):
    from autoprune.workers import open_storage

    try:
        return open_storage(url)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy/driver errors vary by backend
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StudyError(
            f"cannot open storage {url!r}: {first}. Check the URL; a damaged "
            "study.db can be moved away to start over (its trials are then lost)."
        ) from None


def _diff(a: dict, b: dict) -> str:
    return "; ".join(f"{k}: {a.get(k)!r} there, {b.get(k)!r} now" for k in b if a.get(k) != b.get(k))


def _check_writable(folder: Path) -> None:
    import os

    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"results directory {folder} is not writable (checked {probe}).")


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


def finished_count(study) -> int:
    """Trials that count toward --trials: complete, or failed because of the candidate."""
    import optuna

    n = 0
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.COMPLETE:
            n += 1
        elif t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("fail_stage") != "interrupted":
            n += 1
    return n


def search(
    *,
    task: str,
    device: str,
    latency_budget_ms: float,
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
):
    """Run (or resume) a search and return its :class:`~autoprune.results.SearchResult`.

    ``n_trials`` is the total the study should hold, baseline included: running the same
    call again after an interruption finishes the remaining trials only. ``also`` names
    more device profiles to time every candidate on, each with its own budget (or None):
    ``also={"rpi4-ort": 40.0}``. Their latencies are objectives too, so the front holds
    the models that are best on any device.

    Raises:
        AutopruneError: a set-up problem (unknown names, bad files, unreachable budget,
            a results directory holding another study). Candidate failures never raise.
    """
    config = SearchConfig(
        task=task,
        device=device,
        latency_budget_ms=float(latency_budget_ms),
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
    )
    searcher = _Searcher(config)  # checks names and files before the heavy imports below
    searcher.check_storage()

    from autoprune import results as results_mod
    from autoprune.progress import SearchProgress

    with SearchProgress(enabled=progress) as bar:
        searcher.prepare(bar.log)
        study = searcher.open_study()
        study.set_user_attr("autoprune_run", {"target_trials": config.n_trials, "data_dir": config.data_dir})
        _run(searcher, study, config.n_trials, bar)
    result = results_mod.SearchResult.load(searcher.study_dir, storage=config.storage)
    result.write_all()
    return result


def _run(searcher: _Searcher, study, target: int, bar) -> None:
    """Run this process's share of the trials (shared by ``search`` and ``join``)."""
    from autoprune import results as results_mod
    from autoprune.objective import TrialFailure
    from autoprune.testing import faults
    from autoprune.workers import run_trials

    done = finished_count(study)
    if done:
        bar.log(f"study {searcher.config.name!r}: {done} trial(s) already finished, "
                f"{max(0, target - done)} to go")
    bar.start(total=target, done=done)

    def after_trial(study, trial) -> None:
        bar.advance(trial, searcher.config.latency_budget_ms)
        faults.inject("results", trial.number)
        results_mod.write_trials(study, searcher.study_dir)

    run_trials(study, target, searcher.objective, TrialFailure, after_trial)
    saved = staging_summary(results_mod.trials_frame(study))
    if saved:
        bar.log(saved)


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


def join(
    *,
    storage: str,
    study_name: str,
    results_dir: str | Path = "results",
    n_trials: int | None = None,
    data_dir: str | Path | None = None,
    progress: bool = True,
):
    """Join a running study as a worker: run its trials until it holds its target.

    The study's task, device profile, space and budget come from the storage; this
    machine must have the same device profile (by hash: latencies must be comparable)
    and search space. Trial files go to ``results_dir/<study>/trials/`` here.

    Raises:
        StudyError: no such study in the storage, or it was not created by autoprune.
        AutopruneError: this machine's profile or space differs from the study's.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    store = _open_storage(storage)
    try:
        existing = optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        names = optuna.get_all_study_names(storage=store)
        raise StudyError(
            f"storage {storage!r} has no study {study_name!r} (it has: {', '.join(names) or 'none'}). "
            "Start it first with `autoprune search ... --storage URL --study NAME`."
        ) from None
    identity = existing.user_attrs.get("autoprune")
    run = existing.user_attrs.get("autoprune_run") or {}
    if identity is None:
        raise StudyError(f"study {study_name!r} in {storage!r} was not created by autoprune.")
    target = int(n_trials if n_trials is not None else run.get("target_trials", 0))
    if data_dir is None:
        data_dir = run.get("data_dir")
    config = SearchConfig(
        task=identity["task"], device=identity["device"], latency_budget_ms=identity["latency_budget_ms"],
        n_trials=max(1, target), space=identity["space"], study_name=study_name, results_dir=str(results_dir),
        storage=storage, seed=identity["seed"], data_dir=None if data_dir is None else str(data_dir),
        sampler=identity.get("sampler", "tpe"),
        also=tuple((given, budget) for _, _, budget, given in identity.get("also", [])),
    )
    searcher = _Searcher(config, worker=True)
    searcher.storage_obj = store
    searcher._vet_existing(existing)  # this machine's profile and space hash must match

    from autoprune import results as results_mod
    from autoprune.progress import SearchProgress

    with SearchProgress(enabled=progress) as bar:
        searcher.prepare(bar.log)
        study = searcher.open_study()
        _run(searcher, study, target, bar)
    result = results_mod.SearchResult.load(searcher.study_dir, storage=storage)
    result.write_all()
    return result
