"""Apache TVM: the artifact is a compiled shared library (a Relax VM executable).

Build: ONNX -> Relax (``from_onnx``) -> the ``zero`` pipeline (fused TIR functions)
-> schedules -> ``tvm.compile`` for the profile's target -> ``export_library``
(cross-compiled when the profile names a cross compiler). Schedules come from:

- CPU (llvm): convolutions channels-last (NHWC), weights pre-packed into the layouts
  the tuned schedules read, and MetaSchedule. Untuned Relax is 50-100x slower than
  ONNX Runtime here (convolutions are left unscheduled), so each candidate's tasks are
  topped up to ``trials_per_task`` records in a tuning database shared by every
  candidate built for the same resolved target (``finalize`` asks for more). Pruned
  candidates share most layer shapes (``round_to`` limits them), so later candidates
  mostly reuse records. Tasks the budget does not reach keep TVM's default schedule.
  On a board (the ``rpc`` runner) the schedules are measured there.
- GPU (cuda): dlight's default GPU rules; there is no GPU here to tune on.

Every build that can run on this machine is checked against ONNX Runtime on a random
input; a mismatch fails the build (and so the trial) with the difference.

TVM 0.27 specifics (measured, see the shared facts file): targets are mappings, not
``"llvm -mcpu=.."`` strings; MetaSchedule needs ``num-cores``; its default builder
imports ``tvm.s_tir.tensor_intrin`` (45-60 s here, mostly CUDA intrinsics) in every
builder process, so a fast ``f_build`` is used; and apache-tvm-ffi must be 0.1.14.post0
(0.1.15.post2 segfaults in ``save_json``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprune.backends._base import Backend, BuildResult
from autoprune.errors import BackendError

if TYPE_CHECKING:
    import numpy as np

    from autoprune.export import OnnxArtifact
    from autoprune.measure import Measurement
    from autoprune.profiles import DeviceProfile, TvmSettings

INSTALL_HINT = "install it with `pip install -e .[tvm]` (apache-tvm 0.27 and its pinned apache-tvm-ffi)"
CROSS_HINTS = {"aarch64-linux-gnu-gcc": "apt-get install gcc-aarch64-linux-gnu"}
GPU_KINDS = ("cuda",)
# the machine names platform.machine() reports for a target triple's architecture
ARCH_ALIASES = {"aarch64": ("aarch64", "arm64"), "x86_64": ("x86_64", "amd64")}
INPUTS_SUFFIX = ".inputs.json"  # beside the library: input names, shapes and dtypes
EXPECTED_SUFFIX = ".expected.npz"  # beside a library built for another machine: ORT's outputs


def resolve_target(settings: TvmSettings) -> dict[str, Any]:
    """The profile's target with ``mcpu: host`` replaced and ``num-cores`` filled in."""
    target = dict(settings.target)
    if target.get("mcpu") == "host":
        import tvm

        target["mcpu"] = tvm.target.codegen.llvm_get_system_cpu()
    if target["kind"] == "llvm":
        target.setdefault("num-cores", settings.num_threads)
    return target


def target_arch(target: dict[str, Any]) -> str:
    """The machine the code runs on: the triple's first part, or this machine's."""
    triple = target.get("mtriple")
    return triple.split("-")[0] if triple else platform.machine()


