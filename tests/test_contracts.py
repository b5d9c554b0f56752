"""Every backend and runner on this machine runs the contract suites that autoprune
ships (``autoprune.testing.backend_contract`` / ``runner_contract``). TVM's backend runs
them in test_tvm.py, the rpc runner and the emulated board in test_remote.py."""

from __future__ import annotations

import pytest

from autoprune.testing.backend_contract import BackendCase, BackendContract
from autoprune.testing.runner_contract import RunnerCase, RunnerContract


class TestOrtBackend(BackendContract):
    @pytest.fixture(scope="class")
    @classmethod
    def case(cls, tmp_path_factory):
        return BackendCase.digits("x86-ort", tmp_path_factory.mktemp("ort-backend"))


class TestLocalRunner(RunnerContract):
    @pytest.fixture(scope="class")
    @classmethod
    def case(cls, tmp_path_factory):
        return RunnerCase.digits("x86-ort", tmp_path_factory.mktemp("local-runner"))


def test_a_backend_registered_by_name_is_created_by_name():
    from autoprune import backends
    from autoprune.errors import ConfigError

    backends.register("ort-again", "autoprune.backends.onnxruntime:OrtBackend")
    try:
        assert "ort-again" in backends.available()
        assert type(backends.create("ort-again")).__name__ == "OrtBackend"
    finally:
        backends._registry._entries.pop("ort-again")
    with pytest.raises(ConfigError, match=r"unknown backend 'nope'; available: onnxruntime, tvm"):
        backends.create("nope")
    with pytest.raises(ConfigError, match="give the class as 'package.module:Class'"):
        backends.register("bad", "no-colon")
