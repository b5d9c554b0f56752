"""End-to-end search on digits: real pruning, training, ONNX, ORT timing, SQLite storage."""

from __future__ import annotations

import json

import optuna
import pandas as pd
import pytest

import autoprune
from autoprune.errors import BudgetError, StudyError
from autoprune.space import load_space
from autoprune.storage import finished


def test_search_produces_trials_front_and_files(digits_study):
    result = digits_study
    files = {p.name for p in result.study_dir.iterdir()}
    assert {"config.json", "study.db", "trials.csv", "pareto.csv", "pareto.png", "pareto.html",
            "measurements.json", "trials"} <= files
    trials = pd.read_csv(result.study_dir / "trials.csv")
    assert len(trials) == 6
    base = trials[trials["baseline"]]
    assert len(base) == 1 and int(base["trial"].iloc[0]) == 0
    assert base["speedup"].iloc[0] == pytest.approx(1.0)
    done = trials[trials["state"] == "COMPLETE"]
    assert (done["latency_ms"] > 0).all() and (done["accuracy"] > 0).all()
    assert (done["latency_ci_low_ms"] <= done["latency_ms"]).all()
    assert "param:ratio" in trials and any(c.endswith(".deviation") for c in trials.columns)  # the shared ratio
    for stage in ("prune_s", "recover_s", "evaluate_s", "export_s", "build_s", "measure_s"):
        assert stage in trials.columns
    # the front is feasible and non-dominated
    front = result.front
    assert not front.empty and (front["latency_ms"] <= 1.0).all()
    for _, a in front.iterrows():
        for _, b in done.iterrows():
            dominates = (b["accuracy"] >= a["accuracy"] and b["latency_ms"] <= a["latency_ms"]
                         and b["size_mb"] <= a["size_mb"]) and (
                b["accuracy"] > a["accuracy"] or b["latency_ms"] < a["latency_ms"] or b["size_mb"] < a["size_mb"])
            assert not dominates, f"trial {b['trial']} dominates front member {a['trial']}"


def test_pruned_candidates_are_smaller(digits_study):
    done = digits_study.trials[digits_study.trials["state"] == "COMPLETE"]
    pruned = done[~done["baseline"]]
    assert (pruned["macs_ratio"] <= 1.0).all()
    assert (pruned["macs_ratio"] < 1.0).any(), "no trial actually removed channels"


def test_same_command_resumes_without_redoing_trials(digits_study):
    d = digits_study.study_dir
    before = pd.read_csv(d / "trials.csv")
    again = autoprune.search(finalize=False, task="digits", device="x86-ort", latency_budget_ms=1.0, n_trials=6,
                             results_dir=d.parent, progress=False)
    after = pd.read_csv(d / "trials.csv")
    assert len(after) == 6
    pd.testing.assert_frame_equal(before.drop(columns=["duration_s"]), after.drop(columns=["duration_s"]))
    assert finished(again.study) == 6


def test_interrupted_trials_are_failed_and_retried(tmp_path):
    kw = dict(task="digits", device="x86-ort", latency_budget_ms=1.0, results_dir=tmp_path, progress=False)
    first = autoprune.search(finalize=False, n_trials=2, **kw)
    # Simulate a run killed mid-trial: a RUNNING trial is left in the storage.
    study = first.study
    methods = list(load_space("default").default.methods)
    stale = study.ask({"features.0.method": optuna.distributions.CategoricalDistribution(methods)})
    assert study.trials[stale.number].state == optuna.trial.TrialState.RUNNING
    result = autoprune.search(finalize=False, n_trials=3, **kw)
    states = result.trials.set_index("trial")["state"]
    assert states[stale.number] == "FAIL"
    assert result.trials.set_index("trial").loc[stale.number, "fail_stage"] == "interrupted"
    assert finished(result.study) == 3
    assert (result.trials["state"] == "COMPLETE").sum() == 3


