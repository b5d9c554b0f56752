"""Tuning records that compute the right numbers before they enter the database (issue 29).

MetaSchedule measures a schedule's speed, never its answer, and commits every record it
measures; ``MetaScheduleApplyDatabase`` then uses each task's fastest. The database the
tuner writes through here (:func:`checking_database`) runs a record before committing it
whenever it would become its task's fastest: its schedule, compiled for the target, and
the task's unscheduled function, compiled for plain ``llvm``, on the same seeded random
inputs. A record that disagrees (or does not build or run) is left out and counted. A
record slower than its task's fastest is committed unchecked: records are never removed,
so it can never be the one applied, and checking every record would double the tuning
cost (each check is a compile, 0.15-0.7 s here). Records from before this check are
still covered by the whole model's parity check at build time, and its fallback to the
default schedules (``TvmBackend._build``).

This module imports TVM: only the TVM backend imports it, when it tunes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm
import tvm_ffi
from tvm.s_tir import Schedule
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.database import PyDatabase
from tvm.ir.utils import derived_object

log = logging.getLogger("autoprune")

FAILED_S = 1e10  # MetaSchedule's run time for a candidate that did not build or run (kMaxMeanTime)


@dataclass
class RecordChecks:
    """What the check did during one tuning step (the build's record shows it)."""

    checked: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)


def mean_run_s(record) -> float | None:
    """A record's mean measured time, or None for a failed measurement."""
    secs = [float(s) for s in (record.run_secs or [])]
    if not secs or min(secs) >= FAILED_S:
        return None
    return sum(secs) / len(secs)


def _inputs(mod) -> list[np.ndarray]:
    """Seeded random values for every argument of a task's function (outputs included:
    both builds start from the same buffers)."""
    rng = np.random.default_rng(0)
    out = []
    for arg in ms.arg_info.ArgInfo.from_prim_func(mod["main"]):
        shape = [int(s) for s in arg.shape]
        out.append(rng.standard_normal(shape).astype(str(arg.dtype)))
    return out


def _run(lib, inputs: list[np.ndarray]) -> list[np.ndarray]:
    args = [tvm.runtime.tensor(x) for x in inputs]
    lib(*args)
    return [a.numpy() for a in args]


def checkable(mod) -> bool:
    """Whether random values are valid inputs of a task: float arguments only (a random
    integer can be an index out of range)."""
    return all(str(a.dtype).startswith(("float", "bfloat")) for a in ms.arg_info.ArgInfo.from_prim_func(mod["main"]))


class RecordChecker:
    """Runs a record's schedule against its task's unscheduled function."""

    def __init__(self, target, compare: Callable[[list, list], tuple[float, float]], tasks: list | None = None):
        self.target = target
        self.compare = compare  # (expected, got) -> (max difference, bound): the backend's parity rule
        self._reference: dict[int, list[np.ndarray]] = {}  # task (structural hash) -> its outputs
        # for messages: MetaSchedule's task names (fused_conv2d_add_relu, ...) by structural hash
        self._names = {int(tvm_ffi.structural_hash(t.dispatched[0])): t.task_name for t in tasks or []}

    def name(self, mod) -> str:
        return self._names.get(int(tvm_ffi.structural_hash(mod)), "a task")

    def reference(self, mod) -> list[np.ndarray]:
        key = int(tvm_ffi.structural_hash(mod))
        if key not in self._reference:
            self._reference[key] = _run(tvm.compile(mod, tvm.target.Target("llvm")), _inputs(mod))
        return self._reference[key]

    def difference(self, record) -> tuple[float, float]:
        """Max |scheduled - unscheduled| over the task's buffers, and the bound allowed."""
        mod = record.workload.mod
        sch = Schedule(mod)
        record.trace.apply_to_schedule(sch, remove_postproc=False)
        got = _run(tvm.compile(sch.mod, self.target), _inputs(mod))
        return self.compare(self.reference(mod), got)


def checking_database(inner, checker: RecordChecker, checks: RecordChecks):
    """``inner`` (a MetaSchedule database) behind a check of the records committed to it."""
    return _CheckingDatabase(inner, checker, checks)


@derived_object
class _CheckingDatabase(PyDatabase):
    def __init__(self, inner, checker: RecordChecker, checks: RecordChecks):
        super().__init__()
        self.inner, self.checker, self.checks = inner, checker, checks

    def has_workload(self, mod) -> bool:
        return self.inner.has_workload(mod)

    def commit_workload(self, mod):
        return self.inner.commit_workload(mod)

    def commit_tuning_record(self, record) -> None:
        if self._admits(record):
            self.inner.commit_tuning_record(record)

    def get_top_k(self, workload, top_k: int) -> list[Any]:
        return self.inner.get_top_k(workload, top_k)

    def get_all_tuning_records(self) -> list[Any]:
        return self.inner.get_all_tuning_records()

    def __len__(self) -> int:
        return len(self.inner)

    def _admits(self, record) -> bool:
        mine = mean_run_s(record)
        if mine is None or not checkable(record.workload.mod):
            return True  # never applied (failed), or not checkable here: the model's parity check covers it
        best = self.inner.get_top_k(record.workload, 1)
        fastest = mean_run_s(best[0]) if best else None
        if fastest is not None and fastest <= mine:
            return True  # slower than a checked record: never the one applied
        self.checks.checked += 1
        try:
            diff, bound = self.checker.difference(record)
        except Exception as exc:  # noqa: BLE001 - a schedule that does not build or run here is not kept
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            diff, bound, why = float("nan"), 0.0, f"does not build or run here ({type(exc).__name__}: {first})"
        else:
            why = f"differs from the unscheduled function by {diff:.3g} (allowed {bound:.3g})"
        if diff <= bound:
            return True
        self.checks.rejected += 1
        self.checks.reasons.append(why)
        log.warning("autoprune: a tuned schedule of %s was not recorded: it %s",
                    self.checker.name(record.workload.mod), why)
        return False
