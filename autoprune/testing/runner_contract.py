"""The contract every runner keeps, as a test suite that each runner's tests run.

A runner's test module subclasses :class:`RunnerContract` and provides the ``case``
fixture (a runner, a profile that uses it, and a built artifact); pytest runs every
test below against the real device: this machine's timing process, a device server
on loopback, or the emulated ARM board.

Example::

    import pytest
    from autoprune.testing.runner_contract import RunnerCase, RunnerContract

    class TestLocalRunner(RunnerContract):
        @pytest.fixture
        def case(self, tmp_path):
            return RunnerCase.digits("x86-ort", tmp_path)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from autoprune import runners
from autoprune.device import Device
from autoprune.profiles import DeviceProfile
from autoprune.runners import ResultKind, Runner, RunnerResult


@dataclass(frozen=True)
class RunnerCase:
    """A runner, a profile that uses it, an artifact built for it, and one that cannot load."""

    runner: Runner
    profile: DeviceProfile
    artifact: str
    broken: str

    @classmethod
    def digits(cls, profile: str | Path | DeviceProfile, folder: Path) -> RunnerCase:
        """The built-in ``digits`` network, built for ``profile`` into ``folder``."""
        from autoprune.export import to_onnx
        from autoprune.profiles import load_profile
        from autoprune.tasks import load_task

        prof = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
        device = Device.of(prof)
        task = load_task("digits")
        folder = Path(folder)
        onnx = to_onnx(task.model, task.example_input(prof.batch_size), folder / "model.onnx", 1e-4)
        built = device.build(onnx, folder / "built")
        assert built.artifact_path is not None, built.error
        broken = folder / "broken" / Path(built.artifact_path).name
        broken.parent.mkdir(parents=True, exist_ok=True)
        broken.write_bytes(b"not a model this runtime can load")
        return cls(device.runner, prof, built.artifact_path, str(broken))


class RunnerContract:
    """Every runner: measures, fails as a typed value, says what the device is."""

    @pytest.fixture
    def case(self) -> RunnerCase:  # pragma: no cover - provided by the subclass
        raise NotImplementedError("a RunnerContract subclass provides the `case` fixture")

    def test_is_registered_under_its_name(self, case: RunnerCase) -> None:
        assert case.runner.name in runners.available()
        assert case.profile.runner == case.runner.name

    def test_measures_an_artifact_under_the_protocol(self, case: RunnerCase) -> None:
        result = case.runner.measure(case.artifact, case.profile, tag="contract")
        assert result.kind is ResultKind.OK and result.ok, result.error
        m = result.measurement
        assert m is not None and 0 < m.min_ms <= m.median_ms <= m.p90_ms
        assert m.sessions == case.profile.measurement.sessions
        assert m.runs >= case.profile.measurement.min_repeats * case.profile.measurement.sessions
        assert m.threads == case.profile.threads

    def test_a_broken_artifact_is_the_candidates_failure_not_a_raise(self, case: RunnerCase) -> None:
        result = case.runner.measure(case.broken, case.profile, tag="contract")
        assert result.kind is ResultKind.CANDIDATE_FAILED
        assert result.measurement is None and result.error

    def test_the_result_survives_the_wire(self, case: RunnerCase) -> None:
        result = case.runner.measure(case.artifact, case.profile)
        assert RunnerResult.from_json(result.to_json()) == result

    def test_describes_the_device(self, case: RunnerCase) -> None:
        where, info = case.runner.describe(case.profile)
        assert isinstance(where, str) and where
        assert info.get("machine") and info.get("cores")
        assert info.get("onnxruntime") or info.get("tvm")  # the device reports its runtimes

    def test_set_up_check_passes_for_a_reachable_device(self, case: RunnerCase) -> None:
        case.runner.check_available(case.profile)
