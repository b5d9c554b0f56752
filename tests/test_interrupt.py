"""kill -9 of the search in every stage, then the same command again: every finished
trial is intact, the final count is exact, and no results file is truncated."""

from __future__ import annotations

import json
import os
import signal
import sqlite3

import pandas as pd
import pytest
from conftest import run_cli

pytestmark = pytest.mark.slow

# In chain order: each stage's target is the previous kill's retry, the same plan. The
# latency is measured right after pruning (latency first) and cached, so build and
# measure come before any stage that would have cached the plan's latency already.
STAGES = ["prune", "build", "measure", "recover", "evaluate", "export", "results"]


def _search(results, fault: str | None, trials: int = 5):
    env = {"AUTOPRUNE_FAULT": fault} if fault else {}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return run_cli("search", "--no-finalize", "--task", "digits", "--device", "x86-ort", "--latency-budget-ms", "5",
                       "--trials", str(trials), "--results-dir", str(results), "--quiet")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_kill_9_in_each_stage_then_resume(tmp_path):
    """One study killed in each stage in turn: every resume finds it whole, fails the
    killed trial as interrupted (its retry is the next one killed), keeps every finished
    trial exact, and the last resume completes the requested trials. (One study, not one
    per stage: the same checks for a third of the minutes.)"""
    study = tmp_path / "digits-x86-ort"
    finished: dict[int, pd.Series] = {}  # every trial ever seen COMPLETE, as it was then
    killed: list[int] = []  # the trials killed before their results were stored
    target = 3
    for stage in [*STAGES, None]:
        run = _search(tmp_path, stage and f"kill@{stage}#{target}")
        if stage is None:
            assert run.returncode == 0, run.stderr
        else:
            assert run.returncode == -signal.SIGKILL, (stage, run.returncode, run.stderr[-2000:])
        trials = pd.read_csv(study / "trials.csv").set_index("trial")  # parses: never left half-written
        assert json.loads((study / "config.json").read_text())["task"] == "digits"
        json.loads((study / "measurements.json").read_text())
        with sqlite3.connect(study / "study.db") as db:
            assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
            last = db.execute("select max(number) from trials").fetchone()[0]
        # every trial finished before this run is unchanged
        for number, row in finished.items():
            for col in ("accuracy", "latency_ms", "size_mb", "macs"):
                assert trials.loc[number, col] == row[col], (stage, number, col)
        finished.update((n, r) for n, r in trials[trials["state"] == "COMPLETE"].iterrows())
        if stage == "results":
            stored = target
        elif stage is not None:
            killed.append(target)
        target = last + 1  # a retry (or the next plan) comes next
    after = pd.read_csv(study / "trials.csv").set_index("trial")
    # exactly the requested number of trials counted; each killed one failed as interrupted
    counted = after[(after["state"] == "COMPLETE") | ((after["state"] == "FAIL") & (after["fail_stage"] != "interrupted"))]
    assert len(counted) == 5
    assert after.loc[stored, "state"] == "COMPLETE"  # killed after it was stored: complete
    interrupted = after[(after["state"] == "FAIL") & (after["fail_stage"] == "interrupted")]
    assert sorted(interrupted.index) == killed, after[["state", "fail_stage"]]
    for number in killed:  # its half-written files went when it was queued again
        assert not (study / "trials" / str(number)).exists()
    pd.read_csv(study / "pareto.csv")


@pytest.mark.parametrize("trial", [0, 1])
def test_kill_while_a_queued_plan_is_stored_keeps_it_exact(tmp_path, trial):
    """Killed after the first of a queued trial's parameters was stored (trial 0: the
    baseline; trial 1: a warm start): its retry runs the queued plan whole, under its
    label, and the baseline runs before any other plan."""
    import autoprune

    killed = _search(tmp_path, f"kill@suggest#{trial}", trials=3)
    assert killed.returncode == -signal.SIGKILL
    resumed = _search(tmp_path, None, trials=3)
    assert resumed.returncode == 0, resumed.stderr
    result = autoprune.SearchResult.load(tmp_path / "digits-x86-ort")
    records = {r.number: r for r in result.records}
    dead = records[trial]
    assert dead.state == "FAIL" and dead.fail_stage.value == "interrupted"
    assert 0 < len(dead.params) < len(dead.queued_params)  # the kill landed mid-way
    retry = next(r for r in records.values() if r.retry_of == trial)
    assert retry.complete and retry.params == dead.queued_params
    assert (retry.baseline, retry.warm_start) == (dead.baseline, dead.warm_start)
    complete = sorted(n for n, r in records.items() if r.complete)
    assert records[complete[0]].baseline, "the baseline is measured before any other trial"
    assert sum(r.baseline and r.complete for r in records.values()) == 1
    assert result.front["speedup"].notna().all()


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB tmpfs: fills up on demand, and remounts read-only."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_full_disk_or_a_read_only_folder_is_one_line_and_resumes(small_disk):
    import subprocess

    def search(trials: int):
        return run_cli("search", "--no-finalize", "--task", "digits", "--device", "x86-ort", "--latency-budget-ms", "5",
                       "--trials", str(trials), "--results-dir", str(small_disk), "--quiet", "--no-warm-start")

    first = search(2)
    assert first.returncode == 0, first.stderr
    filler = small_disk / "filler"
    with open(filler, "wb") as fh:  # take every byte that is left
        try:
            while True:
                fh.write(b"\0" * (1 << 20))
                fh.flush()
        except OSError:
            pass
    full = search(4)
    assert full.returncode == 2, full.stderr
    assert "Traceback" not in full.stderr and full.stderr.count("autoprune: error:") == 1, full.stderr
    assert "run the same command again to resume" in full.stderr
    filler.unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    read_only = search(4)
    assert read_only.returncode == 2, read_only.stderr
    assert "Traceback" not in read_only.stderr and read_only.stderr.count("autoprune: error:") == 1
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    resumed = search(4)
    assert resumed.returncode == 0, resumed.stderr
    after = pd.read_csv(small_disk / "digits-x86-ort" / "trials.csv")
    counted = after[(after["state"] == "COMPLETE") | ((after["state"] == "FAIL") & (after["fail_stage"] != "interrupted"))]
    assert len(counted) == 4 and (counted["state"] == "COMPLETE").all()  # no candidate blamed for the disk
