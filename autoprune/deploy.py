"""Deploy packages: a chosen trial as files a user ships, and loading one back.

A package holds ``model.onnx`` (the exported candidate), the backend's artifact
(``model.opt.onnx`` for ONNX Runtime; ``model.so``, the compiled library, cross-compiled
for an ARM profile, plus ``model.so.inputs.json`` for TVM), ``model.pt2`` (the pruned PyTorch model as a
``torch.export`` program: ``torch.export.load`` needs no autoprune code) and
``manifest.json`` (plan, metrics, device profile and hash, versions, sha256 of every
file). :func:`run_package` refuses a package whose files do not match the manifest.
"""

from __future__ import annotations

import json
import os
import pickle
import platform
import shutil
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autoprune._config import atomic_write_text, chmod_shared, sha256_file
from autoprune.errors import ConfigError, ExportError, PackageError

if TYPE_CHECKING:
    from autoprune.results import SearchResult

SCHEMA = "autoprune.deploy/1"
VERSIONED = ("autoprune", "torch", "torch-pruning", "onnx", "onnxruntime", "optuna", "numpy",
             "apache-tvm", "apache-tvm-ffi")


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def rebuild_model(result: SearchResult, trial: int, final: bool = True):
    """The trial's pruned, fine-tuned PyTorch model, rebuilt from its plan and weights
    (the weights of ``autoprune finalize`` when it ran and ``final`` is true)."""
    import torch

    from autoprune import pruning
    from autoprune.tasks import load_task

    trial_dir = result.study_dir / "trials" / str(trial)
    plan_file, state_file = trial_dir / "plan.json", trial_dir / "state.pt"
    if final and (trial_dir / "final" / "state.pt").is_file():
        state_file = trial_dir / "final" / "state.pt"
    if not plan_file.is_file() or not state_file.is_file():
        raise ExportError(f"trial {trial}'s files are missing from {trial_dir}; it cannot be exported.")
    task = load_task(result.identity["task"], result.identity.get("data_dir"))
    plan = pruning.PruningPlan.from_dict(json.loads(plan_file.read_text()))
    # Only the layer shapes matter here (the weights are loaded below).
    shape_plan = plan.shape_only()
    model, _ = pruning.apply(task.model, shape_plan, task.example_input(1), ignored_layers=task.ignored_layers)
    try:
        model.load_state_dict(torch.load(state_file, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, pickle.UnpicklingError) as exc:
        # weights_only=True: a state file holding anything but tensors is refused, not run
        first = str(exc).strip().splitlines()[0]
        raise ExportError(f"trial {trial}'s saved weights {state_file} cannot be loaded: {first}") from None
    return model.eval(), task, plan


def _final_row(result: SearchResult, trial: int) -> dict[str, Any] | None:
    """The trial's row of final.csv when it was finalized, else None."""
    import pandas as pd

    table = result.study_dir / "final.csv"
    if not (table.is_file() and (result.study_dir / "trials" / str(trial) / "final" / "model.onnx").is_file()):
        return None
    rows = pd.read_csv(table)
    rows = rows[rows["trial"] == trial]
    return None if rows.empty else json.loads(rows.iloc[0].to_json())


def export_trial(result: SearchResult, trial: int, out: Path) -> Path:
    """Write trial ``trial`` of ``result`` as a deploy package in ``out`` (must be new or empty).

    Raises:
        ExportError: no such trial, the trial did not complete, or ``out`` is not empty.
    """
    import torch

    from autoprune import backends
    from autoprune.export import INPUT_NAME, OUTPUT_NAME
    from autoprune.profiles import load_profile

    df = result.trials
    rows = df[df["trial"] == trial] if not df.empty else df
    complete = sorted(int(t) for t in df[df["state"] == "COMPLETE"]["trial"]) if not df.empty else []
    if rows.empty:
        raise ExportError(f"study {result.identity['study']!r} has no trial {trial}. Complete trials: {complete or 'none'}.")
    row = rows.iloc[0]
    if row["state"] != "COMPLETE":
        raise ExportError(
            f"trial {trial} did not complete ({row['state']}, failed at {row['fail_stage']}: "
            f"{row['fail_reason']}); it has no model to export. Complete trials: {complete or 'none'}."
        )
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not empty; give a new folder so nothing is overwritten.")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
        chmod_shared(staging, 0o777)  # mkdtemp makes 0700; a package is meant to be shared
    except OSError as exc:
        raise ExportError(f"cannot write into {parent}: {exc.strerror}.") from None

    try:
        model, task, plan = rebuild_model(result, trial)
        profile = load_profile(result.identity["device"])
        if profile.hash != result.identity["profile_hash"]:
            raise ExportError(
                f"device profile {profile.name!r} changed since the search (hash differs); "
                "its latency figures would not describe this package."
            )
        trial_dir = result.study_dir / "trials" / str(trial)
        final = _final_row(result, trial)  # `autoprune finalize` ran: package its weights
        onnx_src = trial_dir / ("final/model.onnx" if final else "model.onnx")
        trial_attrs = result.study.trials[trial].user_attrs
        if final is None and sha256_file(onnx_src) != trial_attrs["onnx_sha256"]:
            raise ExportError(f"{onnx_src} changed since the trial measured it (sha256 differs).")
        shutil.copyfile(onnx_src, staging / "model.onnx")

        backend = backends.create(profile.backend)
        from autoprune.export import OnnxArtifact

        art = OnnxArtifact(str(staging / "model.onnx"), trial_attrs["onnx_sha256"], trial_attrs["arch_hash"],
                           int(trial_attrs["onnx_bytes"]), int(trial_attrs["macs"]), int(trial_attrs["params"]),
                           int(trial_attrs["nonzero_params"]), float(trial_attrs["parity_max_abs_diff"]), (), ())
        built = backend.build(art, profile, staging)
        if built.error:
            raise ExportError(f"building the {profile.backend} artifact failed: {built.error}")

        example = task.example_input(profile.batch_size)
        with torch.no_grad():
            program = torch.export.export(model, (example,))
        torch.export.save(program, staging / "model.pt2")
        with torch.no_grad():
            expected = model(example).numpy()
        artifact = staging / Path(built.artifact_path).name
        parity: float | None = None  # a library for another machine cannot be run here
        if profile.backend == "tvm":
            from autoprune.backends.tvm import load_library, resolve_target, run_library, runs_here

            if runs_here(resolve_target(profile.tvm)):
                vm, dev = load_library(artifact)
                parity = float(np.max(np.abs(run_library(vm, dev, [example.numpy()])[0] - expected)))
        else:
            got = _ort_session(artifact, profile.to_dict()).run(None, {INPUT_NAME: example.numpy()})[0]
            parity = float(np.max(np.abs(got - expected)))
        runtime: dict[str, Any] = {"backend": profile.backend, "artifact": artifact.name}
        if profile.backend == "tvm":
            from autoprune.backends.tvm import resolve_target

            runtime["target"] = resolve_target(profile.tvm)  # what the library was compiled for
            runtime["build"] = built.info

        base = result.baseline
        manifest: dict[str, Any] = {
            "schema": SCHEMA,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "study": result.identity["study"],
            "trial": int(trial),
            "task": result.identity["task"],
            "input": {"name": INPUT_NAME, "shape": list(example.shape), "dtype": "float32"},
            "output": {"name": OUTPUT_NAME, "shape": list(expected.shape)},
            "plan": plan.to_dict(),
            "metrics": {
                "accuracy": float(row["accuracy"]),
                "baseline_accuracy": None if base is None else float(base["accuracy"]),
                "latency_ms": float(row["latency_ms"]),
                "latency_p90_ms": float(row["latency_p90_ms"]),
                "latency_ci95_ms": [float(row["latency_ci_low_ms"]), float(row["latency_ci_high_ms"])],
                "latency_cv": float(row["latency_cv"]),
                "latency_runs": int(row["latency_runs"]),
                "baseline_latency_ms": None if base is None else float(base["latency_ms"]),
                "speedup": float(row["speedup"]),
                "size_mb": float(row["size_mb"]),
                "macs": int(row["macs"]),
                "params": int(row["params"]),
                "latency_budget_ms": result.budget_ms,
                "export_parity_max_abs_diff": parity,
            },
            "finalized": final,  # longer fine-tune and paired re-measurement, or null
            "device": {"name": profile.name, "hash": profile.hash, "profile": profile.to_dict()},
            "runtime": runtime,
            "versions": _versions(),
            "files": {},
        }
        for f in sorted(staging.iterdir()):
            manifest["files"][f.name] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
        atomic_write_text(staging / "manifest.json", json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _ort_session(path: Path, profile: dict[str, Any]):
    import onnxruntime as ort

    settings = profile.get("onnxruntime", {})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(settings.get("intra_op_threads", 1))
    opts.inter_op_num_threads = int(settings.get("inter_op_threads", 1))
    opts.log_severity_level = 3
    available = ort.get_available_providers()
    providers = [p for p in settings.get("providers", ["CPUExecutionProvider"]) if p in available]
    if not providers:
        raise PackageError(
            f"the package needs {settings.get('providers')}, but this onnxruntime offers {available}."
        )
    return ort.InferenceSession(str(path), opts, providers=providers)


def _tvm_runner(library: Path, target: dict[str, Any], x: np.ndarray):
    """Load a TVM library if it was built for this machine; say where it runs otherwise."""
    from autoprune.backends.tvm import GPU_KINDS, gpu_status, load_library, runs_here

    try:
        import tvm
    except ImportError as exc:
        raise PackageError(f"this package needs Apache TVM ({exc}); install it with `pip install -e .[tvm]`.") from None
    if target["kind"] in GPU_KINDS:
        status = gpu_status()
        if not status.startswith("CUDA device"):
            raise PackageError(f"{library.name} is a CUDA library ({target}); this machine has {status}. "
                               "Run it on a machine with an NVIDIA GPU.")
    elif not runs_here(target):
        raise PackageError(
            f"{library.name} was compiled for {target.get('mtriple')} ({target.get('mcpu', 'generic')}); it cannot "
            f"run on this {platform.machine()} machine. Copy the package to the device and run "
            f"`autoprune run` there, or load it with the TVM {tvm.__version__} runtime: "
            "`relax.VirtualMachine(tvm.runtime.load_module('model.so'), tvm.cpu())`."
        )
    vm, dev = load_library(library, target["kind"])
    arg = tvm.runtime.tensor(x, dev)
    main = vm["main"]

    def run_once():
        out = main(arg)
        return out.numpy()  # includes the copy back to the host, like ONNX Runtime's run

    return run_once


def verify_package(folder: Path) -> dict[str, Any]:
    """Read the manifest and check every file's sha256; return the manifest."""
    folder = Path(folder)
    mf = folder / "manifest.json"
    if not mf.is_file():
        raise PackageError(f"{folder} is not a deploy package (no manifest.json). Make one with `autoprune export`.")
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError as exc:
        raise PackageError(f"{mf} is not valid JSON ({exc}); the package is damaged.") from None
    if manifest.get("schema") != SCHEMA:
        raise PackageError(f"{mf} has schema {manifest.get('schema')!r}; this autoprune reads {SCHEMA!r}.")
    for name, info in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise PackageError(f"{path} is listed in the manifest but missing; the package is incomplete.")
        if sha256_file(path) != info["sha256"]:
            raise PackageError(f"{path} does not match its sha256 in the manifest: it was modified. Refusing to load it.")
    return manifest


def run_package(folder: str | Path, input_path: str | Path | None = None, runs: int = 100) -> dict[str, Any]:
    """Verify a package, run it with plain ONNX Runtime (or the TVM runtime), and time it.

    Returns:
        A dict with ``output`` (the array), ``output_shape`` and latency figures.
    """
    folder = Path(folder)
    manifest = verify_package(folder)
    runtime = manifest["runtime"]
    if runtime["backend"] not in ("onnxruntime", "tvm"):
        raise PackageError(f"this autoprune runs onnxruntime and tvm packages; this one is {runtime['backend']!r}.")
    spec = manifest["input"]
    if input_path is None:
        x = np.random.default_rng(0).standard_normal(spec["shape"]).astype(np.float32)
    else:
        try:
            x = np.load(input_path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read input {input_path}: {exc}. Give a .npy file made with numpy.save.") from None
        if list(x.shape) != spec["shape"]:
            raise ConfigError(f"input {input_path} has shape {list(x.shape)}; the model takes {spec['shape']}.")
        x = x.astype(np.float32, copy=False)
    if runtime["backend"] == "tvm":
        run_once = _tvm_runner(folder / runtime["artifact"], runtime["target"], x)
    else:
        session = _ort_session(folder / runtime["artifact"], manifest["device"]["profile"])
        feeds = {spec["name"]: x}

        def run_once():
            return session.run(None, feeds)[0]
    out = run_once()
    for _ in range(5):
        run_once()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run_once()
        times.append(time.perf_counter() - t0)
    return {
        "output": out,
        "output_shape": list(out.shape),
        "latency_median_ms": float(np.median(times) * 1e3),
        "latency_p90_ms": float(np.percentile(times, 90) * 1e3),
        "runs": runs,
        "manifest": manifest,
    }
