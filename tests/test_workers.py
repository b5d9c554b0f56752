"""Distributed workers on a real PostgreSQL server: exact trial counts, kill -9 resume.

The server is Debian's ``postgresql`` package (scripts/bootstrap.sh installs it), run
by the test set-up in a temporary folder on a Unix socket only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import REPO

from autoprune.testing.postgres import PostgresMissing, postgres_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres_url():
    try:
        with postgres_server() as url:
            yield url
    except PostgresMissing as exc:
        pytest.fail(str(exc))


def _cli(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "autoprune", *args, "--quiet"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_study(url: str, name: str, timeout: float = 180) -> None:
    # One storage for the whole wait: each load_study(storage=url) would open its own
    # engine, whose connections stay open until the garbage collector runs, and a slow
    # start (a busy CI machine) then exhausts the server's max_connections.
    store = optuna.storages.RDBStorage(url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if optuna.load_study(study_name=name, storage=store).user_attrs.get("autoprune_run"):
                    return
            except KeyError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"study {name} never appeared")
    finally:
        store.engine.dispose()


def _finish(procs: list[subprocess.Popen], timeout: float = 600) -> None:
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode in (0, -signal.SIGKILL), err[-2000:]


QUICK_PROFILE = """\
description: x86-ort with one timing process and a short protocol, for worker tests
backend: onnxruntime
measurement: {warmup: 2, min_repeats: 10, max_seconds: 0.3, sessions: 1}
"""


def _start(url: str, name: str, results: Path, trials: int, workers: int) -> list[subprocess.Popen]:
    profile = results / "quick.yaml"
    profile.write_text(QUICK_PROFILE)
    primary = _cli("search", "--no-finalize", "--task", "digits", "--device", str(profile), "--latency-budget-ms", "1.0",
                   "--trials", str(trials), "--storage", url, "--study", name, "--results-dir", str(results))
    _wait_for_study(url, name)
    others = [_cli("worker", "--storage", url, "--study", name, "--results-dir", str(results))
              for _ in range(workers - 1)]
    return [primary, *others]


def _as_documented(url: str, password: str) -> str:
    """The README's form, ``postgresql://user:password@...`` (the server trusts any password)."""
    return url.replace("postgresql+psycopg2://postgres@", f"postgresql://postgres:{password}@")


def test_four_workers_run_exactly_the_requested_trials(postgres_url, tmp_path):
    procs = _start(postgres_url, "four", tmp_path, trials=8, workers=4)
    _finish(procs)
    study = optuna.load_study(study_name="four", storage=postgres_url)
    trials = study.get_trials()
    assert len(trials) == 8, [(t.number, t.state.name) for t in trials]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    # the queued trials (baseline and the two warm starts) ran once each, not once per worker
    # (QUICK_PROFILE has no precision section: float32 only, so no INT8 warm start)
    assert sum(bool(t.user_attrs.get("baseline")) for t in trials) == 1
    assert sorted(t.user_attrs["warm_start"] for t in trials if t.user_attrs.get("warm_start")) == [
        "uniform l1 0.3", "uniform l1 0.5"]
    owners = {t.user_attrs["owner"] for t in trials}
    assert len(owners) >= 3, owners  # the workers really shared the work
    for t in trials:
        assert (tmp_path / "four" / "trials" / str(t.number) / "state.pt").is_file()
    assert len((tmp_path / "four" / "trials.csv").read_text().splitlines()) == 9


