"""Open, create and resume a study on any Optuna storage (SQLite, PostgreSQL), from one
process or many.

- **One study, one identity.** The settings that make two searches the same study
  (task, device profile hash, space hash, budget, seed, sampler, ...) are kept as the
  study's ``autoprune`` attribute; a storage study created with other settings, or not
  by autoprune, is refused before anything is written (:func:`vet`).
- **Exactly N trials.** Counting the trials that count toward ``--trials`` and asking
  for a new one happen under a study-wide lock (:func:`study_lock`: a PostgreSQL
  advisory lock, or a file lock beside a SQLite file), so four workers never start a
  fifth trial too many.
- **Nothing lost.** Each running trial records its owner (host and pid) and a heartbeat
  (Optuna's heartbeat table). A trial whose owner is dead (same host: its pid is gone;
  another host: no heartbeat for ``GRACE_S``, judged by Optuna's
  ``fail_stale_trials``) is failed as ``interrupted`` and its plan is queued again, so a
  ``kill -9`` at any moment costs only the trial in flight.
- **Finalize once per member.** The front members to finalize are claimed the same way
  (a study attribute per member, under the study lock, with its own beat), and their
  final figures are kept there, so every process can finalize and read them.

Only Optuna's public API is used: the storage object is opened here and passed along,
and trials are addressed by their number (``get_trial_id_from_study_id_trial_number``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from autoprune import trials
from autoprune.errors import StudyError, first_line
from autoprune.trials import TrialRecord, mark_interrupted

HEARTBEAT_S = 5  # a running trial's owner writes a heartbeat this often
GRACE_S = 60  # a trial of another host without a heartbeat this long is dead
OWNER = f"{socket.gethostname()}:{os.getpid()}"
IDENTITY_ATTR = "autoprune"  # the settings that make a study the same study
RUN_ATTR = "autoprune_run"  # how it is being run (target trial count, data folder): not identity


def default_url(study_dir: Path) -> str:
    """The SQLite database inside a results folder: the default storage of a search."""
    return f"sqlite:///{Path(study_dir).resolve() / 'study.db'}"


def open_storage(url: str):
    """An Optuna RDBStorage with heartbeats whose stale trials are re-queued.

    Raises:
        StudyError: the URL cannot be opened (the message names it, without its
            password, and how to recover).
    """
    import optuna

    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    opened: list[Any] = []

    def stale(study, trial) -> None:  # Optuna failed a trial of another host whose heartbeat stopped
        retry(opened[0], study, TrialRecord.of(trial))

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            opened.append(optuna.storages.RDBStorage(
                _with_driver(url), engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                heartbeat_stale_trial_callback=stale))
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy/driver errors vary by backend
        first = first_line(exc) or type(exc).__name__
        secret = _password(url)
        if secret:
            first = first.replace(secret, "***")
        raise StudyError(
            f"cannot open storage {without_password(url)!r}: {first}. Check the URL; a damaged "
            "study.db can be moved away to start over (its trials are then lost)."
        ) from None
    return opened[0]


def _password(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).password
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy can parse: it has no password we can find
        return None


def without_password(url: str | None) -> str | None:
    """The storage URL as autoprune writes and prints it: never with a password.

    PostgreSQL's client reads the password from ``$PGPASSWORD`` or the file that
    ``$PGPASSFILE`` names (default ``~/.pgpass``) when the URL has none.
    """
    if url is None or not _password(url):
        return url
    from sqlalchemy.engine import URL, make_url

    u = make_url(url)
    return URL.create(u.drivername, u.username, None, u.host, u.port, u.database, u.query).render_as_string(
        hide_password=False)


def _with_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3; autoprune ships psycopg2
    (``[postgres]`` extra), so the documented URL form is given that driver unless
    psycopg 3 is there.
    """
    import importlib.util

    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except Exception:  # noqa: BLE001 - let RDBStorage report what is wrong with it
        return url
    if u.drivername in ("postgresql", "postgres") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return u.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return url


# -- the study's own attributes -------------------------------------------------------


def identity(study) -> dict[str, Any] | None:
    return study.user_attrs.get(IDENTITY_ATTR)


def run_info(study) -> dict[str, Any]:
    return study.user_attrs.get(RUN_ATTR) or {}


def set_run_info(study, info: dict[str, Any]) -> None:
    study.set_user_attr(RUN_ATTR, info)


def load(storage, name: str):
    """The study ``name`` in ``storage``, or None."""
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def study_names(storage) -> list[str]:
    import optuna

    return optuna.get_all_study_names(storage=storage)


