"""The device side of the ``rpc`` runner: a TVM RPC server that also times ONNX Runtime.

Run on the board (it needs the TVM runtime, onnxruntime, numpy, PyYAML and rich, never
torch; see the README's "Remote devices")::

    autoprune device-server --tracker HOST:PORT --key rpi4 [--host 127.0.0.1]

The server is TVM's own (``tvm.rpc.Server``): it registers with the tracker under the
key, and each client session runs in a process forked from it. Before serving it
registers two functions that sessions can call:

- ``autoprune.time(artifact, profile_json, env_json)``: load the uploaded artifact with the
  profile's backend (a TVM library or an ONNX model) and time it with the same
  protocol as the local runner (``measure.timed_loop``); returns a JSON result;
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
import platform
import signal
import sys
import time
from typing import Any

POLL_S = 5.0
REREGISTER_S = 20.0  # registration missing this long (with the tracker up): restart
START_GRACE_S = 120.0  # a fresh server has this long to register (imports are slow under emulation)

# AT_HWCAP bits of aarch64 Linux (arch/arm64/include/uapi/asm/hwcap.h): the ISA the
# kernel (or qemu) really offers, whatever /proc/cpuinfo says
AARCH64_HWCAP = ("fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp",
                 "asimdhp", "cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop", "sha3", "sm3", "sm4",
                 "asimddp", "sha512", "sve")
X86_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "amx_tile")
ARM_PARTS = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
             "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
             "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
             "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd4f": "Neoverse-V2"}


def time_artifact(artifact: str, profile_json: str, env_json: str = "{}") -> str:
    """Time an artifact uploaded to this session; JSON ``{"measurement": ...}`` or ``{"error": ...}``.

    ``env_json`` carries the client's fault-injection settings (tests), nothing else.
    """
    try:
        os.environ.update({k: v for k, v in json.loads(env_json).items() if k.startswith("AUTOPRUNE_FAULT")})
        import tvm_ffi

        from autoprune._config import from_dict
        from autoprune.backends import create
        from autoprune.profiles import DeviceProfile
        from autoprune.testing import faults

        profile = from_dict(DeviceProfile, json.loads(profile_json), "profile")
        # the session is a fresh process forked for this client: its runtime thread
        # pools start here, so the environment still decides their size
        os.environ["OMP_NUM_THREADS"] = os.environ["TVM_NUM_THREADS"] = str(profile.threads)
        limit = profile.measurement.memory_limit_mb
        if limit:
            # the session is forked from a server that already maps the runtimes (GBs of
            # address space with TVM): the cap is what the candidate may add to that
            import resource

            cap = _address_space() + (limit << 20)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        path = tvm_ffi.get_global_func("tvm.rpc.server.workpath")(artifact)
        faults.inject("device")
        measurement = create(profile.backend).time(path, profile)
        return json.dumps({"measurement": measurement.to_dict()})
    except MemoryError:
        return json.dumps({"error": "timing process ran out of memory on the device"})
    except Exception as exc:  # noqa: BLE001 - reported to the client as the trial's reason
        return json.dumps({"error": f"{type(exc).__name__}: {exc}"})


def device_info() -> dict[str, Any]:
    """What this device is: CPU, ISA features, cores, runtime versions."""
    info: dict[str, Any] = {"machine": platform.machine(), "cores": os.cpu_count(),
                            "python": platform.python_version(), "hostname": platform.node()}
    cpuinfo = _read("/proc/cpuinfo")
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    part = fields.get("CPU part", "").lower()
    info["cpu"] = fields.get("model name") or ARM_PARTS.get(part) or (f"ARM part {part}" if part else "unknown")
    if info["machine"] in ("aarch64", "arm64"):
        import ctypes

        hwcap = ctypes.CDLL(None).getauxval(16)  # AT_HWCAP
        info["isa"] = [name for bit, name in enumerate(AARCH64_HWCAP) if hwcap >> bit & 1]
    else:
        flags = set(fields.get("flags", "").split())
        info["isa"] = [f for f in X86_FLAGS if f in flags]
    for module in ("tvm", "onnxruntime", "numpy", "autoprune"):
        try:
            info[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - a missing runtime is reported, not fatal
            info[module] = None
    return info


def _address_space() -> int:
    """This process's mapped address space in bytes (VmSize)."""
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) << 10
    return 0


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _register() -> None:
    """Runs in TVM's server process before it listens; sessions fork from it."""
    import tvm_ffi

    import autoprune.backends.onnxruntime  # noqa: F401 - imported once here, not per session
    import autoprune.backends.tvm  # noqa: F401

    try:
        import onnxruntime  # noqa: F401 - slow to import on a small board (2 s; 20 s emulated)
    except ImportError:
        pass
    tvm_ffi.register_global_func("autoprune.time", time_artifact, override=True)
    tvm_ffi.register_global_func("autoprune.device_info", lambda: json.dumps(device_info()), override=True)


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