def _raised_in(exc: BaseException) -> str:
    """Where in Python an error was raised: TVM's own messages often do not say, and a
    failed trial's reason is all a user has to go on."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" (raised in {Path(last.filename).parent.name}/{Path(last.filename).name}:{last.lineno}, {last.name})"


@contextlib.contextmanager
def _meta_schedule_logging():
    """MetaSchedule's loggers, quiet and configurable.

    Its console handler takes the ``tvm.s_tir.meta_schedule`` logger's level; at its
    default (DEBUG) every tuning round prints tables and XGBoost lines into the search.
    And its ``create_loggers`` re-configures that logger with the *names* of the handlers
    it already has: one without a name (pytest attaches its capture handlers to every
    non-propagating logger, and so may a user's application) fails every later tuning
    with "'NoneType' object has no attribute 'format'". Those are set aside while
    MetaSchedule configures its loggers, and put back after.
    """
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    logger.setLevel(logging.WARNING)
    unnamed = [h for h in logger.handlers if not h.get_name()]
    for handler in unnamed:
        logger.removeHandler(handler)
    try:
        yield
    finally:
        for handler in unnamed:
            logger.addHandler(handler)


def runs_here(target: dict[str, Any]) -> bool:
    """Can this machine load and run code built for ``target``? (GPUs: checked apart.)"""
    if target["kind"] != "llvm":
        return False
    arch = target_arch(target)
    return platform.machine().lower() in ARCH_ALIASES.get(arch, (arch,))


def database_dir(profile: DeviceProfile, target: dict[str, Any]) -> Path:
    """Where tuning records for ``target`` live (shared by candidates, studies, profiles)."""
    import tvm

    from autoprune._config import cache_dir, stable_hash

    assert profile.tvm is not None
    if profile.tvm.tuning.database:
        return Path(profile.tvm.tuning.database).expanduser()
    # Keyed by what makes a record valid: the resolved target (CPU model, cores) and the
    # TVM version, not the whole profile, so e.g. a changed measurement protocol keeps it.
    key = stable_hash({"target": target, "tvm": tvm.__version__})[:16]
    return cache_dir() / "tvm-tuning" / f"{target['kind']}-{target.get('mcpu', 'generic')}-{key}"


def gpu_status() -> str:
    """What this machine offers for CUDA, in words, for error messages."""
    try:
        import tvm

        built = str(tvm.support.libinfo().get("USE_CUDA", "OFF")).upper() not in ("OFF", "0", "")
        present = tvm.runtime.enabled("cuda") and tvm.cuda(0).exist
    except Exception as exc:  # noqa: BLE001 - only used to describe the machine
        return f"TVM cannot query CUDA ({type(exc).__name__}: {exc})"
    if present:
        return f"CUDA device 0 ({tvm.cuda(0).device_name})"
    driver = Path("/proc/driver/nvidia/version").exists()
    return (f"no CUDA device (TVM built with CUDA: {'yes' if built else 'no'}; "
            f"NVIDIA driver: {'loaded' if driver else 'not loaded'})")


def _light_tensor_intrin() -> None:
    """Make ``import tvm.s_tir.tensor_intrin`` register only the CPU intrinsics.

    MetaSchedule's TuneContext imports the package, whose ``__init__`` builds every
    CUDA/ROCm/Hexagon intrinsic: 45-60 s on this machine, once per process, for
    nothing when tuning for a CPU. The package object is created without running its
    ``__init__`` and only the x86 and ARM modules (the ones llvm schedule rules use)
    are loaded. Done once, before anything else imports it.
    """
    import importlib
    import importlib.util
    import types

    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        return
    pkg = types.ModuleType(name)
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    pkg.__package__ = name
    sys.modules[name] = pkg
    for sub in ("x86", "arm_cpu"):
        setattr(pkg, sub, importlib.import_module(f"{name}.{sub}"))


def _fast_build(mod, target, _params):
    """MetaSchedule builder without the tensor_intrin import of the default one."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def _export(cross_compiler: str, mod) -> str:
    """MetaSchedule export for a board: a shared library linked by the cross compiler
    (its default is a tar of object files, which the board would need a compiler for)."""
    from tvm.support import cc

    path = os.path.join(tempfile.mkdtemp(prefix="autoprune-ms-"), "candidate.so")
    mod.export_library(path, fcompile=cc.cross_compiler(cross_compiler))
    return path


def _records(database, mod, enough: int) -> int:
    """How many measured schedules of ``mod`` the database holds (counted up to ``enough``)."""
    if not database.has_workload(mod):
        return 0
    return len(database.get_top_k(database.commit_workload(mod), enough))


def task_key(task) -> str:
    """A tuning task's identity as the database matches it (structural)."""
    import tvm_ffi

    return str(tvm_ffi.structural_hash(task.dispatched[0]))


def task_cost(task) -> float:
    """What tuning a task is worth: its FLOPs times how often the model calls it (the
    order tasks are tuned in, largest first)."""
    from tvm.s_tir.analysis import estimate_tir_flops

    return estimate_tir_flops(task.dispatched[0]) * task.weight


ASKED_FILE = "autoprune-asked.json"  # task (structural hash) -> the most trials_per_task it was tuned to


def _asked(db_dir: Path) -> dict[str, int]:
    try:
        return json.loads((db_dir / ASKED_FILE).read_text())
    except (OSError, ValueError):
        return {}  # none yet, or half-written by a crash: the records still count


def _remember_asked(db_dir: Path, keys: set[str], trials_per_task: int) -> None:
    from autoprune._config import atomic_write_text

    # read again just before writing: another worker may have added to it meanwhile
    asked = _asked(db_dir)
    asked.update({k: max(asked.get(k, 0), trials_per_task) for k in keys})
    atomic_write_text(db_dir / ASKED_FILE, json.dumps(asked, sort_keys=True))


def _input_specs(model, batch_size: int) -> list[dict[str, Any]]:
    """Graph inputs (initializers excluded) with dynamic dims set to the batch size."""
    from onnx import helper

    inits = {i.name for i in model.graph.initializer}
    specs = []
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else batch_size for d in tt.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type).name
        specs.append({"name": inp.name, "shape": shape, "dtype": dtype})
    return specs


