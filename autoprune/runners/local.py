"""Timing in a fresh subprocess on this machine, with a time limit.

A candidate that crashes the runtime (even with a segmentation fault) or hangs kills
only its own process; the trial fails with the reason and the study goes on. A fresh
process per candidate also keeps one candidate's allocator state out of the next one's
figures. The child imports its backend's runtime (onnxruntime or tvm) and numpy, never torch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

from autoprune.measure import Measurement, combine
from autoprune.runners._base import Runner, RunnerResult
from autoprune.testing import faults

if TYPE_CHECKING:
    from autoprune.backends import BuildResult
    from autoprune.profiles import DeviceProfile

RESULT_TAG = "AUTOPRUNE-RESULT "


class LocalRunner(Runner):
    def measure(self, build: BuildResult, profile: DeviceProfile) -> RunnerResult:
        if build.artifact_path is None:
            return RunnerResult(None, f"nothing to time: build failed ({build.error})")
        parts = []
        for _ in range(profile.measurement.sessions):
            result = self._one_process(build, profile)
            if result.measurement is None:
                return result
            parts.append(result.measurement)
        return RunnerResult(combine(parts, profile.measurement.max_spread))

    def _one_process(self, build: BuildResult, profile: DeviceProfile) -> RunnerResult:
        request = json.dumps({"artifact": build.artifact_path, "profile": profile.to_dict()})
        threads = str(profile.threads)
        env = dict(os.environ, OMP_NUM_THREADS=threads, TVM_NUM_THREADS=threads)
        env.update(faults.child_env())
        limit = profile.measurement.memory_limit_mb
        proc = subprocess.Popen(
            [sys.executable, "-m", "autoprune.runners._device"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,  # so a timeout kills the whole process group
            preexec_fn=(lambda: _limit_memory(limit)) if limit else None,
        )
        try:
            out, err = proc.communicate(request, timeout=profile.measurement.timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return RunnerResult(None, f"timing timed out after {profile.measurement.timeout_s:g} s")
        if proc.returncode < 0:
            name = signal.Signals(-proc.returncode).name
            return RunnerResult(None, f"timing process died with {name} (exit {proc.returncode})")
        for line in reversed(out.splitlines()):
            if line.startswith(RESULT_TAG):
                payload = json.loads(line[len(RESULT_TAG):])
                if payload.get("error"):
                    return RunnerResult(None, payload["error"])
                return RunnerResult(Measurement.from_dict(payload["measurement"]))
        tail = (err.strip().splitlines() or ["no output"])[-1]
        return RunnerResult(None, f"timing process exited with code {proc.returncode}: {tail}")


def _limit_memory(megabytes: int) -> None:
    """Cap the timing process's address space: a runaway candidate fails alone."""
    import resource

    limit = megabytes << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
