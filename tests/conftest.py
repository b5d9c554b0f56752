from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autoprune.testing import faults

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "fixtures"))  # user-task factories

# Fault injection (AUTOPRUNE_FAULT) works in this process and in every Python process a
# test starts: the timing processes, the command line, device servers.
faults.install()
os.environ.update(faults.environ())
# The suite's searches train every trial, as searches did before the screen: each test
# stays a few trials long. The screen's own tests (test_screen.py) name their plans.
os.environ.setdefault("AUTOPRUNE_SCREEN_PLANS", "0")


@pytest.fixture(scope="session")
def digits_task():
    from autoprune.tasks import load_task

    return load_task("digits")


@pytest.fixture(scope="session")
def digits_study(tmp_path_factory):
    """One real digits search (SQLite storage, real ORT timing) shared by many tests."""
    import autoprune

    results = tmp_path_factory.mktemp("results")
    result = autoprune.search(
        finalize=False,  # search-time figures; tests that need final ones finalize a copy
        task="digits",
        device="x86-ort",
        latency_budget_ms=1.0,
        n_trials=6,
        results_dir=results,
        progress=False,
    )
    return result


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real command line in a subprocess, as a user would."""
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'tests' / 'fixtures'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return subprocess.run(
        [sys.executable, "-m", "autoprune", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )
