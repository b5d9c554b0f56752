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
