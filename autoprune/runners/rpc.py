"""Timing on a remote device through a TVM RPC tracker.

The device runs ``autoprune device-server`` (TVM's RPC server plus autoprune's timing
function) registered with a tracker under a key; several boards of one kind share the
key and the tracker queues clients for them. Each of the profile's ``sessions`` is one
RPC session: ask the tracker for a device, upload the artifact, call
``autoprune.time`` on the device (the same protocol as the local runner), remove the
files in ``finally``. The session's client side runs in a subprocess of its own, so a
wedged device or a hung socket costs a time limit, never the search.

What goes wrong, and what the trial gets:

- the tracker is unreachable, no device is registered under the key, or none is free
  within ``queue_timeout_s``: tried again after ``backoff_s``, doubling, up to
  ``retries`` times, then the trial fails with what was tried and how to fix it;
- the device drops off the tracker during the session (it died or wedged): a
  ``device_lost`` result (the search runs the trial's plan once more, uncounted); the
  next trial starts by reconnecting (with the back-off);
- the candidate itself fails on the device (wrong ISA, parity, out of memory): the
  trial fails with the device's message, and no retry.

Run as ``python -m autoprune.runners.rpc`` it is that subprocess: a JSON request on
stdin, one result line on stdout.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprune._config import sha256_file
from autoprune.errors import DeviceError
from autoprune.measure import combine
from autoprune.runners._base import Runner
from autoprune.runners._protocol import (
    TOKEN_ENV,
    ResultKind,
    RunnerResult,
    from_output,
    open_signed,
    request_text,
    sign_request,
)
from autoprune.runners.local import end_with_parent

if TYPE_CHECKING:
    from autoprune.profiles import DeviceProfile

CONNECT_S = 60.0  # connecting, uploading and loading, beyond the queue and the timing itself


def start_hint(host: str, port: int, key: str) -> str:
    return (f"start a device server on the board with `autoprune device-server --tracker {host}:{port} --key {key}` "
            f"(and a tracker with `autoprune tracker --port {port}`), or point $AUTOPRUNE_TRACKER / "
            "$AUTOPRUNE_DEVICE_KEY at yours; `autoprune devices check PROFILE` tests the path")


class RpcRunner(Runner):
    name = "rpc"
    on_host = False

    def check_available(self, profile: DeviceProfile) -> None:
        """The tracker answers and a device is registered under the key (not that it is free)."""
        host, port, key = _settings(profile).resolved()
        why = tracker_status(host, port, key)
        if why:
            raise DeviceError(f"profile {profile.name!r} times candidates over TVM RPC, but {why}.")

    def describe(self, profile: DeviceProfile) -> tuple[str, dict[str, Any]]:
        host, port, key = _settings(profile).resolved()
        result = session(None, profile)
        if not result.ok:
            raise DeviceError(f"profile {profile.name!r}: {result.error}")
        return f"key {key!r} at tracker {host}:{port}", result.info

    def measure(self, artifact_path: str, profile: DeviceProfile, *, tag: str = "") -> RunnerResult:
        parts = []
        for _ in range(profile.measurement.sessions):
            result = self._with_retries(artifact_path, profile, tag)
            if not result.ok:
                return result
            assert result.measurement is not None
            parts.append(result.measurement)
        return RunnerResult.measured(combine(parts, profile.measurement.max_spread))

    def _with_retries(self, artifact: str, profile: DeviceProfile, tag: str) -> RunnerResult:
        settings = _settings(profile)
        attempts = settings.retries + 1
        for attempt in range(attempts):
            result = session(artifact, profile, tag=tag)
            if result.kind is not ResultKind.UNREACHABLE:
                return result
            if attempt + 1 < attempts:
                time.sleep(settings.backoff_s * 2**attempt)
        return RunnerResult.failed(ResultKind.UNREACHABLE, f"{result.error} (tried {attempts} times)")


def _settings(profile: DeviceProfile):
    assert profile.rpc is not None  # DeviceProfile refuses the rpc runner without its section
    return profile.rpc


def session(artifact: str | None, profile: DeviceProfile, timeout_s: float | None = None,
            tag: str = "") -> RunnerResult:
    """One RPC session in a subprocess: time ``artifact`` (None: only ask the device what it is)."""
    settings = _settings(profile)
    request = {"artifact": artifact, "profile": profile.to_dict(), "tag": tag}
    limit = timeout_s or (settings.queue_timeout_s + profile.measurement.timeout_s + CONNECT_S)
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoprune.runners.rpc"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=end_with_parent,
    )
    try:
        out, err = proc.communicate(json.dumps(request), timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return RunnerResult.failed(ResultKind.TIMED_OUT, f"RPC session timed out after {limit:g} s (queue, upload "
                                   "and timing); the device may be wedged")
    result = from_output(out)
    if result is not None:
        return result
    tail = (err.strip().splitlines() or ["no output"])[-1]
    return RunnerResult.failed(ResultKind.CANDIDATE_FAILED,
                               f"RPC client process exited with code {proc.returncode}: {tail}")


def tracker_servers(host: str, port: int, probe_s: float = 5.0) -> list[dict[str, Any]]:
    """The servers registered with the tracker (TVM's ``summary()["server_info"]``).

    Raises:
        OSError: the tracker cannot be reached (found within ``probe_s``: TVM's own
            connect retries for 60 s). RuntimeError: it answered wrongly.
    """
    import socket

    socket.create_connection((host, port), timeout=probe_s).close()
    from tvm import rpc

    tracker = rpc.connect_tracker(host, port)
    try:
        return tracker.summary()["server_info"]
    finally:
        tracker.close()


def has_key(servers: list[dict[str, Any]], key: str, port: int | None = None) -> bool:
    """Is a server with ``key`` (and, if given, listening on ``port``) among them?"""
    return any(s.get("key") == f"server:{key}" and (port is None or int(s["addr"][1]) == port) for s in servers)


def tracker_status(host: str, port: int, key: str) -> str | None:
    """None when the tracker answers and lists a device under ``key``; else what is wrong."""
    try:
        servers = tracker_servers(host, port)
    except OSError as exc:
        return f"the RPC tracker at {host}:{port} cannot be reached ({exc}). To fix: {start_hint(host, port, key)}"
    except RuntimeError:
        servers = []
    if not has_key(servers, key):
        return (f"no device is registered under key {key!r} at the tracker {host}:{port}. "
                f"To fix: {start_hint(host, port, key)}")
    return None


class _Unreachable(Exception):
    pass


def _client(request: dict[str, Any]) -> RunnerResult:
    """The subprocess's work, in numbered steps with clean-up in ``finally``."""
    from autoprune._config import from_dict
    from autoprune.profiles import DeviceProfile

    profile = from_dict(DeviceProfile, request["profile"], "request.profile")
    settings = _settings(profile)
    host, port, key = settings.resolved()
    # 1. the tracker answers and knows the key
    why = tracker_status(host, port, key)
    if why:
        raise _Unreachable(why)
    from tvm import rpc

    # 2. a free device from the tracker's queue, within queue_timeout_s
    tracker = rpc.connect_tracker(host, port)
    queue_s = settings.queue_timeout_s

    def queue_expired(*_):  # the tracker's request blocks without a limit of its own
        raise _Unreachable(f"no device with key {key!r} became free within {queue_s:g} s (queue_timeout_s)")

    signal.signal(signal.SIGALRM, queue_expired)
    signal.setitimer(signal.ITIMER_REAL, queue_s)
    try:
        remote = tracker.request(key, priority=1, max_retry=1,
                                 session_timeout=profile.measurement.timeout_s + CONNECT_S)
    except RuntimeError as exc:
        raise _Unreachable(f"the tracker could not connect to a device with key {key!r}: {exc}") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if request["artifact"] is None:
        return RunnerResult(ResultKind.OK, info=json.loads(remote.get_function("autoprune.device_info")()))
    uploaded = []
    try:
        # 3. upload the artifact and its side files (TVM: inputs, expected outputs)
        artifact = Path(request["artifact"])
        for path in [artifact, *sorted(artifact.parent.glob(artifact.name + ".*"))]:
            remote.upload(str(path), path.name)
            uploaded.append(path.name)
        try:
            time_fn = remote.get_function("autoprune.time")
        except Exception:  # noqa: BLE001 - a plain TVM RPC server
            return RunnerResult.failed(
                ResultKind.CANDIDATE_FAILED,
                f"the device under key {key!r} runs a plain TVM RPC server without autoprune's timing "
                "function; start it with `autoprune device-server` instead")
        # 4. time it on the device; with a token, the request is signed and so must be the
        # reply, over this request: this nonce, these files, this profile and tag
        token = os.environ.get(TOKEN_ENV)
        nonce, profile_json = secrets.token_hex(16), json.dumps(request["profile"])
        sent = request_text(nonce, {name: sha256_file(artifact.parent / name) for name in uploaded},
                            profile_json, request["tag"])
        reply = time_fn(artifact.name, profile_json, request["tag"], nonce, sign_request(token, sent))
        return open_signed(token, sent, reply)
    except Exception as exc:  # noqa: BLE001 - classified here, where it is known: device lost, or candidate
        try:
            still_there = has_key(tracker_servers(host, port), key)
        except (OSError, RuntimeError):
            still_there = False
        if not still_there:
            return RunnerResult.failed(ResultKind.DEVICE_LOST, f"the device with key {key!r} was lost during the "
                                       f"session (it died or wedged): {_short(exc)}")
        return RunnerResult.failed(ResultKind.CANDIDATE_FAILED, f"the device failed this candidate: {_short(exc)}")
    finally:
        # 5. clean up
        for name in uploaded:
            try:
                remote.remove(name)
            except Exception:  # noqa: BLE001 - the session may be gone; its folder goes with it
                break


def _short(exc: Exception) -> str:
    """The first line of a TVM error that says something (they start with tracebacks)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("File ", "Traceback", "^", "~"))]
    return f"{type(exc).__name__}: {(useful or lines or [''])[-1]}"


def main() -> None:
    request = json.loads(sys.stdin.read())
    try:
        result = _client(request)
    except _Unreachable as exc:
        result = RunnerResult.failed(ResultKind.UNREACHABLE, str(exc))
    except Exception as exc:  # noqa: BLE001 - reported to the parent as the trial's reason
        result = RunnerResult.failed(ResultKind.CANDIDATE_FAILED, _short(exc))
    print(result.line(), flush=True)


if __name__ == "__main__":
    main()
