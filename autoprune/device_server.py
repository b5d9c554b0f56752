"""The device side of the ``rpc`` runner: a TVM RPC server that also times ONNX Runtime.

Run on the board (it needs the TVM runtime, onnxruntime, numpy, PyYAML and rich, never
torch; see the README's "Remote devices")::

    autoprune device-server --tracker HOST:PORT --key rpi4 [--host 127.0.0.1]

The server is TVM's own (``tvm.rpc.Server``): it registers with the tracker under the
key, and each client session runs in a process forked from it. Before serving it
registers two functions that sessions can call:

- ``autoprune.time(artifact, profile_json, tag)``: load the uploaded artifact with the
  profile's backend (a TVM library or an ONNX model) and time it with the same code as
  the local runner's timing process (``runners._device``); returns a
  :class:`~autoprune.runners.RunnerResult` as JSON;
- ``autoprune.device_info()``: CPU, ISA, cores and runtime versions, as JSON.

A session that crashes (a library built for the wrong CPU dies with SIGILL) makes TVM's
listening thread raise, and the server silently drops off the tracker while its
process lives on. This supervisor watches the tracker and starts a new server when
its registration has been missing for ``REREGISTER_S``.

Security: a TVM RPC server runs whatever code a client uploads. It binds 127.0.0.1
unless ``--host`` says otherwise; only listen on a network you trust.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from autoprune.runners import _device
from autoprune.runners._protocol import TOKEN_ENV, ResultKind, RunnerResult, signed

POLL_S = 5.0
REREGISTER_S = 20.0  # registration missing this long (with the tracker up): restart
START_GRACE_S = 120.0  # a fresh server has this long to register (imports are slow under emulation)


def time_artifact(artifact: str, profile_json: str, tag: str = "", nonce: str = "") -> str:
    """Time an artifact uploaded to this session; a :class:`RunnerResult` as JSON, signed
    for the request ``nonce`` when the server has a token (``$AUTOPRUNE_DEVICE_TOKEN``).

    ``tag`` names the work (``trial 3``); nothing a client sends changes this process's
    environment.
    """
    return signed(os.environ.get(TOKEN_ENV), nonce, _time(artifact, profile_json, tag))


def _time(artifact: str, profile_json: str, tag: str) -> RunnerResult:
    try:
        import tvm_ffi

        profile_data = json.loads(profile_json)
        threads = str(_threads(profile_data))
        # the session is a fresh process forked for this client: its runtime thread
        # pools start here, so the environment still decides their size
        os.environ["OMP_NUM_THREADS"] = os.environ["TVM_NUM_THREADS"] = threads
        limit = profile_data.get("measurement", {}).get("memory_limit_mb")
        if limit:
            # the session is forked from a server that already maps the runtimes (GBs of
            # address space with TVM): the cap is what the candidate may add to that
            import resource

            cap = _address_space() + (int(limit) << 20)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        path = tvm_ffi.get_global_func("tvm.rpc.server.workpath")(artifact)
    except Exception as exc:  # noqa: BLE001 - reported to the client as the trial's reason
        return RunnerResult.failed(ResultKind.CANDIDATE_FAILED, f"{type(exc).__name__}: {exc}")
    return _device.time_artifact(path, profile_data, tag)


def _threads(profile_data: dict) -> int:
    from autoprune._config import from_dict
    from autoprune.profiles import DeviceProfile

    return from_dict(DeviceProfile, profile_data, "profile").threads


def _address_space() -> int:
    """This process's mapped address space in bytes (VmSize)."""
    for line in _device._read("/proc/self/status").splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) << 10
    return 0


