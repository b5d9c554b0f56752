from __future__ import annotations

import dataclasses

import pytest

from autoprune import backends, runners
from autoprune.errors import BackendError
from autoprune.export import to_onnx
from autoprune.profiles import OrtSettings, load_profile
from autoprune.runners import ResultKind


@pytest.fixture(scope="module")
def onnx_model(digits_task, tmp_path_factory):
    return to_onnx(digits_task.model, digits_task.example_input(1), tmp_path_factory.mktemp("m") / "m.onnx", 1e-4)


def test_ort_build_and_local_runner_measure(onnx_model, tmp_path):
    profile = load_profile("x86-ort")
    backend = backends.create(profile.backend)
    built = backend.build(onnx_model, profile, tmp_path)
    assert built.error is None and built.artifact_path.endswith("model.opt.onnx")
    result = runners.create("local").measure(built.artifact_path, profile)
    assert result.error is None, result.error
    assert result.kind is ResultKind.OK
    m = result.measurement
    assert 0 < m.min_ms <= m.median_ms <= m.p90_ms
    assert m.runs >= profile.measurement.min_repeats * profile.measurement.sessions
    assert m.sessions == profile.measurement.sessions
    assert m.threads == profile.onnxruntime.intra_op_threads


def test_build_failure_is_a_value_not_a_raise(tmp_path, onnx_model):
    profile = load_profile("x86-ort")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    built = backends.create("onnxruntime").build(dataclasses.replace(onnx_model, path=str(broken)), profile, tmp_path)
    assert built.artifact_path is None and built.error


def test_runner_reports_a_failing_artifact(tmp_path):
    profile = load_profile("x86-ort")
    result = runners.create("local").measure(str(tmp_path / "missing.onnx"), profile)
    assert result.measurement is None and result.kind is ResultKind.CANDIDATE_FAILED
    assert "NoSuchFile" in result.error and "missing.onnx" in result.error


def test_runner_enforces_its_time_limit(onnx_model, tmp_path):
    profile = load_profile("x86-ort")
    built = backends.create("onnxruntime").build(onnx_model, profile, tmp_path)
    # 0.05 s is less than the timing process needs just to start
    slow = dataclasses.replace(profile, measurement=dataclasses.replace(profile.measurement, timeout_s=0.05))
    result = runners.create("local").measure(built.artifact_path, slow)
    assert result.measurement is None and "timed out after 0.05 s" in result.error
    assert result.kind is ResultKind.TIMED_OUT


def test_missing_provider_says_what_was_asked_and_what_exists():
    profile = dataclasses.replace(
        load_profile("x86-ort"), onnxruntime=OrtSettings(providers=("CUDAExecutionProvider",))
    )
    with pytest.raises(BackendError, match=r"asks for CUDAExecutionProvider.*offers \[.*CPUExecutionProvider.*onnxruntime-gpu"):
        backends.create("onnxruntime").check_available(profile)