def parity(expected: list, got: list, settings: TvmSettings) -> tuple[float, float]:
    """Max |got - expected| over all outputs, and the bound the profile allows."""
    import numpy as np

    diff, scale = 0.0, 0.0
    for e, g in zip(expected, got, strict=True):
        diff = max(diff, float(np.max(np.abs(np.asarray(e, np.float64) - g))))
        scale = max(scale, float(np.max(np.abs(e))))
    return diff, settings.parity_atol + settings.parity_rtol * scale


def _save_arrays(path: Path, arrays: list) -> None:
    import numpy as np

    np.savez(path, *arrays)


def _load_arrays(path: Path) -> list:
    import numpy as np

    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def random_inputs(specs: list[dict[str, Any]], seed: int = 0) -> list:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s["shape"]).astype(s["dtype"]) for s in specs]


def load_library(path: str | Path, kind: str = "llvm"):
    """A Relax VM for a library built here, on CPU 0 or CUDA device 0.

    Loaded through a link of its own name: dlopen hands back the library already loaded
    under a path, even when the file there is new. Two candidates built one after the
    other into the same folder (the budget check's unpruned and most-pruned models; a
    member rebuilt at finalize) had the second's parity check run the first's code: "TVM
    output differs from ONNX Runtime by 3.96" (issue 29), whatever the tuning or layout.
    """
    import uuid

    import tvm
    from tvm import relax

    dev = tvm.cuda(0) if kind in GPU_KINDS else tvm.cpu(0)
    path = Path(path)
    alias = path.with_name(f".{path.stem}-{uuid.uuid4().hex}{path.suffix}")
    try:
        os.link(path, alias)
    except OSError:  # another file system, or links refused: a copy does as well
        shutil.copyfile(path, alias)
    try:
        lib = tvm.runtime.load_module(str(alias))
    finally:
        alias.unlink(missing_ok=True)  # the mapping stays; the name was only for dlopen
    return relax.VirtualMachine(lib, dev), dev


def run_library(vm, dev, inputs: list) -> list:
    """Run ``main`` once; numpy in, numpy out."""
    import tvm

    args = [tvm.runtime.tensor(x, dev) for x in inputs]
    return numpy_outputs(vm["main"](*args))


def numpy_outputs(out) -> list:
    """What ``main`` returned (one tensor, or a tuple of them) as a list of numpy arrays."""
    outs = out if isinstance(out, list | tuple) or type(out).__name__ == "Array" else [out]
    return [o.numpy() for o in outs]


def relax_module(onnx_path: str | Path, profile: DeviceProfile):
    """The ONNX file as the Relax module whose fused TIR functions are tuned and
    compiled for the profile's target, and its input specs."""
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    assert profile.tvm is not None
    target_dict = resolve_target(profile.tvm)
    model = onnx.load(str(onnx_path))
    specs = _input_specs(model, profile.batch_size)
    mod = from_onnx(model, shape_dict={s["name"]: s["shape"] for s in specs}, keep_params_in_input=False)
    cpu = target_dict["kind"] not in GPU_KINDS
    if cpu and profile.tvm.layout == "NHWC":  # see TvmSettings.layout
        mod = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]})(mod)
    with tvm.target.Target(target_dict):
        mod = tvm.transform.Sequential([
            relax.transform.DecomposeOpsForInference(),  # BatchNorm etc. into plain ops
            relax.transform.CanonicalizeBindings(),
            relax.get_pipeline("zero"),  # legalise and fuse: the TIR functions to schedule
        ])(mod)
        if cpu and profile.tvm.tuning.prepack_weights:
            # mark the weights as free to change layout: a tuned schedule may then read
            # them blocked (RewriteLayout), and _tune_and_apply folds them so
            mod = relax.transform.AttachAttrLayoutFreeBuffers()(mod)
    return mod, specs


