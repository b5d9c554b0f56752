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

import contextlib
import json
import os
import queue
import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from autoprune._config import sha256_file
from autoprune.runners import _device
from autoprune.runners._protocol import (
    TOKEN_ENV,
    ResultKind,
    RunnerResult,
    refusal,
    request_ok,
    request_text,
    signed,
)

POLL_S = 5.0
REREGISTER_S = 20.0  # registration missing this long (with the tracker up): restart
START_GRACE_S = 120.0  # a fresh server has this long to register (imports are slow under emulation)


def time_artifact(artifact: str, profile_json: str, tag: str = "", nonce: str = "", request_mac: str = "") -> str:
    """Time an artifact uploaded to this session; a :class:`RunnerResult` as JSON.

    With a token (``$AUTOPRUNE_DEVICE_TOKEN``) the board times only a request the host
    signed (``request_mac``), and signs its reply over the request as the board sees it:
    the nonce, the sha256 of the files uploaded to this session, the profile and the tag
    (``_protocol.request_text``). A reply for another artifact than the host's fails the
    host's check, so a rogue board cannot relay the nonce to an honest one.

    ``tag`` names the work (``trial 3``); nothing a client sends changes this process's
    environment.
    """
    token = os.environ.get(TOKEN_ENV)
    try:
        files = _session_files(artifact)
    except Exception as exc:  # noqa: BLE001 - a name outside the session, or nothing uploaded
        files, failure = {}, RunnerResult.failed(ResultKind.CANDIDATE_FAILED, f"{type(exc).__name__}: {exc}")
    else:
        failure = None
    request = request_text(nonce, files, profile_json, tag)
    if not request_ok(token, request, request_mac):  # refused before timing: it costs the board nothing
        return refusal()
    if failure is not None:
        return signed(token, request, failure)
    with trusted():  # the loaders answer (guard_loaders) while the artifact is loaded and timed
        return signed(token, request, _time(artifact, profile_json, tag))


def _session_files(artifact: str) -> dict[str, str]:
    """The sha256 of the artifact and of its side files (``<artifact>.*``), as uploaded to
    this session: what the host says it uploaded (``runners.rpc``)."""
    import glob

    import tvm_ffi

    path = tvm_ffi.get_global_func("tvm.rpc.server.workpath")(artifact)
    names = [path, *sorted(glob.glob(glob.escape(path) + ".*"))]
    return {os.path.basename(n): sha256_file(n) for n in names}


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

        def upload(name: str, data) -> None:
            path, limit = workpath(name), max_upload_bytes()
            used = sum(f.stat().st_size for f in Path(root).rglob("*") if f.is_file() and str(f) != path)
            if used + len(data) > limit:
                raise ValueError(f"refused: this session's uploads would reach {(used + len(data)) >> 20} MiB "
                                 f"(the board allows {limit >> 20} MiB: device-server --max-upload-mb)")
            with open(path, "wb") as file:
                file.write(bytes(data))

        tvm_ffi.register_global_func("tvm.rpc.server.workpath", workpath, override=True)
        tvm_ffi.register_global_func("tvm.rpc.server.upload", upload, override=True)
        def load_confined(name: str):
            path = workpath(name)
            with trusted():  # the library loaders answer for a file in this session (MetaSchedule's runner)
                return load_module(path)

        tvm_ffi.register_global_func("tvm.rpc.server.load_module", load_confined, override=True)
        tvm_ffi.register_global_func("tvm.rpc.server.download_linked_module", refused, override=True)
        guard_loaders()
        return temp

    server_env.autoprune_confined = True  # type: ignore[attr-defined]
    tvm_server._server_env = server_env