def test_results_dir_of_a_different_study_is_refused_untouched(digits_study):
    d = digits_study.study_dir
    snapshot = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    with pytest.raises(StudyError, match=r"holds a different study.*latency_budget_ms: 1\.0 there, 2\.0 now"):
        autoprune.search(finalize=False, task="digits", device="x86-ort", latency_budget_ms=2.0, n_trials=6,
                         results_dir=d.parent, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == snapshot


def test_another_storage_for_the_same_folder_is_refused_untouched(tmp_path):
    kw = dict(task="digits", device="x86-ort", latency_budget_ms=5.0, n_trials=1, results_dir=tmp_path,
              progress=False, warm_start=False)
    first = autoprune.search(finalize=False, **kw)
    folder = first.study_dir
    snapshot = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(StudyError, match=r"holds the study stored in its own study\.db.*other\.db.*Nothing was changed"):
        autoprune.search(finalize=False, storage=f"sqlite:///{tmp_path / 'other.db'}", **kw)
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == snapshot
    assert not (tmp_path / "other.db").exists()


def test_a_storage_password_is_never_printed(tmp_path):
    with pytest.raises(StudyError) as err:
        autoprune.search(finalize=False, task="digits", device="x86-ort", latency_budget_ms=5.0, n_trials=1, results_dir=tmp_path,
                         storage="postgresql://someone:hunter2@127.0.0.1:1/autoprune", progress=False)
    assert "cannot open storage 'postgresql://someone@127.0.0.1:1/autoprune'" in str(err.value)
    assert "hunter2" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_budget_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(BudgetError, match=r"below what any candidate can reach.*unpruned model takes [0-9.]+ ms.*most pruned one.*takes [0-9.]+ ms"):
        autoprune.search(finalize=False, task="digits", device="x86-ort", latency_budget_ms=0.0001, n_trials=3,
                         results_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_the_budget_check_times_the_most_pruned_model_at_every_precision(tmp_path):
    """Which precision is fastest is the device's to say (INT8's quantize/dequantize steps
    cost more than they save in a small enough model), so the most-pruned plan is timed
    at each one offered, and the refusal quotes the fastest."""
    import re

    from conftest import run_cli

    proc = run_cli("search", "--task", "digits", "--device", "x86-ort", "--latency-budget-ms", "0.0001",
                   "--trials", "3", "--results-dir", str(tmp_path / "results"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    text = " ".join(proc.stderr.split())
    timed = dict(re.findall(r"(float32|int8) ([0-9.]+) ms", text.split("most-pruned", 1)[1].split(";", 1)[0]))
    assert set(timed) == {"float32", "int8"}, text
    quoted = re.search(r"most pruned one the space allows takes ([0-9.]+) ms at (float32|int8)", text)
    assert quoted and timed[quoted.group(2)] == quoted.group(1), text
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_a_speedup_budget_is_measured_once_and_kept_on_resume(tmp_path, capfd):
    """--speedup X: the budget is the unpruned model's latency, timed twice when the study
    starts (the faster counts; the baseline trial reuses it unless it was noisy), divided by
    X; the study records it, a resume keeps it, another X is another study.
    (A 128-channel model: digits' is so small that its most-pruned plan is not reliably faster.)"""
    import re

    run = dict(finalize=False, task="user_tasks:sized", task_args={"width": 128}, device="x86-ort",
               results_dir=tmp_path, speedup=2)
    first = autoprune.search(n_trials=3, progress=True, **run)
    said = " ".join(capfd.readouterr().err.split())
    timed = re.search(r"budget ([0-9.e-]+) ms \(--speedup 2: the unpruned model's ([0-9.e-]+) ms, the faster of its "
                      r"timings ([0-9.]+) and ([0-9.]+) ms, / 2\)", said)
    assert timed, said[-2000:]
    base_ms = float(timed.group(2))
    assert base_ms == pytest.approx(min(float(timed.group(3)), float(timed.group(4))), abs=6e-4)
    cfg = json.loads((first.study_dir / "config.json").read_text())
    assert cfg["speedup"] == 2.0 and cfg["latency_budget_ms"] == float(timed.group(1))
    assert cfg["latency_budget_ms"] == pytest.approx(base_ms / 2, rel=1e-3)
    assert first.budget_ms == cfg["latency_budget_ms"]
    baseline = pd.read_csv(first.study_dir / "trials.csv").query("baseline").iloc[0]
    if baseline["latency_cached"]:  # the faster timing (a noisy one is never cached: trial 0 times it again)
        assert baseline["latency_ms"] == pytest.approx(base_ms, rel=1e-3)
    again = autoprune.search(n_trials=4, progress=False, **run)
    assert json.loads((again.study_dir / "config.json").read_text()) == cfg and finished(again.study) == 4
    with pytest.raises(StudyError, match="holds a different study"):
        autoprune.search(n_trials=4, progress=False, **{**run, "speedup": 3})


def test_config_records_identity(digits_study):
    cfg = json.loads((digits_study.study_dir / "config.json").read_text())
    assert cfg["task"] == "digits" and cfg["device"] == "x86-ort" and cfg["latency_budget_ms"] == 1.0
    assert len(cfg["profile_hash"]) == 64 and len(cfg["space_hash"]) == 64