def apply_database(mod, target, database, *, prepack: bool):
    """``mod`` with each task's fastest record in ``database`` applied (the rest keep
    TVM's default schedules); with ``prepack``, the weights folded into the layouts the
    schedules read."""
    import tvm
    from tvm import relax

    with target, database:
        mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
    if prepack:
        # the weights are constants: rewriting them into the schedules' layouts
        # happens once here, not at every inference
        with target:
            mod = tvm.transform.Sequential([relax.transform.SplitLayoutRewritePreproc(),
                                            relax.transform.FoldConstant()])(mod)
    return mod


class TvmBackend(Backend):
    """The artifact is a compiled shared library: a Relax VM executable for the profile's target."""

    name = "tvm"

    def check_available(self, profile: DeviceProfile, *, on_host: bool = True) -> None:
        assert profile.tvm is not None
        try:
            import tvm  # noqa: F401
        except ImportError as exc:
            raise BackendError(
                f"profile {profile.name!r} uses the tvm backend, but Apache TVM cannot be imported "
                f"({exc}). To fix: {INSTALL_HINT}, or choose an onnxruntime profile (`autoprune devices`)."
            ) from None
        settings = profile.tvm
        target = resolve_target(settings)
        cc = settings.cross_compiler
        if cc and shutil.which(cc) is None:
            hint = CROSS_HINTS.get(cc, f"install {cc} or set `tvm.cross_compiler` in the profile")
            raise BackendError(
                f"profile {profile.name!r} cross-compiles with {cc}, which is not on PATH. To fix: {hint}."
            )
        if not on_host:
            return  # timed on the device; the runner checks that it is reachable
        if target["kind"] in GPU_KINDS:
            status = gpu_status()
            if not status.startswith("CUDA device"):
                raise BackendError(
                    f"profile {profile.name!r} asks for a CUDA GPU (target {json.dumps(target)}), but this "
                    f"machine has {status}. To fix: run on a machine with an NVIDIA GPU, its driver and a "
                    "CUDA-enabled TVM (`pip install -e .[tvm]` ships one), or choose a CPU profile "
                    "(`autoprune devices`). Building the CUDA library needs no GPU; timing it does."
                )
        elif not runs_here(target):
            raise BackendError(
                f"profile {profile.name!r} builds for {target.get('mtriple')} "
                f"({target.get('mcpu', 'generic')}), but the `local` runner times candidates on this "
                f"{platform.machine()} machine, which cannot run that code. To fix: run autoprune on the "
                "device itself (with `cross_compiler: null` in a copy of the profile), or time it over TVM RPC "
                "with a profile whose `runner` is `rpc` (e.g. rpi4-tvm; see `autoprune devices`)."
            )

    def build(self, onnx: OnnxArtifact, profile: DeviceProfile, out_dir: Path, *,
              on_host: bool = True) -> BuildResult:
        # on_host or not, the library is for the profile's target; whether it can be
        # checked here depends on that target alone (``runs_here``)
        start = time.perf_counter()
        info: dict[str, Any] = {}
        try:
            path = self._build(onnx, profile, Path(out_dir), info)
        except Exception as exc:  # noqa: BLE001 - an unbuildable candidate fails its trial
            return BuildResult(None, f"{type(exc).__name__}: {exc}{_raised_in(exc)}",
                               time.perf_counter() - start, info)
        if "error" in info:  # built, but wrong: a failed build all the same
            return BuildResult(None, info.pop("error"), time.perf_counter() - start, info)
        return BuildResult(str(path), None, time.perf_counter() - start, info)

    def _build(self, onnx_art: OnnxArtifact, profile: DeviceProfile, out_dir: Path, info: dict[str, Any]) -> Path:
        import tvm

        assert profile.tvm is not None
        settings = profile.tvm
        target_dict = resolve_target(settings)
        target = tvm.target.Target(target_dict)
        info["target"] = json.dumps(target_dict, sort_keys=True)
        mod, specs = relax_module(onnx_art.path, profile)

        if target_dict["kind"] in GPU_KINDS:
            from tvm.s_tir import dlight

            with target:
                mod = dlight.ApplyDefaultSchedule(
                    dlight.gpu.Matmul(), dlight.gpu.GEMV(), dlight.gpu.Reduction(),
                    dlight.gpu.GeneralReduction(), dlight.gpu.Fallback(),
                )(mod)
            info["schedule"] = "dlight"
        else:
            untuned = mod
            mod = self._tune_and_apply(mod, target, target_dict, profile, info)

        t0 = time.perf_counter()
        out = self._compile(mod, target, settings, out_dir, specs)
        info["compile_s"] = round(time.perf_counter() - t0, 3)

        if runs_here(target_dict):
            diff, bound = self._parity(onnx_art.path, out, specs, settings)
            info["parity_max_abs_diff"] = diff
            if not diff <= bound and info.get("schedule") == "metaschedule":
                # A tuned schedule that computes other numbers never reaches a user: the
                # default schedules instead (slower, and right), said in the build's record
                # (trials.csv: build_schedule) and timed as built.
                out = self._compile(untuned, target, settings, out_dir, specs)
                info["schedule"] = f"default (the tuned build differed from ONNX Runtime by {diff:.3g})"
                info["tuned_parity_max_abs_diff"] = diff
                diff, bound = self._parity(onnx_art.path, out, specs, settings)
                info["parity_max_abs_diff"] = diff
            if not diff <= bound:  # also catches NaN
                info["error"] = (f"TVM output differs from ONNX Runtime by {diff:.3g} (allowed {bound:.3g}) "
                                 f"on a random input; target {info['target']}")
        else:
            # cannot run here: ONNX Runtime's answer goes beside the library, and the
            # device compares its own output with it before timing (see ``time``)
            expected = self._reference_outputs(onnx_art.path, specs)
            _save_arrays(out_dir / (out.name + EXPECTED_SUFFIX), expected)
            info["parity_max_abs_diff"] = None
        return out

    @staticmethod
    def _compile(mod, target, settings: TvmSettings, out_dir: Path, specs: list[dict[str, Any]]) -> Path:
        """Compile ``mod`` into ``out_dir/model.so`` (cross-compiled where the profile
        says), with its input specs beside it."""
        import tvm

        executable = tvm.compile(mod, target)
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / "model.so"
        out.unlink(missing_ok=True)  # a new file, never a rewrite of one a parity check has mapped
        fcompile = None
        if settings.cross_compiler:
            from tvm.support import cc

            fcompile = cc.cross_compiler(settings.cross_compiler)
        executable.export_library(str(out), fcompile=fcompile)
        (out_dir / (out.name + INPUTS_SUFFIX)).write_text(json.dumps(specs))
        return out

    def _tune_and_apply(self, mod, target, target_dict: dict[str, Any], profile: DeviceProfile,
                        info: dict[str, Any]):
        """Top up the tasks the database has too few records of (within budget), then
        apply the database, and fold the weights into the layouts the schedules read."""
        _light_tensor_intrin()
        from tvm.s_tir import meta_schedule as ms

        assert profile.tvm is not None
        tuning = profile.tvm.tuning
        db_dir = database_dir(profile, target_dict)
        db_dir.mkdir(parents=True, exist_ok=True)
        database = ms.database.JSONDatabase(work_dir=str(db_dir), module_equality="structural")
        tasks = ms.relax_integration.extract_tasks(mod, target)
        # A task is tuned once the database holds trials_per_task measured schedules of it
        # (finalize asks for more than the search). Records are counted, not just looked
        # up, so a task tuned briefly during the search is topped up, never started over.
        # Some tasks (a reshape, a small pooling) have fewer distinct schedules than that:
        # MetaSchedule stops short, so what was asked of a task is kept beside the records.
        asked = _asked(db_dir)
        keys = [task_key(t) for t in tasks]
        need = [0 if asked.get(k, 0) >= tuning.trials_per_task else
                tuning.trials_per_task - _records(database, t.dispatched[0], tuning.trials_per_task)
                for t, k in zip(tasks, keys, strict=True)]
        known = [t for t, n in zip(tasks, need, strict=True) if n <= 0]
        # Tuning measures schedules where the code runs: here, or on the board (rpc).
        can_tune = runs_here(target_dict) or profile.runner == "rpc"
        budget = tuning.max_trials if can_tune else 0
        todo = sorted(((t, n, k) for t, n, k in zip(tasks, need, keys, strict=True) if n > 0),
                      key=lambda tnk: -task_cost(tnk[0]))  # largest first
        chosen, chosen_keys, trials, most = [], set(), 0, 0
        for task, n, key in todo:
            if trials + n > budget:
                break
            chosen.append(task)
            chosen_keys.add(key)
            trials += n
            most = max(most, n)
        t0 = time.perf_counter()
        checks = None
        if chosen:
            database_written = database
            if runs_here(target_dict):
                # each task's fastest record is checked against its unscheduled function
                # before it is committed (tuned on a board, the board's parity check guards)
                from autoprune.backends.tvm_records import RecordChecker, RecordChecks, checking_database

                checks = RecordChecks()
                checker = RecordChecker(target, functools.partial(parity, settings=profile.tvm), chosen)
                database_written = checking_database(database, checker, checks)
            with _meta_schedule_logging(), tempfile.TemporaryDirectory(prefix="autoprune-tune-") as work:
                strategy = (ms.search_strategy.ReplayTrace() if tuning.strategy == "replay-trace" else
                            ms.search_strategy.EvolutionarySearch(
                                population_size=tuning.population,
                                init_min_unmeasured=max(8, tuning.population // 4),
                                genetic_num_iters=4,  # MetaSchedule's default
                            ))
                # num_threads: the search's own (sampling, evolving, the cost model), every
                # core of this machine; the schedules' cores are the target's num-cores
                contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                    chosen, work_dir=work, strategy=strategy, num_threads=os.cpu_count() or 1, seed=0,
                )
                ms.tune.tune_tasks(
                    tasks=contexts, task_weights=weights, work_dir=work,
                    max_trials_global=trials,
                    max_trials_per_task=most,
                    # the cost model is retrained between rounds of up to 16 trials
                    num_trials_per_iter=min(16, tuning.trials_per_task),
                    builder=self._tuning_builder(profile, tuning),
                    runner=self._tuning_runner(profile, tuning),
                    database=database_written,
                    cost_model="random" if tuning.strategy == "replay-trace" else "xgb",
                )
            _remember_asked(db_dir, chosen_keys, tuning.trials_per_task)
        info.update({
            "tasks": len(tasks),
            "tasks_reused": len(known),
            "tasks_tuned": len(chosen),
            "tasks_default": len(todo) - len(chosen),
            "tuning_trials": trials,
            "tuning_s": round(time.perf_counter() - t0, 3),
            "db_reuse_rate": round(len(known) / len(tasks), 4) if tasks else 1.0,
            "database": str(db_dir),
            "schedule": "metaschedule",
            "prepacked": tuning.prepack_weights,
            "tuned_on": ("board (rpc)" if profile.runner == "rpc" else "host") if chosen else None,
        })
        if checks is not None:
            info.update({"records_checked": checks.checked, "records_rejected": checks.rejected})
            if checks.reasons:
                info["records_rejected_why"] = checks.reasons[0]
        return apply_database(mod, target, database, prepack=tuning.prepack_weights)

    @staticmethod
    def _tuning_builder(profile: DeviceProfile, tuning):
        from tvm.s_tir import meta_schedule as ms

        assert profile.tvm is not None
        cc = profile.tvm.cross_compiler
        # two workers: compiling candidates is the slow part on a 2-core machine
        return ms.builder.LocalBuilder(f_build=_fast_build, f_export=functools.partial(_export, cc) if cc else None,
                                       timeout_sec=tuning.builder_timeout_s, max_workers=2)

    @staticmethod
    def _tuning_runner(profile: DeviceProfile, tuning):
        from tvm.s_tir import meta_schedule as ms

        if profile.runner != "rpc":
            return ms.runner.LocalRunner(timeout_sec=tuning.runner_timeout_s)
        assert profile.rpc is not None
        host, port, key = profile.rpc.resolved()
        # the board the candidates are timed on measures the schedules too: the same
        # tracker and key, one session at a time (a board's cores are what is tuned for)
        config = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=key,
                                     session_timeout_sec=int(tuning.runner_timeout_s))
        return ms.runner.RPCRunner(config, ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=50),
                                   max_workers=1)

    @staticmethod
    def _reference_outputs(onnx_path: str, specs: list[dict[str, Any]]) -> list:
        """ONNX Runtime's outputs for the seeded random input (the parity reference)."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
        return session.run(None, {s["name"]: x for s, x in zip(specs, random_inputs(specs), strict=True)})

    @classmethod
    def _parity(cls, onnx_path: str, library: Path, specs: list[dict[str, Any]], settings: TvmSettings) -> tuple[float, float]:
        """Max |TVM - ONNX Runtime| on a random input, and the allowed bound."""
        vm, dev = load_library(library)
        got = run_library(vm, dev, random_inputs(specs))
        return parity(cls._reference_outputs(onnx_path, specs), got, settings)

    def runs_here(self, profile: DeviceProfile) -> bool:
        assert profile.tvm is not None
        return runs_here(resolve_target(profile.tvm))

    def runtime_info(self, built: BuildResult, profile: DeviceProfile) -> dict[str, Any]:
        assert profile.tvm is not None
        # what the library was compiled for (``mcpu: host`` resolved), and how
        return {"target": resolve_target(profile.tvm), "build": built.info}

    def load(self, artifact_path: str | Path, profile: DeviceProfile,
             runtime: Mapping[str, Any] | None = None) -> Callable[[np.ndarray], list[np.ndarray]]:
        assert profile.tvm is not None
        try:
            import tvm
        except ImportError as exc:
            raise BackendError(f"this model needs Apache TVM ({exc}); {INSTALL_HINT}.") from None
        library = Path(artifact_path)
        target = dict((runtime or {}).get("target") or resolve_target(profile.tvm))
        if target["kind"] in GPU_KINDS:
            status = gpu_status()
            if not status.startswith("CUDA device"):
                raise BackendError(f"{library.name} is a CUDA library ({target}); this machine has {status}. "
                                   "Run it on a machine with an NVIDIA GPU.")
        elif not runs_here(target):
            raise BackendError(
                f"{library.name} was compiled for {target.get('mtriple')} ({target.get('mcpu', 'generic')}); it "
                f"cannot run on this {platform.machine()} machine. Copy the package to the device and run "
                f"`autoprune run` there, or load it with the TVM {tvm.__version__} runtime: "
                "`relax.VirtualMachine(tvm.runtime.load_module('model.so'), tvm.cpu())`."
            )
        vm, dev = load_library(library, target["kind"])
        main = vm["main"]

        def run(x: np.ndarray) -> list[np.ndarray]:
            return numpy_outputs(main(tvm.runtime.tensor(x, dev)))  # the copy back counts, as with ONNX Runtime

        return run

    def time(self, artifact_path: str, profile: DeviceProfile) -> Measurement:
        import tvm

        from autoprune.measure import timed_loop

        assert profile.tvm is not None
        kind = profile.tvm.target["kind"]
        specs = json.loads(Path(artifact_path + INPUTS_SUFFIX).read_text())
        vm, dev = load_library(artifact_path, kind)
        expected_path = Path(artifact_path + EXPECTED_SUFFIX)
        if expected_path.is_file():  # built elsewhere: check this device's answer first
            diff, bound = parity(_load_arrays(expected_path), run_library(vm, dev, random_inputs(specs)), profile.tvm)
            if not diff <= bound:
                raise ValueError(f"TVM output on the device differs from ONNX Runtime on the build host by "
                                 f"{diff:.3g} (allowed {bound:.3g}) on a random input")
        args = [tvm.runtime.tensor(x, dev) for x in random_inputs(specs)]
        main = vm["main"]
        if kind in GPU_KINDS:
            # inputs stay on the device and the output is not copied back: only the
            # kernels are timed, like ONNX Runtime with I/O binding
            def run_once():
                main(*args)
                dev.sync()
        else:
            def run_once():
                main(*args)
        return timed_loop(run_once, profile.measurement, profile.tvm.num_threads)