# TVM's server takes one connection at a time, in one thread: a client that connects and
# says nothing, announces a negative or huge length, or holds a session open, had the board
# to itself (issue 27.5). These bound what one connection can take.
HANDSHAKE_S = 10.0  # a connection has this long to say who it is
MAX_MESSAGE = 1 << 16  # the largest length a handshake (or tracker message) may announce, in bytes
MAX_HANDSHAKES = 32  # connections whose handshake is being read at once; more are closed at once
MAX_SESSION_S = 1800.0  # a session ends after this, whatever timeout its client asked for
RESTART_PAUSE_S = 1.0
MAX_UPLOAD_ENV = "AUTOPRUNE_MAX_UPLOAD_MB"
MAX_UPLOAD_MB = 2048  # what one session may upload in all (a ResNet-50 and its library are ~0.2 GB)


def max_upload_bytes() -> int:
    return int(os.environ.get(MAX_UPLOAD_ENV) or MAX_UPLOAD_MB) << 20


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # the server process's log (TVM's own lines go there too)


class _Replayed:
    """An accepted connection whose handshake was already read: TVM's loop reads it again
    from here, then the session takes the socket itself (:func:`harden_server`)."""

    def __init__(self, sock, handshake: bytes):
        self.sock, self._unread = sock, handshake

    def recv(self, nbytes: int) -> bytes:
        if not self._unread:
            return self.sock.recv(nbytes)
        chunk, self._unread = self._unread[:nbytes], self._unread[nbytes:]
        return chunk

    def __getattr__(self, name):
        return getattr(self.sock, name)


class _Handshakes:
    """TVM's listening socket, as its listen loop sees it: connections come out of
    ``accept()`` only once they have said who they are.

    A thread accepts every connection at once and reads each one's handshake in a thread
    of its own, within :data:`HANDSHAKE_S` and :data:`MAX_MESSAGE`; a connection that
    stays silent, announces a bad length or is not TVM's RPC is closed there. Before,
    TVM's loop read handshakes itself, one at a time: a silent client held the board, and
    each bad one made the loop drop and renew its registration at the tracker (a client
    that had just been handed the board then found it gone).
    """

    def __init__(self, listening):
        self._listening = listening
        self._ready, self._signal = socket.socketpair()  # readable when a connection is ready
        self._connections: queue.Queue = queue.Queue()
        self._slots = threading.BoundedSemaphore(MAX_HANDSHAKES)
        threading.Thread(target=self._accept, name="autoprune-accept", daemon=True).start()

    def fileno(self) -> int:
        return self._ready.fileno()  # what TVM's loop waits on with select()

    def accept(self):
        self._ready.recv(1)
        return self._connections.get()

    def _accept(self) -> None:
        while True:
            try:
                conn, addr = self._listening.accept()
            except OSError:
                time.sleep(0.1)  # a timeout set on the listening socket, or a client gone before accept
                continue
            if not self._slots.acquire(blocking=False):
                conn.close()  # too many handshakes under way: a flood, not a host
                continue
            threading.Thread(target=self._handshake, args=(conn, addr), daemon=True).start()

    def _handshake(self, conn, addr) -> None:
        import struct

        from tvm.rpc.base import RPC_MAGIC, recvall

        try:
            conn.settimeout(HANDSHAKE_S)
            head = recvall(conn, 8)
            magic, length = struct.unpack("<ii", head)
            if magic != RPC_MAGIC or not 0 < length <= MAX_MESSAGE:
                raise OSError(f"refused: magic {magic:#x}, a key announced as {length} bytes")
            key = recvall(conn, length)
        except OSError:
            conn.close()
            return
        finally:
            self._slots.release()
        conn.settimeout(None)
        self._connections.put((_Replayed(conn, head + key), addr))
        self._signal.send(b"!")