def confine_sessions() -> None:
    """Keep every file a client names inside its session's own folder.

    TVM's server resolves the names that ``upload``, ``download``, ``remove`` and
    ``load_module`` get by joining them to the session folder, so an absolute name or
    ``..`` reaches any file on the board. Each session registers those resolvers anew
    (``tvm.rpc.server._server_env``, in the forked session process), and TVM has no
    public hook there: this wraps that one function, in this process only, to register
    confined resolvers after TVM's own. tests/test_remote.py fails if TVM renames it.
    """
    import tvm.rpc.server as tvm_server
    import tvm_ffi
    from tvm.runtime import load_module

    original = tvm_server._server_env
    if getattr(original, "autoprune_confined", False):
        return

    def server_env(load_library, work_path=None):
        temp = original(load_library, work_path)
        root = os.path.realpath(temp.temp_dir)

        def workpath(name: str) -> str:
            full = os.path.realpath(os.path.join(root, name))
            if os.path.commonpath([root, full]) != root:
                raise ValueError(f"refused: {name!r} is outside this session's folder")
            return full

        def refused(name: str):
            raise ValueError("refused: autoprune's device server does not link modules for clients")

        tvm_ffi.register_global_func("tvm.rpc.server.workpath", workpath, override=True)
        tvm_ffi.register_global_func("tvm.rpc.server.load_module", lambda name: load_module(workpath(name)),
                                     override=True)
        tvm_ffi.register_global_func("tvm.rpc.server.download_linked_module", refused, override=True)
        return temp

    server_env.autoprune_confined = True  # type: ignore[attr-defined]
    tvm_server._server_env = server_env


def _register() -> None:
    """Runs in TVM's server process before it listens; sessions fork from it."""
    import tvm_ffi

    confine_sessions()

    import autoprune.backends.onnxruntime  # noqa: F401 - imported once here, not per session
    import autoprune.backends.tvm  # noqa: F401

    try:
        import onnxruntime  # noqa: F401 - slow to import on a small board (2 s; 20 s emulated)
    except ImportError:
        pass
    tvm_ffi.register_global_func("autoprune.time", time_artifact, override=True)
    tvm_ffi.register_global_func("autoprune.device_info", lambda: json.dumps(_device.device_info()), override=True)


def registered(tracker: tuple[str, int], key: str, port: int) -> bool | None:
    """Is a server with this key and port on the tracker? None: the tracker is unreachable."""
    from autoprune.runners.rpc import has_key, tracker_servers

    try:
        return has_key(tracker_servers(*tracker, probe_s=3), key, port)
    except (OSError, RuntimeError):
        return None


def serve(tracker: tuple[str, int], key: str, host: str = "127.0.0.1", port: int = 9091,
          port_end: int = 9199, log=print) -> None:
    """Run the device server until SIGTERM/SIGINT, restarting it when it drops off the tracker."""
    from tvm import rpc

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = None
    try:
        while True:
            server = rpc.Server(host=host, port=port, port_end=port_end, tracker_addr=tracker, key=key,
                                server_init_callback=_register)
            log(f"device server for key {key!r} listening on {host}:{server.port}, "
                f"tracker {tracker[0]}:{tracker[1]}")
            started, seen, missing_since = time.monotonic(), False, None
            while True:
                time.sleep(POLL_S)
                state = registered(tracker, key, server.port)
                now = time.monotonic()
                if state:
                    seen, missing_since = True, None
                    continue
                if state is None or (not seen and now - started < START_GRACE_S):
                    continue  # tracker down (the server reconnects by itself) or still starting
                missing_since = missing_since or now
                if now - missing_since >= REREGISTER_S:
                    log(f"device server dropped off the tracker for {REREGISTER_S:g} s "
                        "(a session crashed or the tracker restarted); starting a new one")
                    server.terminate()
                    break
    finally:
        if server is not None:
            server.terminate()


def serve_tracker(host: str = "127.0.0.1", port: int = 9190, log=print) -> None:
    """Run TVM's RPC tracker until SIGTERM/SIGINT (TVM's own CLI binds 0.0.0.0 by default)."""
    from tvm.rpc.tracker import Tracker

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    tracker = Tracker(host=host, port=port, port_end=port + 1, silent=True)
    log(f"tracker listening on {host}:{tracker.port}")
    try:
        while True:
            time.sleep(3600)
    finally:
        tracker.terminate()
