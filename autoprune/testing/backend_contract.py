"""The contract every backend keeps, as a test suite that each backend's tests run.

As Optuna ships ``optuna/testing/pytest_storages.py``, autoprune ships this suite: a
new backend subclasses :class:`BackendContract` in a test module and provides the
``case`` fixture; pytest then runs every test below against it, on real models and
the real runtime.

Example::

    import pytest
    from autoprune.testing.backend_contract import BackendCase, BackendContract

    class TestOrtBackend(BackendContract):
        @pytest.fixture
        def case(self, tmp_path):
            return BackendCase.digits("x86-ort", tmp_path)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from autoprune import backends
from autoprune.backends import Backend
from autoprune.errors import BackendError
from autoprune.export import OnnxArtifact
from autoprune.profiles import DeviceProfile


@dataclass(frozen=True)
class BackendCase:
    """A backend, a profile it builds for, and an exported model with a known output."""

    backend: Backend
    profile: DeviceProfile
    onnx: OnnxArtifact
    example: np.ndarray  # the model's input
    expected: np.ndarray  # the model's output on it (PyTorch)
    atol: float = 1e-3

    @classmethod
    def digits(cls, profile: str | Path | DeviceProfile, folder: Path, atol: float = 1e-3) -> BackendCase:
        """The built-in ``digits`` network, exported into ``folder``, for ``profile``."""
        import torch

        from autoprune.export import to_onnx
        from autoprune.profiles import load_profile
        from autoprune.tasks import load_task

        prof = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
        task = load_task("digits")
        x = task.example_input(prof.batch_size)
        onnx = to_onnx(task.model, x, Path(folder) / "model.onnx", 1e-4)
        with torch.no_grad():
            expected = task.model.eval()(x).numpy()
        return cls(backends.create(prof.backend), prof, onnx, x.numpy(), expected, atol)


class BackendContract:
    """Every backend: builds, fails as a value, loads what it built, times it, describes it."""

    @pytest.fixture
    def case(self) -> BackendCase:  # pragma: no cover - provided by the subclass
        raise NotImplementedError("a BackendContract subclass provides the `case` fixture")

    def test_is_registered_under_its_name(self, case: BackendCase) -> None:
        assert case.backend.name in backends.available()
        assert type(backends.create(case.backend.name)) is type(case.backend)

    def test_builds_an_artifact_into_the_folder(self, case: BackendCase, tmp_path: Path) -> None:
        built = case.backend.build(case.onnx, case.profile, tmp_path)
        assert built.error is None, built.error
        assert built.artifact_path is not None and Path(built.artifact_path).is_file()
        assert Path(built.artifact_path).parent == tmp_path
        assert built.build_s >= 0
        json.dumps(built.info)  # recorded on the trial: must be JSON

    def test_a_broken_model_is_a_failed_build_not_a_raise(self, case: BackendCase, tmp_path: Path) -> None:
        broken = tmp_path / "broken.onnx"
        broken.write_bytes(b"not an onnx model")
        built = case.backend.build(replace(case.onnx, path=str(broken)), case.profile, tmp_path)
        assert built.artifact_path is None
        assert isinstance(built.error, str) and built.error

    def test_what_it_builds_runs_here_and_matches_pytorch(self, case: BackendCase, tmp_path: Path) -> None:
        built = case.backend.build(case.onnx, case.profile, tmp_path)
        assert built.artifact_path is not None, built.error
        runtime = case.backend.runtime_info(built, case.profile)
        json.dumps(runtime)  # goes into a deploy manifest
        if not case.backend.runs_here(case.profile):
            with pytest.raises(BackendError):
                case.backend.load(built.artifact_path, case.profile, runtime)
            return
        run = case.backend.load(built.artifact_path, case.profile, runtime)
        [got] = run(case.example)  # a list: one array per output
        assert got.shape == case.expected.shape
        assert np.max(np.abs(got - case.expected)) <= case.atol

    def test_times_a_built_artifact_under_the_protocol(self, case: BackendCase, tmp_path: Path) -> None:
        if not case.backend.runs_here(case.profile):
            pytest.skip(f"{case.profile.name} builds for another machine: timed on the device (runner contract)")
        built = case.backend.build(case.onnx, case.profile, tmp_path)
        assert built.artifact_path is not None, built.error
        m = case.backend.time(built.artifact_path, case.profile)
        assert 0 < m.min_ms <= m.median_ms <= m.p90_ms
        assert m.ci_low_ms <= m.median_ms <= m.ci_high_ms
        assert m.runs >= case.profile.measurement.min_repeats
        assert m.threads == case.profile.threads

    def test_an_artifact_that_cannot_load_raises_when_timed(self, case: BackendCase, tmp_path: Path) -> None:
        # on the device side a raise is the runner's to turn into a failed candidate
        missing = tmp_path / "missing-artifact"
        with pytest.raises(Exception):  # noqa: B017,PT011 - each runtime raises its own type
            case.backend.time(str(missing), case.profile)