def vet(study, wanted: dict[str, Any], directions: list[str]) -> None:
    """Refuse a storage study that is not this search's (settings, foreign trials, directions)."""
    old = identity(study)
    if old is not None and old != wanted:
        raise StudyError(
            f"storage study {study.study_name!r} was created with different settings "
            f"({diff(old, wanted)}). Use another --study NAME."
        )
    if old is None and study.trials:
        raise StudyError(
            f"storage study {study.study_name!r} already has trials that autoprune did not "
            "create. Use another --study NAME."
        )
    found = [d.name.lower() for d in study.directions]
    if found != directions:
        raise StudyError(
            f"storage study {study.study_name!r} cannot be used: it has directions {found}, autoprune "
            f"needs {directions}. Use another --study NAME."
        )


def create(storage, name: str, *, sampler, directions: list[str], wanted: dict[str, Any],
           metric_names: list[str], queue: list[dict[str, Any]]):
    """Create the study (or load it when it exists) and, when new, record its identity
    and queue its first plans (``queue``: keyword arguments of :func:`trials.enqueue`)."""
    import optuna

    from autoprune.trials import enqueue

    study = optuna.create_study(storage=storage, sampler=sampler, study_name=name, directions=directions,
                                load_if_exists=True)
    vet(study, wanted, directions)
    if identity(study) is None:
        study.set_user_attr(IDENTITY_ATTR, wanted)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(metric_names)
        for item in queue:
            enqueue(study, **item)
    return study


def diff(a: dict, b: dict) -> str:
    return "; ".join(f"{k}: {a.get(k)!r} there, {b.get(k)!r} now" for k in b if a.get(k) != b.get(k))


# -- many processes, one study --------------------------------------------------------


def records(study, states=None) -> list[TrialRecord]:
    return [TrialRecord.of(t) for t in study.get_trials(deepcopy=False, states=states)]


def counted(study) -> int:
    """Trials that count toward --trials: finished (complete, or failed because of the
    candidate) and running. Interrupted trials are retried, so they do not count."""
    return sum(r.counts for r in records(study))


def finished(study) -> int:
    """Trials that count toward --trials and are no longer running."""
    return sum(r.counts and r.state != "RUNNING" for r in records(study))


