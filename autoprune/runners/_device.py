"""The device side of timing, shared by the local runner's child process and
``autoprune device-server``: load an artifact with its backend, time it, answer with a
:class:`~autoprune.runners.RunnerResult`.

Run as ``python -m autoprune.runners._device`` it reads a JSON request on stdin and
prints one result line. It imports the backend's runtime and numpy, never torch.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any

from autoprune.runners._protocol import ResultKind, RunnerResult

# AT_HWCAP bits of aarch64 Linux (arch/arm64/include/uapi/asm/hwcap.h): the ISA the
# kernel (or qemu) really offers, whatever /proc/cpuinfo says
AARCH64_HWCAP = ("fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp",
                 "asimdhp", "cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop", "sha3", "sm3", "sm4",
                 "asimddp", "sha512", "sve")
X86_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8")
ARM_PARTS = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
             "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
             "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
             "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd4f": "Neoverse-V2"}


def time_artifact(artifact: str, profile_data: dict[str, Any], tag: str = "") -> RunnerResult:
    """Time ``artifact`` with the backend the profile names; never raises."""
    try:
        from autoprune import backends
        from autoprune._config import from_dict
        from autoprune.profiles import DeviceProfile

        profile = from_dict(DeviceProfile, profile_data, "request.profile")
        # An audit event (PEP 578): a no-op unless a hook listens, as the test
        # harness's fault injection does (autoprune.testing.faults).
        sys.audit("autoprune.device", tag)
        return RunnerResult.measured(backends.create(profile.backend).time(artifact, profile))
    except MemoryError:
        limit = profile_data.get("measurement", {}).get("memory_limit_mb")
        return RunnerResult.failed(ResultKind.CANDIDATE_FAILED, f"timing process ran out of memory (limit {limit} MB)")
    except Exception as exc:  # noqa: BLE001 - reported to the host as this candidate's reason
        return RunnerResult.failed(ResultKind.CANDIDATE_FAILED, f"{type(exc).__name__}: {exc}")


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


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _runtime_without_torch() -> None:
    """Keep torch out of this process.

    TVM's runtime (apache-tvm-ffi) imports torch whenever it can, for a DLPack exchange
    this process never makes: about 500 MB resident and seconds of start-up in every
    timing process (ResNet-18 on x86-tvm: 812 MB, 307 MB without it). A ``None`` entry
    makes that import fail as if torch were not installed; nothing here needs torch.
    """
    sys.modules.setdefault("torch", None)  # type: ignore[arg-type]


def main() -> None:
    _runtime_without_torch()
    request = json.loads(sys.stdin.read())
    print(time_artifact(request["artifact"], request["profile"], request.get("tag", "")).line(), flush=True)


if __name__ == "__main__":
    main()