def harden_server(log=_say) -> None:
    """Bound the handshake and the session of TVM's server, in this process only.

    TVM's server (``tvm.rpc.server``) has no settings for these, so this wraps three of
    its module-level names before its listening thread starts, as
    :func:`confine_sessions` does (tests/test_remote.py fails if TVM renames them):

    - ``_listen_loop``: given :class:`_Handshakes` in place of its listening socket, so
      handshakes are read side by side, within :data:`HANDSHAKE_S` (an idle connection
      blocked the board) and :data:`MAX_MESSAGE` (8 bytes with a negative length crashed
      the accept loop; a 2 GB one grew memory by what the client streamed); and restarted
      after anything else a client makes it raise (TVM raises there for a session that
      died), so the board goes on serving instead of dropping off the tracker until the
      supervisor's restart;
    - ``base.recvall``: a length outside 1 .. :data:`MAX_MESSAGE` is refused, the same
      bound for the tracker's messages;
    - ``_serving``: the session gets the socket itself and is capped at
      :data:`MAX_SESSION_S`.
    """
    import tvm.rpc.base as tvm_base
    import tvm.rpc.server as tvm_server

    if getattr(tvm_server._listen_loop, "autoprune_hardened", False):
        return
    receive, loop, serving = tvm_base.recvall, tvm_server._listen_loop, tvm_server._serving

    def recvall(sock, nbytes):
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or not 0 < nbytes <= MAX_MESSAGE:
            raise OSError(f"refused: a message announced as {nbytes} bytes (at most {MAX_MESSAGE})")
        return receive(sock, nbytes)

    home = os.getcwd()

    def bounded_serving(sock, addr, opts, load_library):
        sock = getattr(sock, "sock", sock)  # the session's C++ loop reads the descriptor itself
        asked = opts.get("timeout")
        try:
            return serving(sock, addr, {**opts, "timeout": min(float(asked or MAX_SESSION_S), MAX_SESSION_S)},
                           load_library)
        finally:
            # TVM's _serving leaves the cwd in the session's folder when the session died,
            # and that folder goes away: every later session would fail at os.getcwd()
            os.chdir(home)
            sock.close()

    def listen_loop(listening, *rest):
        handshakes = _Handshakes(listening)
        while True:
            try:
                return loop(handshakes, *rest)
            except Exception as exc:  # noqa: BLE001 - a client's bytes or a dead session: serve the next one
                log(f"device server: a connection failed ({type(exc).__name__}: {exc}); listening again")
                time.sleep(RESTART_PAUSE_S)

    listen_loop.autoprune_hardened = True  # type: ignore[attr-defined]
    tvm_base.recvall = recvall
    tvm_server._serving = bounded_serving
    tvm_server._listen_loop = listen_loop


# Global functions that load, write or run code or files: over RPC a client could call
# them by name (``ffi.ModuleLoadFromFile`` loaded a library from any path, and its
# constructor ran; issue 27.4). In a session they answer only inside the server's own
# functions (``autoprune.time``, and ``load_module`` of a file in the session's folder,
# which MetaSchedule's runner needs to tune on the board); the session is one thread, so
# no client call can come in meanwhile.
_GUARDED = re.compile(r"load|file|save|shared|system|exec|popen|compile|build|\btar\b|\.cc\.|link", re.I)
_CONFINED = ("tvm.rpc.server.workpath", "tvm.rpc.server.upload", "tvm.rpc.server.download",
             "tvm.rpc.server.remove", "tvm.rpc.server.load_module",
             "tvm.rpc.server.download_linked_module")  # confined to the session's folder above, or refused
_trusted = False


@contextlib.contextmanager
def trusted():
    """The guarded functions answer while the server's own code runs."""
    global _trusted
    before, _trusted = _trusted, True
    try:
        yield
    finally:
        _trusted = before


def guard_loaders() -> None:
    """Make every global function whose name says it loads, writes or runs code or files
    answer only inside ``autoprune.time`` (in this session process)."""
    import tvm_ffi

    def guarded(name: str, original):
        def call(*args):
            if not _trusted:
                raise ValueError(f"refused: {name} is not served to clients by autoprune's device server")
            return original(*args)

        return call

    for name in tvm_ffi.registry.list_global_func_names():
        if name in _CONFINED or name.startswith("autoprune.") or not _GUARDED.search(name):
            continue
        original = tvm_ffi.get_global_func(name, allow_missing=True)
        if original is not None:
            tvm_ffi.register_global_func(name, guarded(name, original), override=True)


def _register() -> None:
    """Runs in TVM's server process before it listens; sessions fork from it."""
    import tvm_ffi

    confine_sessions()
    harden_server()

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
