"""Bad candidates: a real segfault, a hang, memory exhaustion and a failed export in
the middle of one search. Each must become a failed trial with its stage and reason
while the search goes on."""

from __future__ import annotations

import subprocess

import pandas as pd
import pytest

import autoprune
from autoprune.profiles import load_profile

PROFILE = """\
description: x86-ort with short limits, for fault tests
backend: onnxruntime
measurement: {warmup: 2, min_repeats: 10, max_seconds: 0.3, sessions: 1, timeout_s: 15, memory_limit_mb: 1024,
              cache: false}
"""


@pytest.fixture
def short_profile(tmp_path):
    path = tmp_path / "x86-ort-short.yaml"
    path.write_text(PROFILE)
    load_profile(path)  # valid
    return path


def test_bad_candidates_become_failed_trials(tmp_path, short_profile, monkeypatch):
    monkeypatch.setenv("AUTOPRUNE_FAULT", "segv@device#1,hang@device#2,oom@device#3,raise@export#4")
    result = autoprune.search(finalize=False, task="digits", device=str(short_profile), latency_budget_ms=5.0, n_trials=7,
                              results_dir=tmp_path / "r", progress=False)
    df = pd.read_csv(result.study_dir / "trials.csv").set_index("trial")
    assert len(df) == 7
    expected = {
        1: ("measure", "timing process died with SIGSEGV"),
        2: ("measure", "timing timed out after 15 s"),
        3: ("measure", "timing process ran out of memory (limit 1024 MB)"),
        4: ("export", "RuntimeError: injected fault"),
    }
    for number, (stage, reason) in expected.items():
        assert df.loc[number, "state"] == "FAIL"
        assert df.loc[number, "fail_stage"] == stage
        assert reason in df.loc[number, "fail_reason"], df.loc[number, "fail_reason"]
    # (cache: false, so every trial reaches a timing process whatever it prunes)
    for number in (0, 5, 6):  # the search went on around them
        assert df.loc[number, "state"] == "COMPLETE"
    assert not result.front.empty


def test_no_timing_process_is_left_behind(tmp_path, short_profile, monkeypatch):
    monkeypatch.setenv("AUTOPRUNE_FAULT", "hang@device#1")
    autoprune.search(finalize=False, task="digits", device=str(short_profile), latency_budget_ms=5.0, n_trials=3,
                     results_dir=tmp_path / "r", progress=False)
    found = subprocess.run(["pgrep", "-f", "autoprune.runners._device"], capture_output=True, text=True)
    assert found.stdout.split() == []


def test_a_hanging_surgery_fails_its_trial_within_the_limit(tmp_path, short_profile, monkeypatch):
    space = tmp_path / "quick.yaml"
    space.write_text("version: 1\nprune_timeout_s: 2\nrecovery: {finetune_steps: 5, eval_samples: 100}\n")
    monkeypatch.setenv("AUTOPRUNE_FAULT", "hang@prune#1")
    result = autoprune.search(finalize=False, task="digits", device=str(short_profile), latency_budget_ms=5.0, n_trials=3,
                              space=str(space), results_dir=tmp_path / "r", progress=False)
    df = pd.read_csv(result.study_dir / "trials.csv").set_index("trial")
    assert df.loc[1, "state"] == "FAIL" and df.loc[1, "fail_stage"] == "prune"
    assert "did not finish within 2 s" in df.loc[1, "fail_reason"]
    assert df.loc[1, "duration_s"] < 60
    assert (df.drop(index=1)["state"] == "COMPLETE").all()


def test_a_killed_search_takes_its_timing_process_and_scratch_folders_with_it(tmp_path, short_profile):
    """kill -9 of a search whose timing process hangs: the timing process dies with it
    (not seconds later), and the next start removes what the dead one left in the temp folder."""
    import os
    import signal
    import sys
    import tempfile
    import time

    from autoprune._config import scratch_dir

    env = dict(os.environ, AUTOPRUNE_FAULT="hang@device#1")
    search = subprocess.Popen([sys.executable, "-m", "autoprune", "search", "--no-finalize", "--task", "digits", "--device",
                               str(short_profile), "--latency-budget-ms", "5", "--trials", "3", "--quiet",
                               "--results-dir", str(tmp_path / "r")], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)

    def trial_1_timing() -> str | None:
        # the budget check's timing processes come and go before trial 1: only trial 1's
        # (its environment names the trial) hangs and stays
        found = subprocess.run(["pgrep", "-P", str(search.pid), "-f", "autoprune.runners._device"],
                               capture_output=True, text=True)
        for pid in found.stdout.split():
            try:
                environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            except OSError:  # it ended between pgrep and here
                continue
            if b"AUTOPRUNE_FAULT_TRIAL=1" in environ:
                return pid
        return None

    deadline = time.monotonic() + 120
    while (child := trial_1_timing()) is None:  # trial 1's timing process, hanging
        assert search.poll() is None and time.monotonic() < deadline, "trial 1 never reached its timing"
        time.sleep(0.2)
    os.kill(search.pid, signal.SIGKILL)
    search.wait()
    time.sleep(0.5)
    assert not os.path.exists(f"/proc/{child}") or "Z" in open(f"/proc/{child}/stat").read().split()[2]
    # a scratch folder of a process that died is removed by the next one that makes one
    dead = tempfile.mkdtemp(prefix=f"autoprune-preflight-{search.pid}-")
    fresh = scratch_dir(tempfile.gettempdir(), "autoprune-preflight-")
    try:
        assert not os.path.exists(dead) and fresh.is_dir()
    finally:
        fresh.rmdir()
