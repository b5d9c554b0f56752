"""Running trials from one or many processes against one Optuna storage.

Every process that runs trials (``autoprune search`` and ``autoprune worker`` alike)
goes through :func:`run_trials`, an ask/tell loop:

- **Exactly N trials.** Counting the trials that count toward ``--trials`` and asking
  for a new one happen under a study-wide lock (a PostgreSQL advisory lock, or a file
  lock beside a SQLite file), so four workers never start a fifth trial too many.
- **Nothing lost.** Each running trial records its owner (host and pid) and a
  heartbeat. A trial whose owner is dead (same host: the pid is gone; another host:
  no heartbeat for ``GRACE_S``) is failed as ``interrupted`` and its parameters are
  queued again, so a ``kill -9`` at any moment costs only the trial in flight.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HEARTBEAT_S = 5  # a running trial's owner writes a heartbeat this often
GRACE_S = 60  # a trial of another host without a heartbeat this long is dead
OWNER = f"{socket.gethostname()}:{os.getpid()}"
KEEP_ON_RETRY = ("baseline", "warm_start")


def open_storage(url: str):
    """An RDBStorage that keeps a heartbeat table (see :func:`fail_dead`)."""
    import warnings

    import optuna

    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                                          grace_period=GRACE_S)


def requeue(study, trial) -> None:
    """Mark a running trial whose worker died as interrupted, fail it, and queue its
    parameters again (callers hold the study lock or own the trial)."""
    import optuna

    storage = study._storage
    storage.set_trial_user_attr(trial._trial_id, "fail_stage", "interrupted")
    storage.set_trial_user_attr(trial._trial_id, "fail_reason", f"its worker {trial.user_attrs.get('owner', '?')} stopped")
    storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    keep = {k: v for k, v in trial.user_attrs.items() if k in KEEP_ON_RETRY}
    if trial.params:
        study.enqueue_trial(trial.params, user_attrs=dict(keep, retry_of=trial.number), skip_if_exists=False)


def _alive(owner: str | None) -> bool | None:
    """True/False for an owner on this host; None when it runs elsewhere (use heartbeats)."""
    if not owner:
        return False  # started before owners were recorded: nobody can be running it
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    try:  # a killed process its parent has not reaped yet still answers signal 0
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def fail_dead(study) -> int:
    """Fail and re-queue the running trials whose worker is gone; return how many.

    A worker on this host is dead when its pid is; one elsewhere when its trial had no
    heartbeat for GRACE_S (Optuna's heartbeat table, judged by the database's clock).
    """
    import optuna

    backend = getattr(study._storage, "_backend", study._storage)
    stale = set(backend._get_stale_trial_ids(study._study_id)) if hasattr(backend, "_get_stale_trial_ids") else set()
    n = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = t.user_attrs.get("owner")
        if owner == OWNER:
            continue
        alive = _alive(owner)
        if alive is False or (alive is None and t._trial_id in stale):
            requeue(study, t)
            n += 1
    return n


def counted(study) -> int:
    """Trials that count toward --trials: finished (complete, or failed because of the
    candidate) and running. Interrupted trials are retried, so they do not count."""
    import optuna

    n = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING):
            n += 1
        elif t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("fail_stage") != "interrupted":
            n += 1
    return n


@contextlib.contextmanager
def study_lock(storage, study_name: str) -> Iterator[None]:
    """Serialise count-then-ask across processes sharing ``storage``."""
    storage = getattr(storage, "_backend", storage)  # a study wraps the RDBStorage in a cache
    url = str(storage.engine.url)
    if url.startswith("postgresql"):
        from sqlalchemy import text

        with storage.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(hashtext(:n))"), {"n": f"autoprune:{study_name}"})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(hashtext(:n))"), {"n": f"autoprune:{study_name}"})
                conn.commit()
    elif url.startswith("sqlite") and storage.engine.url.database:
        path = Path(storage.engine.url.database).with_suffix(".lock")
        with open(path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    else:  # other databases: no lock; concurrent workers may overshoot by a trial each
        yield


@contextlib.contextmanager
def heartbeat(storage, trial_id: int) -> Iterator[None]:
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a missed beat is retried next time
                storage.record_heartbeat(trial_id)

    storage.record_heartbeat(trial_id)
    thread = threading.Thread(target=beat, name=f"autoprune-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_trials(study, target: int, objective: Callable, failure: type[Exception],
               after_trial: Callable | None = None) -> int:
    """Run trials until the study holds ``target`` counted trials; return how many ran here."""
    import optuna

    ran = 0
    while True:
        with study_lock(study._storage, study.study_name):
            fail_dead(study)
            if counted(study) >= target:
                # Others' trials still running may yet die; stay until they finish so a
                # retry is run here rather than left for a later command.
                if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                    return ran
                trial = None
            else:
                with warnings.catch_warnings():  # "heartbeat is meant for optimize()": we beat ourselves
                    warnings.simplefilter("ignore", UserWarning)
                    trial = study.ask()
                trial.set_user_attr("owner", OWNER)
        if trial is None:
            time.sleep(HEARTBEAT_S)
            continue
        state, values = optuna.trial.TrialState.FAIL, None
        with heartbeat(study._storage, trial._trial_id):
            try:
                values = objective(trial)
                state = optuna.trial.TrialState.COMPLETE
            except failure:
                pass
            except BaseException:  # Ctrl-C or a bug: the trial is retried, not lost
                requeue(study, study._storage.get_trial(trial._trial_id))
                raise
        frozen = study.tell(trial, values, state=state)
        ran += 1
        if after_trial is not None:
            after_trial(study, frozen)
