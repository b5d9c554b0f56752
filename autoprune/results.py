"""Results of a study under ``results/<study>/``: tables, plots, and the result object.

Files (all written atomically, so a kill never leaves a truncated one):
``trials.csv`` one row per trial; ``pareto.csv`` the front; ``pareto.png`` and
``pareto.html`` accuracy against latency with the budget and baseline marked.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from autoprune import storage as storage_mod
from autoprune._config import atomic_write_text
from autoprune.errors import ExportError, StudyError
from autoprune.evaluate import MetricInfo
from autoprune.plots import pareto_plots
from autoprune.storage import default_url
from autoprune.trials import TrialFiles, TrialRecord

FRONT_COLUMNS = [
    "trial", "accuracy", "accuracy_drop", "latency_ms", "latency_p90_ms", "speedup",
    "size_mb", "macs_ratio", "params", "sparsity", "precision", "round_to", "methods", "fidelity",
]
DEFAULT_MAX_DROP = 1.0  # accuracy points: the recommended pick's allowance
DEFAULT_SHOWN_DROP = 10.0  # candidates further below the baseline leave the shown front and plots


def trials_frame(study, records: list[TrialRecord] | None = None) -> pd.DataFrame:
    """One row per trial: parameters, metrics, latency statistics, state, failure reason."""
    identity = storage_mod.identity(study) or {}
    budget = identity.get("latency_budget_ms", math.inf)
    sign = MetricInfo.of(identity.get("metric")).sign
    rows = [_row(r) for r in (records if records is not None else storage_mod.records(study))]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    # zero weights count for size (they compress) but never for dense-kernel latency
    df["sparsity"] = 1 - pd.to_numeric(df["nonzero_params"]) / pd.to_numeric(df["params"])
    base = df[(df["baseline"]) & (df["state"] == "COMPLETE")]
    if not base.empty:
        b = base.iloc[0]
        df["accuracy_drop"] = sign * (b["accuracy"] - df["accuracy"])  # in the metric's direction
        df["speedup"] = b["latency_ms"] / df["latency_ms"]
        df["macs_ratio"] = df["macs"] / b["macs"]
    else:
        df["accuracy_drop"] = df["speedup"] = df["macs_ratio"] = float("nan")
    df["fidelity"] = [_fidelity(r) for r in rows]
    df["feasible"] = (df["state"] == "COMPLETE") & (df["latency_ms"] <= budget)
    for name, _, other_budget, *_ in identity.get("also", []):
        column = f"latency_ms@{name}"
        if column not in df:
            df[column] = float("nan")
        if not base.empty:
            df[f"speedup@{name}"] = base.iloc[0][column] / df[column]
        if other_budget is not None:
            df["feasible"] &= df[column] <= other_budget
    return df


def _row(r: TrialRecord) -> dict[str, Any]:
    plan = r.plan or {}
    row: dict[str, Any] = {
        "trial": r.number,
        "state": r.state,
        "baseline": r.baseline,
        "warm_start": r.warm_start,
        "accuracy": r.accuracy,
        "latency_ms": r.latency_ms,
        "latency_p90_ms": r.latency_p90_ms,
        "latency_ci_low_ms": r.latency_ci_low_ms,
        "latency_ci_high_ms": r.latency_ci_high_ms,
        "latency_cv": r.latency_cv,
        "latency_runs": r.latency_runs,
        "latency_noisy": r.latency_noisy,
        "latency_sessions": r.latency_sessions,
        "latency_session_spread": r.latency_session_spread,
        "latency_cached": r.latency_cached,
        # every timing round's median where a figure far slower than the screen's was taken again
        "latency_rounds": " ".join(f"{ms:.4g}" for ms in r.latency_rounds) if r.latency_rounds else None,
        "size_mb": r.size_mb,
        "macs": r.macs,
        "params": r.params_count,
        "nonzero_params": r.nonzero_params,
        "onnx_bytes": r.onnx_bytes,
        "gzip_bytes": r.gzip_bytes,
        "methods": _method_counts(r.plan),
        "evaluation": r.evaluation,
        "zero_shot_accuracy": r.zero_shot_accuracy,
        "finetune_steps": r.finetune_steps,
        "eval_samples": r.eval_samples,
        "promotion": r.promotion,
        # the screen: a screened plan (state PRUNED) is never trained; a trained one names its screen
        "screen": r.screen,
        "screened_from": r.screened_from,
        "screen_score": r.screen_score,
        "screen_latency_ms": r.screen_latency_ms,
        "screen_note": r.screen_note,
        "dropped_blocks": " ".join(plan.get("drop_blocks", [])),
        "parity_max_abs_diff": r.parity_max_abs_diff,
        "round_to": plan.get("round_to"),
        "precision": (r.precision or "float32") if r.complete else plan.get("precision", "float32"),
        "float_accuracy": r.float_accuracy,  # a quantized candidate's float model (``accuracy`` is its own)
        "calibration": (r.quantization or {}).get("calibration"),
        "fail_stage": r.fail_stage.value if r.fail_stage else None,
        "fail_reason": r.fail_reason,
        "duration_s": r.duration_s,
        "load_avg": r.load_avg,
    }
    # what the backend reported (TVM tuning, reuse, compile time), each other device's latency
    row.update({f"build_{k}": v for k, v in r.build.items()})
    row.update({f"{key}@{device}": v for device, figures in r.devices.items() for key, v in figures.items()})
    for stage, secs in (r.stage_s or {}).items():
        row[f"{stage}_s"] = secs
    for steps, acc in sorted((r.rung_accuracy or {}).items(), key=lambda kv: int(kv[0])):
        row[f"accuracy@{steps}"] = acc  # the candidate's accuracy at each rung it reached
    for name, value in r.params.items():
        if name != "round_to":
            row[f"param:{name}"] = value
    return row


def _fidelity(row: dict[str, Any]) -> str | None:
    """What a search-time accuracy figure rests on, in words (e.g. 'search: 160 steps, 2000 images')."""
    if row["state"] != "COMPLETE":
        return None
    images = f", {int(row['eval_samples'])} images" if row.get("eval_samples") else ""
    if str(row.get("evaluation") or "").startswith("zero-shot"):
        return f"search: zero-shot{images}"
    if row.get("baseline") and not row.get("finetune_steps"):
        return f"unpruned{images}"
    steps = row.get("finetune_steps")
    return f"search: {int(steps)} steps{images}" if steps is not None else "search"


def noisy_mark(row) -> str:
    """' (noisy)' after a latency whose timing processes disagreed (``latency_noisy``),
    so a figure that may not repeat is never printed bare; '' otherwise."""
    return " (noisy)" if _flag(row.get("latency_noisy")) or _flag(row.get("final_latency_noisy")) else ""


def _flag(value) -> bool:
    """True only for a recorded True (numpy's too); None or NaN (not recorded) is not."""
    import numpy as np

    return isinstance(value, (bool, np.bool_)) and bool(value)


def final_fidelity(f) -> str:
    """What a finalized figure rests on, e.g. 'final: 640+800 steps, 5000 images'."""
    return f"final: {int(f['search_steps'])}+{int(f['final_steps'])} steps, {int(f['eval_samples'])} images"


def device_columns(df: pd.DataFrame) -> list[str]:
    """The other devices' latency columns (``latency_ms@<profile>``), in study order."""
    return [c for c in df.columns if c.startswith("latency_ms@")]


def _method_counts(plan: dict | None) -> str | None:
    """e.g. 'l1:4 sparse_magnitude:2 drop_block:1': what a trial's plan used, in one cell."""
    if not plan:
        return None
    counts: dict[str, int] = {}
    for choice in plan.get("groups", {}).values():
        if choice["method"] != "none" and choice["ratio"] > 0:
            counts[choice["method"]] = counts.get(choice["method"], 0) + 1
    if plan.get("drop_blocks"):
        counts["drop_block"] = len(plan["drop_blocks"])
    return " ".join(f"{m}:{n}" for m, n in sorted(counts.items())) or "none"


def named(df: pd.DataFrame, metric: MetricInfo) -> pd.DataFrame:
    """``df`` with its metric columns under the metric's name (``accuracy_drop`` becomes
    ``mIoU_drop``): what the CSV files a user opens say."""
    return df.rename(columns=metric.key) if metric.name != "accuracy" else df


def _atomic_frame(df: pd.DataFrame, path: Path, metric: MetricInfo | None = None) -> None:
    atomic_write_text(path, named(df, metric or MetricInfo()).to_csv(index=False))


def write_trials(study, study_dir: Path) -> pd.DataFrame:
    df = trials_frame(study)
    _atomic_frame(df, Path(study_dir) / "trials.csv", MetricInfo.of((storage_mod.identity(study) or {}).get("metric")))
    return df


@dataclass(frozen=True)
class Recommendation:
    """The search's answer: the fastest model within ``max_drop`` points of the baseline,
    and the most accurate within the latency budget (rows of :attr:`SearchResult.front`)."""

    max_drop: float
    budget_ms: float
    fastest: pd.Series | None
    most_accurate: pd.Series | None
    final: bool  # from finalized figures (else search-time ones)
    metric: MetricInfo = MetricInfo()

    def lines(self, study_dir: Path) -> list[str]:
        """What to print: each pick with its figures and the command that exports it."""
        out = []
        figures = "final figures" if self.final else "search-time figures (not finalized: run `autoprune finalize`)"
        best = "most accurate" if self.metric.name == "accuracy" else f"best {self.metric.name}"
        for label, row, beaten in ((f"fastest within {self.max_drop:g} pt of the baseline", self.fastest,
                                    "is faster within the drop"),
                                   (f"{best} within the {self.budget_ms:g} ms budget", self.most_accurate,
                                    "scores as well within the budget")):
            if row is None:
                out.append(f"{label}: none ({figures})")
                continue
            n = int(row["trial"])
            if _flag(row.get("baseline")):
                out.append(f"{label}: the unpruned model (trial {n}): no pruned candidate {beaten}; "
                           f"{self.metric.name} {self.metric.fmt(row['accuracy'])}, {row['latency_ms']:.3f} ms"
                           f"{noisy_mark(row)} [{row['fidelity']}]")
                out.append(f"    export: autoprune export {study_dir} --trial {n} --out deploy-{n}")
                continue
            out.append(f"{label}: trial {n}, {self.metric.name} {self.metric.fmt(row['accuracy'])} "
                       f"({-row['accuracy_drop']:+.2f} pt), "
                       f"{row['latency_ms']:.3f} ms{noisy_mark(row)}, {row['speedup']:.2f}x [{row['fidelity']}]")
            out.append(f"    export: autoprune export {study_dir} --trial {n} --out deploy-{n}")
        return out


@dataclass
class SearchResult:
    """A finished (or interrupted) study: its trial records and tables.

    ``front`` is the study's Pareto front among the shown candidates (see
    :meth:`shown`); a finalized member shows its final
    figures (full fine-tune, whole validation set, paired timing) and says so in its
    ``fidelity`` column, with the search-time ones kept as ``search_accuracy`` and
    ``search_latency_ms``.

    Example:
        >>> result = SearchResult.load("results/fashion-mnist-x86-ort")
        >>> result.front[["trial", "accuracy", "latency_ms", "fidelity"]]
    """

    study_dir: Path
    study: Any
    identity: dict[str, Any]
    records: list[TrialRecord]
    trials: pd.DataFrame
    front: pd.DataFrame
    final: pd.DataFrame = field(default_factory=pd.DataFrame)
    max_drop: float = DEFAULT_MAX_DROP
    min_metric: float | None = None
    storage: Any = None  # the opened Optuna storage the study lives in
    artifacts_url: str | None = None  # the artifact store its files go through (autoprune.artifacts), or None

    @classmethod
    def load(cls, study_dir: str | Path, storage: str | None = None, artifacts: str | None = None) -> SearchResult:
        """``storage``: the study's storage URL where ``config.json`` cannot name it (a
        password); ``artifacts``: an artifact store URL other than the one the search recorded."""
        import optuna

        from autoprune import artifacts as artifacts_mod
        from autoprune.pareto import front_numbers

        study_dir = Path(study_dir)
        cfg = study_dir / "config.json"
        if not cfg.is_file():
            raise StudyError(
                f"{study_dir} is not an autoprune results directory (no config.json). "
                "Pass the folder a search wrote, e.g. results/fashion-mnist-x86-ort."
            )
        try:
            identity = json.loads(cfg.read_text())
            identity["study"], identity["latency_budget_ms"]  # noqa: B018 - required keys
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StudyError(f"{cfg} is damaged ({type(exc).__name__}: {exc}); it cannot be read.") from None
        url = storage or identity.get("storage") or default_url(study_dir)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        store = storage_mod.open_storage(url)
        study = storage_mod.load(store, identity["study"])
        if study is None:
            raise StudyError(f"storage {storage_mod.without_password(url)!r} has no study {identity['study']!r}.")
        records = storage_mod.records(study)
        trials = trials_frame(study, records)
        run = storage_mod.run_info(study)
        result = cls(study_dir, study, identity, records, trials, trials.iloc[0:0], read_final(study_dir, study),
                     float(run.get("max_drop", DEFAULT_MAX_DROP)), run.get("min_metric"), store)
        result.artifacts_url = artifacts_mod.study_url(study, artifacts)
        numbers = front_numbers(study) if not trials.empty else []
        front = trials.set_index("trial").loc[numbers].reset_index() if numbers else trials.iloc[0:0]
        result.front = result._with_final(result.shown(front))
        return result

    @property
    def baseline(self) -> pd.Series | None:
        rows = self.trials[(self.trials["baseline"]) & (self.trials["state"] == "COMPLETE")] if not self.trials.empty else self.trials
        return None if rows.empty else rows.iloc[0]

    @property
    def budget_ms(self) -> float:
        return float(self.identity["latency_budget_ms"])

    @property
    def metric(self) -> MetricInfo:
        """The task's metric: name, unit, direction (top-1 accuracy unless the task named one)."""
        return MetricInfo.of(self.identity.get("metric"))

    @property
    def metric_floor(self) -> float | None:
        """The least accuracy shown on the front and plots: ``min_metric``, else the
        baseline's less 10 points (lower candidates stay in the study and trials.csv)."""
        if self.min_metric is not None:
            return float(self.min_metric)
        base = self.baseline
        return None if base is None else float(base["accuracy"]) - self.metric.sign * DEFAULT_SHOWN_DROP

    def shown(self, rows: pd.DataFrame) -> pd.DataFrame:
        """``rows`` without the candidates below :attr:`metric_floor`."""
        floor = self.metric_floor
        if floor is None or rows.empty:
            return rows
        sign = self.metric.sign
        return rows[(sign * rows["accuracy"] >= sign * floor) | rows["baseline"].astype(bool)]

    def _with_final(self, front: pd.DataFrame) -> pd.DataFrame:
        """The front with each finalized member's final figures in place of its search-time ones."""
        front = front.copy()
        front["search_accuracy"] = front["accuracy"]
        front["search_latency_ms"] = front["latency_ms"]
        if front.empty:
            return front
        for n in read_failed(self.study_dir, self.study):  # a member finalize could not rebuild or time: said, not hidden
            if self.final.empty or n not in set(self.final["trial"].astype(int)):
                i = front.index[front["trial"] == n]
                front.loc[i, "fidelity"] = front.loc[i, "fidelity"].astype(str) + "; finalize failed"
        if self.final.empty:
            return front
        for _, f in self.final.iterrows():
            i = front.index[front["trial"] == int(f["trial"])]
            if len(i) == 0:
                continue
            front.loc[i, "accuracy"] = f["final_accuracy"]
            front.loc[i, "accuracy_drop"] = f["accuracy_drop"]
            front.loc[i, "latency_ms"] = f["final_latency_ms"]
            front.loc[i, "latency_noisy"] = _flag(f.get("final_latency_noisy"))
            front.loc[i, "speedup"] = f["paired_speedup"]
            front.loc[i, "fidelity"] = final_fidelity(f)
        return front.sort_values("latency_ms").reset_index(drop=True)

    def recommend(self, max_drop: float | None = None) -> Recommendation:
        """The fastest model within ``max_drop`` points (default: the search's ``--max-drop``)
        and the most accurate within the budget: from final figures where any member was
        finalized, else from search-time ones."""
        max_drop = self.max_drop if max_drop is None else max_drop
        rows = self.front[~self.front["baseline"].astype(bool)] if not self.front.empty else self.front
        final = rows[rows["fidelity"].astype(str).str.startswith("final")] if not rows.empty else rows
        pool = final if not final.empty else rows
        fastest = most = None
        if not pool.empty:
            ok = pool[pool["accuracy_drop"] <= max_drop]
            fits = pool[pool["latency_ms"] <= self.budget_ms]
            fits = fits.assign(_good=self.metric.sign * fits["accuracy"])
            most = None if fits.empty else fits.sort_values(["_good", "latency_ms"], ascending=[False, True]).iloc[0].drop("_good")
            fastest = None if ok.empty else ok.sort_values(["latency_ms", "accuracy_drop"]).iloc[0]
        # the unpruned model is always a candidate: a pick it beats is never recommended
        base = self._baseline_pick(final)
        if base is not None:
            if fastest is None or float(fastest["speedup"]) <= 1.0:
                fastest = base  # nothing within the drop is faster than it
            if float(base["latency_ms"]) <= self.budget_ms and (
                    most is None or self.metric.sign * (float(base["accuracy"]) - float(most["accuracy"])) > 0):
                most = base
        return Recommendation(max_drop, self.budget_ms, fastest, most, not final.empty, self.metric)

    def _baseline_pick(self, final: pd.DataFrame) -> pd.Series | None:
        """The unpruned model as a pick, at the fidelity of the others: its whole-set
        figure where members were finalized (final.csv's baseline), else its search-time one."""
        if self.baseline is None:
            return None
        base = self.baseline.copy()  # on the front or not (a faster INT8 copy of it may dominate it)
        if not final.empty and not self.final.empty and "baseline_accuracy" in self.final:
            base["accuracy"] = float(self.final["baseline_accuracy"].iloc[-1])
            base["fidelity"] = "unpruned, whole validation set"
        base["accuracy_drop"], base["speedup"] = 0.0, 1.0
        return base

    def artifact_store(self, create: bool = False):
        """The artifact store the study's files go through, or None (``create``: make its
        folder, to write into it)."""
        from autoprune.artifacts import open_store

        return open_store(self.artifacts_url, create=create) if self.artifacts_url else None

    def record(self, trial: int) -> TrialRecord | None:
        return next((r for r in self.records if r.number == trial), None)

    def write_all(self) -> None:
        _atomic_frame(self.trials, self.study_dir / "trials.csv", self.metric)
        _atomic_frame(self.front, self.study_dir / "pareto.csv", self.metric)
        if not self.trials.empty:
            pareto_plots(self.shown(self.trials), self.front, self.baseline, self.budget_ms, self.identity["device"],
                         self.identity["study"], self.study_dir, self.metric)

# -- what finalize wrote, and the models behind the figures -------------------------------
# (here, below finalize and deploy, which both read them: finalize -> results -> nothing above)

FINAL_TABLE = "final.csv"
FAILED_FILE = "failed.json"  # in trials/<n>/final/: why the member could not be finalized


def final_result(files: TrialFiles) -> dict[str, Any] | None:
    """A member's final figures (``files`` is its ``final/`` folder) when finalize
    completed it, else None.

    ``result.json`` is written last, after the member's weights and its ONNX file (and
    removed before a member is finalized again), so it is the one sign that the final
    files are whole: a package takes all of them or none (issue 27.6: export during an
    interrupted finalize mixed final weights with the search-time ONNX).
    """
    done = files.dir / "result.json"
    if not (done.is_file() and files.state.is_file() and files.onnx.is_file()):
        return None
    try:
        figures = json.loads(done.read_text())
    except (OSError, ValueError):
        return None  # a result that was never completely written: the member is finalized again
    return figures if isinstance(figures, dict) and "final_accuracy" in figures else None


def read_final(study_dir: str | Path, study=None) -> pd.DataFrame:
    """Every finalized member's figures (one row per trial): from the member's final
    files where they are here (what export packages), else from the study's storage
    where a process finalized it into another results folder (which holds its files)."""
    rows = {}
    for path in sorted(Path(study_dir).glob("trials/*/final")):
        row = final_result(TrialFiles(path))
        if row is not None:
            rows[int(row["trial"])] = row
    if study is not None:
        for n, state in storage_mod.final_states(study).items():
            if n not in rows and storage_mod.finalized_elsewhere(state, n, Path(study_dir), files_here=False) and \
                    isinstance(state.get("figures"), dict):
                rows[n] = state["figures"]
    return pd.DataFrame(list(rows.values())).sort_values("trial") if rows else pd.DataFrame()


def read_failed(study_dir: str | Path, study=None) -> dict[int, str]:
    """Members whose last finalize failed (trial -> reason); their search-time figures stand."""
    failed = {}
    if study is not None:
        for n, state in storage_mod.final_states(study).items():
            if state.get("state") == "failed":
                failed[n] = str(state.get("reason"))
            elif state.get("state") in ("done", "running"):
                failed[n] = None  # finalized (or being finalized) since: a failure file left here is older
    for path in sorted(Path(study_dir).glob(f"trials/*/final/{FAILED_FILE}")):
        try:
            row = json.loads(path.read_text())
            failed.setdefault(int(row["trial"]), str(row["reason"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return {n: reason for n, reason in failed.items() if reason is not None}


def study_folder(study_dir: str | Path, storage_url: str, study_name: str) -> Path:
    """A results folder for a study this machine has none of (to export from, its files
    coming through the artifact store): ``config.json`` written from the storage (the
    study's settings, the URL without its password, the data folder). A folder of that
    study is kept as it is; one of another study, or any other non-empty folder, is refused."""
    study_dir = Path(study_dir)
    store = storage_mod.open_storage(storage_url)
    study = storage_mod.load(store, study_name)
    shown = storage_mod.without_password(storage_url)
    if study is None or storage_mod.identity(study) is None:
        raise StudyError(f"storage {shown!r} has no autoprune study {study_name!r}.")
    cfg = study_dir / "config.json"
    if cfg.is_file():
        try:
            there = json.loads(cfg.read_text()).get("study")
        except (OSError, ValueError, AttributeError):
            there = None
        if there != study_name:
            raise StudyError(f"{study_dir} is the folder of study {there!r}, not {study_name!r}; give another folder.")
        return study_dir
    if study_dir.exists() and (not study_dir.is_dir() or any(study_dir.iterdir())):
        raise StudyError(f"{study_dir} exists and is not a results folder; give a new or empty folder.")
    study_dir.mkdir(parents=True, exist_ok=True)
    record = dict(storage_mod.identity(study), storage=shown, data_dir=storage_mod.run_info(study).get("data_dir"))
    atomic_write_text(cfg, json.dumps(record, indent=2) + "\n")
    return study_dir


def rebuild_model(result: SearchResult, trial: int, final: bool = True):
    """The trial's pruned, fine-tuned PyTorch model, rebuilt from its plan and weights
    (the weights of ``autoprune finalize`` when it ran and ``final`` is true)."""
    from autoprune.tasks import load_task

    files = TrialFiles.of(result.study_dir, trial)
    task = load_task(result.identity["task"], result.identity.get("data_dir"), result.identity.get("task_args"))
    model, plan = load_candidate(task, files, final=final, label=f"trial {trial}")
    return model, task, plan


def load_candidate(task, files: TrialFiles, final: bool = False, label: str = "the candidate"):
    """A candidate's pruned model with its saved weights, from its folder's ``plan.json``
    and ``state.pt`` (``final/state.pt`` when ``final`` and it exists: callers that
    package files decide ``final`` with :func:`final_result`); and its plan."""
    import pickle

    import torch

    from autoprune import pruning

    plan_file, state_file = files.plan, files.state
    if final and files.final.state.is_file():
        state_file = files.final.state
    if not plan_file.is_file() or not state_file.is_file():
        raise ExportError(f"{label}'s files are missing from {files.dir}; it cannot be exported.")
    plan = pruning.PruningPlan.from_dict(json.loads(plan_file.read_text()))
    # Only the layer shapes matter here (the weights are loaded below).
    shape_plan = plan.shape_only()
    model, _ = pruning.apply(task.model, shape_plan, task.example_input(1), ignored_layers=task.ignored_layers)
    try:
        model.load_state_dict(torch.load(state_file, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, pickle.UnpicklingError) as exc:
        # weights_only=True: a state file holding anything but tensors is refused, not run
        first = str(exc).strip().splitlines()[0]
        raise ExportError(f"{label}'s saved weights {state_file} cannot be loaded: {first}") from None
    return model.eval(), plan
