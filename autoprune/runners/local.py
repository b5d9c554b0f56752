"""Timing in a fresh subprocess on this machine, with a time limit.

A candidate that crashes the runtime (even with a segmentation fault) or hangs kills
only its own process; the trial fails with the reason and the study goes on. A fresh
process per candidate also keeps one candidate's allocator state out of the next one's
figures. The child imports its backend's runtime (onnxruntime or tvm) and numpy, never torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from autoprune.measure import combine
from autoprune.runners._base import Runner
from autoprune.runners._protocol import ResultKind, RunnerResult, from_output

if TYPE_CHECKING:
    from autoprune.profiles import DeviceProfile


class LocalRunner(Runner):
    name = "local"
    on_host = True

    def describe(self, profile: DeviceProfile) -> tuple[str, dict[str, Any]]:
        from autoprune.runners._device import device_info

        return "this machine", device_info()

    def measure(self, artifact_path: str, profile: DeviceProfile, *, tag: str = "") -> RunnerResult:
        parts = []
        for _ in range(profile.measurement.sessions):
            result = self._one_process(artifact_path, profile, tag)
            if not result.ok:
                return result
            assert result.measurement is not None
            parts.append(result.measurement)
        return RunnerResult.measured(combine(parts, profile.measurement.max_spread))

    def _one_process(self, artifact_path: str, profile: DeviceProfile, tag: str) -> RunnerResult:
        request = json.dumps({"artifact": artifact_path, "profile": profile.to_dict(), "tag": tag})
        threads = str(profile.threads)
        env = dict(os.environ, OMP_NUM_THREADS=threads, TVM_NUM_THREADS=threads)
        limit = profile.measurement.memory_limit_mb
        proc = subprocess.Popen(
            [sys.executable, "-m", "autoprune.runners._device"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,  # so a timeout kills the whole process group
            preexec_fn=lambda: _child_setup(limit),
        )
        try:
            out, err = proc.communicate(request, timeout=profile.measurement.timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return RunnerResult.failed(ResultKind.TIMED_OUT,
                                       f"timing timed out after {profile.measurement.timeout_s:g} s")
        if proc.returncode < 0:
            name = signal.Signals(-proc.returncode).name
            return RunnerResult.failed(ResultKind.CANDIDATE_FAILED,
                                       f"timing process died with {name} (exit {proc.returncode})")
        result = from_output(out)
        if result is not None:
            return result
        tail = (err.strip().splitlines() or ["no output"])[-1]
        return RunnerResult.failed(ResultKind.CANDIDATE_FAILED,
                                   f"timing process exited with code {proc.returncode}: {tail}")


def _child_setup(memory_limit_mb: int | None) -> None:
    """In the timing process, before it runs: end with its parent, and cap its memory."""
    end_with_parent()
    if memory_limit_mb:
        _limit_memory(memory_limit_mb)


def end_with_parent() -> None:
    """Have Linux SIGKILL this process when its parent dies (``PR_SET_PDEATHSIG``), so a
    killed search leaves no timing process competing with the one that resumes it."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not Linux: the time limit still ends it
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _limit_memory(megabytes: int) -> None:
    """Cap the timing process's address space: a runaway candidate fails alone."""
    import resource

    limit = megabytes << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