def trial_id(storage, study, number: int) -> int:
    """A trial's storage id from its number (Optuna's public storage API)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def requeue(storage, study, record: TrialRecord, reason: str) -> None:
    """Fail a running trial whose worker stopped, as interrupted, and queue its plan again
    (callers hold the study lock or own the trial)."""
    import optuna

    tid = trial_id(storage, study, record.number)
    mark_interrupted(storage, tid, reason)
    storage.set_trial_state_values(tid, optuna.trial.TrialState.FAIL)
    if record.retry_params:
        retry(storage, study, record)


def retry(storage, study, record: TrialRecord) -> None:
    """Queue an interrupted trial's plan once more; a baseline goes before the rest.

    Every speed-up is measured against the baseline, so it runs before any other plan:
    the plans queued before its retry (the warm start) are failed as interrupted and
    queued again after it. Optuna runs queued trials oldest first and has no public way
    to reorder them.
    """
    import optuna

    trials.retry(study, record)
    if not record.baseline:
        return
    for waiting in records(study, states=(optuna.trial.TrialState.WAITING,)):
        if waiting.baseline:
            continue
        tid = trial_id(storage, study, waiting.number)
        try:
            mark_interrupted(storage, tid, f"queued again after the retry of the baseline (trial {record.number})")
            storage.set_trial_state_values(tid, optuna.trial.TrialState.FAIL)
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker started it meanwhile: it runs as it is
        trials.retry(study, waiting)


def owner_alive(owner: str | None) -> bool | None:
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


def fail_dead(storage, study) -> list[TrialRecord]:
    """Fail and re-queue the running trials whose worker is gone; return those of this host.

    A worker on this host is dead when its pid is (seen at once); one elsewhere when its
    trial had no heartbeat for GRACE_S (Optuna's ``fail_stale_trials``, by the
    database's clock, which re-queues through :func:`_stale`).
    """
    import optuna

    dead = []
    for record in records(study, states=(optuna.trial.TrialState.RUNNING,)):
        if record.owner != OWNER and owner_alive(record.owner) is False:
            requeue(storage, study, record, f"its worker {record.owner or '?'} stopped")
            dead.append(record)
    with warnings.catch_warnings():  # public since Optuna 2.9, still marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return dead


@contextlib.contextmanager
def study_lock(storage, study_name: str) -> Iterator[None]:
    """Serialise count-then-ask across processes sharing ``storage`` (an RDBStorage)."""
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
    """Record the trial's heartbeat every HEARTBEAT_S while the block runs."""
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


# -- finalize: members claimed through the storage ------------------------------------
#
# Optuna does not let a finished trial change, so a member's finalize lives in a study
# attribute of its own, ``autoprune_final:<n>``: first a claim (its owner and a beat
# refreshed every HEARTBEAT_S), then its final figures or why it failed. Every process
# that finalizes (search, worker, finalize) claims under the study lock, so each
# member is finalized once however many join, and a claim whose owner died (same
# rules as a trial's: its pid is gone, or no beat for GRACE_S) is taken over.

FINAL_ATTR = "autoprune_final:"


def final_states(study) -> dict[int, dict[str, Any]]:
    """Every member's finalize state (trial -> ``{"state": "running" | "done" | "failed", ...}``),
    read from the storage now."""
    found = {}
    for key, value in study.user_attrs.items():
        if key.startswith(FINAL_ATTR) and isinstance(value, dict):
            with contextlib.suppress(ValueError):
                found[int(key[len(FINAL_ATTR):])] = value
    return found


def claim_alive(state: dict[str, Any] | None) -> bool:
    """Whether a running claim's owner is still at work on it."""
    if not state or state.get("state") != "running":
        return False
    alive = owner_alive(state.get("owner"))
    if alive is None:  # another host: its beats say
        return time.time() - float(state.get("beat", 0)) < GRACE_S
    return alive


def on_this_host(owner: str | None) -> bool:
    return bool(owner) and str(owner).rpartition(":")[0] == socket.gethostname()


def finalized_elsewhere(state: dict[str, Any] | None, trial: int, study_dir: Path, files_here: bool) -> bool:
    """Whether member ``trial`` counts as finalized for the results folder ``study_dir``:
    done, and its final files are here (``files_here``) or in the results folder that
    finalized it (another host's, or one on this host that still holds them). Done into
    this folder with the files gone since (removed by hand) is not finalized."""
    if not state or state.get("state") != "done":
        return False
    if files_here:
        return True
    owner, folder = state.get("owner"), state.get("dir")
    if not on_this_host(owner):
        return True
    if folder is None or Path(folder).resolve() == Path(study_dir).resolve():
        return False
    return (trials.TrialFiles.of(Path(folder), trial).final.dir / "result.json").is_file()


def claim_final(storage, study, trial: int, key: dict[str, Any], study_dir: Path, *, files_here: bool,
                retry_failed: bool = False) -> str:
    """Claim member ``trial`` for this process, finalizing into ``study_dir``. Returns
    ``"claimed"`` (finalize it now), ``"done"`` (finalized already with the same ``key``,
    its steps and batch size; ``files_here``: its final files are in ``study_dir``, see
    :func:`finalized_elsewhere`), ``"failed"`` (it failed with that key and
    ``retry_failed`` is off) or ``"taken"`` (a live process finalizes it)."""
    with study_lock(storage, study.study_name):
        state = final_states(study).get(trial)
        if state is not None and all(state.get(k) == v for k, v in key.items()):
            if finalized_elsewhere(state, trial, study_dir, files_here):
                return "done"
            if state.get("state") == "failed" and not retry_failed:
                return "failed"
        if state is not None and state.get("owner") != OWNER and claim_alive(state):
            return "taken"
        study.set_user_attr(f"{FINAL_ATTR}{trial}", {"state": "running", "owner": OWNER, "beat": time.time(),
                                                     "dir": str(Path(study_dir).resolve()), **key})
        return "claimed"


def settle_final(study, trial: int, study_dir: Path, state: dict[str, Any]) -> None:
    """Record how this process's claim on ``trial`` ended (``state``: done with its
    figures, or failed with a reason); ``study_dir``: the results folder holding its files."""
    study.set_user_attr(f"{FINAL_ATTR}{trial}", {"owner": OWNER, "beat": time.time(),
                                                 "dir": str(Path(study_dir).resolve()), **state})


@contextlib.contextmanager
def final_heartbeat(storage, study, trial: int) -> Iterator[None]:
    """Refresh this process's claim on ``trial`` every HEARTBEAT_S while the block runs."""
    stop = threading.Event()
    name = f"{FINAL_ATTR}{trial}"

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception), study_lock(storage, study.study_name):  # a missed beat is retried
                state = study.user_attrs.get(name)
                if isinstance(state, dict) and state.get("owner") == OWNER and state.get("state") == "running":
                    study.set_user_attr(name, {**state, "beat": time.time()})

    thread = threading.Thread(target=beat, name=f"autoprune-final-{trial}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