def test_a_killed_worker_loses_only_its_trial_in_flight(postgres_url, tmp_path):
    procs = _start(postgres_url, "killed", tmp_path, trials=10, workers=3)
    victim = procs[1]
    study = optuna.load_study(study_name="killed", storage=postgres_url)
    deadline = time.monotonic() + 180
    mine = None
    while mine is None and time.monotonic() < deadline:
        for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
            # with a parameter stored: killed before its first suggestion, a trial has no
            # plan to queue again, and the next trial the sampler asks for replaces it
            if t.user_attrs.get("owner", "").endswith(f":{victim.pid}") and t.params:
                mine = t
        time.sleep(0.2)
    assert mine is not None, "the victim never started a trial"
    victim.kill()  # SIGKILL mid-trial
    victim.wait()
    _finish(procs)
    trials = {t.number: t for t in optuna.load_study(study_name="killed", storage=postgres_url).get_trials()}
    dead = trials[mine.number]
    assert dead.state == optuna.trial.TrialState.FAIL and dead.user_attrs["fail_stage"] == "interrupted"
    retried = [t for t in trials.values() if t.user_attrs.get("retry_of") == mine.number]
    assert len(retried) == 1 and retried[0].state == optuna.trial.TrialState.COMPLETE
    # (killed while still suggesting, the retry draws the parameters not yet chosen)
    assert dead.params.items() <= retried[0].params.items()
    complete = [t for t in trials.values() if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 10 and len(trials) == 11  # 10 counted + the interrupted one


def test_worker_errors_are_one_line(postgres_url, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "autoprune", "worker", "--storage", postgres_url,
                           "--study", "nope"], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "has no study 'nope'" in proc.stderr and "autoprune search" in proc.stderr


def test_the_documented_url_works_and_its_password_is_never_written(postgres_url, tmp_path):
    url = _as_documented(postgres_url, "hunter2")  # plain postgresql://, as the README shows it
    proc = _cli("search", "--no-finalize", "--task", "digits", "--device", "x86-ort", "--latency-budget-ms", "5", "--trials", "2",
                "--storage", url, "--study", "documented", "--results-dir", str(tmp_path), "--no-warm-start")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    study = optuna.load_study(study_name="documented", storage=postgres_url)
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 2
    for f in (tmp_path / "documented").rglob("*"):
        if f.is_file():
            assert b"hunter2" not in f.read_bytes(), f
    assert "hunter2" not in out + err
    config = json.loads((tmp_path / "documented" / "config.json").read_text())
    assert config["storage"].startswith("postgresql://postgres@")
    # reading the folder again needs no password in the URL (the server here trusts; a
    # real one takes it from $PGPASSWORD or ~/.pgpass)
    front = subprocess.run([sys.executable, "-m", "autoprune", "front", str(tmp_path / "documented")],
                           env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300)
    assert front.returncode == 0, front.stderr[-2000:]


def test_a_search_and_its_worker_share_one_screen_and_finalize_each_member_once(postgres_url, tmp_path):
    """Two processes, one study, every shared stage (one search here: each costs minutes).

    The screen's plans are shared out like trials: the study holds each screened plan
    once, the choice is made once, and every chosen plan is trained once. Issue 26.2:
    every process finalizes when the trials are done. Members are claimed through the
    storage, so each is finalized once, by a process holding its trial files; every
    process ends with the whole final table (figures from the storage), and export from
    a folder without a member's final files says where they are."""
    import pandas as pd

    profile = tmp_path / "quick.yaml"
    profile.write_text(QUICK_PROFILE)
    folders = [tmp_path / "a", tmp_path / "b"]
    primary = _cli("search", "--task", "digits", "--device", str(profile), "--latency-budget-ms", "1.0",
                   "--trials", "5", "--screen-plans", "16", "--final-members", "3", "--storage", postgres_url,
                   "--study", "fin", "--results-dir", str(folders[0]))
    _wait_for_study(postgres_url, "fin")
    worker = _cli("worker", "--storage", postgres_url, "--study", "fin", "--results-dir", str(folders[1]))
    for p in (primary, worker):
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="fin", storage=postgres_url)
    screened = [t for t in study.trials if t.user_attrs.get("screen")]
    trained = [t for t in study.trials if not t.user_attrs.get("screen")]
    assert len(screened) == 16 and all(t.state == optuna.trial.TrialState.PRUNED for t in screened)
    assert len(trained) == 5 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trained)
    chosen = study.user_attrs["autoprune.screen_selected"]
    assert sorted(t.user_attrs["screened_from"] for t in trained if "screened_from" in t.user_attrs) == sorted(chosen)
    states = {int(k.split(":")[1]): v for k, v in study.user_attrs.items() if k.startswith("autoprune_final:")}
    assert 1 <= len(states) <= 3 and all(v["state"] == "done" for v in states.values()), states
    owners = {p.pid: folder for p, folder in zip((primary, worker), folders)}
    ran = {t.number: t.user_attrs["owner"] for t in study.trials}
    for n, state in states.items():
        pid = int(state["owner"].rsplit(":", 1)[1])
        assert state["owner"] == ran[n]  # finalized by the process holding its trial files
        for folder in folders:  # once: its final files are in that process's folder only
            assert (folder / "fin" / "trials" / str(n) / "final" / "result.json").is_file() == (folder == owners[pid])
    for folder in folders:  # each process's table has every member
        assert sorted(pd.read_csv(folder / "fin" / "final.csv")["trial"]) == sorted(states)
    elsewhere = next(((n, folder) for n, s in states.items() for folder in folders
                      if folder != owners[int(s["owner"].rsplit(":", 1)[1])]), None)
    assert elsewhere is not None
    n, folder = elsewhere
    proc = subprocess.run([sys.executable, "-m", "autoprune", "export", str(folder / "fin"), "--trial", str(n),
                           "--out", str(tmp_path / "pkg")], env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"trial {n} was finalized by" in " ".join(proc.stderr.split()) and not (tmp_path / "pkg").exists()
