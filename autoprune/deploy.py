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
import platform
import shutil
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autoprune._config import atomic_write_text, chmod_shared, scratch_dir, sha256_file
from autoprune.device import Device
from autoprune.errors import BackendError, ConfigError, ExportError, PackageError, first_line
from autoprune.trials import TrialFiles

if TYPE_CHECKING:
    from autoprune.results import SearchResult

SCHEMA = "autoprune.deploy/1"
CHECK_FILE = "check.npz"  # validation inputs and the float model's outputs (`autoprune run` compares)
CHECK_EXAMPLES = 8
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


def _figures(row, base, final: dict[str, Any] | None) -> dict[str, Any]:
    """Accuracy and latency for the manifest: the final ones when the trial was
    finalized (full fine-tune, whole validation set, paired timing), else the search's;
    ``fidelity`` says which."""
    from autoprune.results import final_fidelity

    if final is not None and "final_latency_p90_ms" in final:
        return {
            "fidelity": final_fidelity(final),
            "accuracy": float(final["final_accuracy"]),
            "baseline_accuracy": float(final["baseline_accuracy"]),
            "latency_ms": float(final["final_latency_ms"]),
            "latency_p90_ms": float(final["final_latency_p90_ms"]),
            "latency_ci95_ms": [float(final["final_latency_ci_low_ms"]), float(final["final_latency_ci_high_ms"])],
            "latency_cv": float(final["final_latency_cv"]),
            "latency_runs": int(final["final_latency_runs"]),
            "baseline_latency_ms": float(final["baseline_latency_ms"]),
            "speedup": float(final["paired_speedup"]),
        }
    return {
        "fidelity": str(row.get("fidelity") or "search"),
        "accuracy": float(row["accuracy"]),
        "baseline_accuracy": None if base is None else float(base["accuracy"]),
        "latency_ms": float(row["latency_ms"]),
        "latency_p90_ms": float(row["latency_p90_ms"]),
        "latency_ci95_ms": [float(row["latency_ci_low_ms"]), float(row["latency_ci_high_ms"])],
        "latency_cv": float(row["latency_cv"]),
        "latency_runs": int(row["latency_runs"]),
        "baseline_latency_ms": None if base is None else float(base["latency_ms"]),
        "speedup": float(row["speedup"]),
    }


def _float_accuracy(row, final: dict[str, Any] | None) -> float | None:
    """A quantized model's float model's accuracy, at the same fidelity as ``accuracy``."""
    value = final.get("final_float_accuracy") if final is not None else row.get("float_accuracy")
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)


def _check_inputs(task, batch: int) -> np.ndarray:
    """The first validation inputs, a whole number of batches (at least one)."""
    n = max(batch, CHECK_EXAMPLES // batch * batch)
    x = task.val.first(n)[0].numpy().astype(np.float32)
    if len(x) < n:  # a tiny validation split: repeat it to fill the batch
        x = np.resize(x, (n, *x.shape[1:])).astype(np.float32)
    return x


def check_agreement(run, inputs: np.ndarray, expected: list[np.ndarray], batch: int,
                    names: list[str] | None = None) -> dict[str, Any]:
    """How the artifact's outputs (``run``: one batch in, a list of outputs out) follow
    ``expected`` (one array per output): max |difference| over all of them, per output
    when there are several (``per_output``), and for class scores in the first output
    the share of examples with the same top class."""
    runs = [run(inputs[i:i + batch]) for i in range(0, len(inputs), batch)]
    if any(len(r) != len(expected) for r in runs):
        raise PackageError(f"the artifact returns {len(runs[0])} outputs; the float model returned {len(expected)}: "
                           "the package is damaged or not autoprune's.")
    got = [np.concatenate([r[k] for r in runs]) for k in range(len(expected))]
    diffs = [float(np.max(np.abs(g - e))) if g.size else 0.0 for g, e in zip(got, expected, strict=True)]
    out: dict[str, Any] = {"examples": len(got[0]), "max_abs_diff": max(diffs)}
    if len(expected) > 1:
        out["per_output"] = dict(zip(names or [str(k) for k in range(len(expected))], diffs, strict=True))
    first, want = got[0], expected[0]
    if first.ndim == 2 and first.shape[1] > 1:
        out["top1_agreement"] = float(np.mean(first.argmax(1) == want.argmax(1)))
    return out


def _check_arrays(arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    if len(arrays) == 1:
        return {"float_outputs": arrays[0]}
    return {f"float_outputs_{k}": a for k, a in enumerate(arrays)}


def _export_program(model, task, batch: int):
    """``model.pt2``: the model as a ``torch.export`` program that takes any batch size
    where the model allows it (traced at batch 2: a batch of 1 would be specialised),
    else the profile's batch only; and which (``"dynamic"`` or the size)."""
    import torch

    try:
        with torch.no_grad():
            dims = ({0: torch.export.Dim("batch", min=1, max=1 << 16)},)
            return torch.export.export(model, (task.example_input(2),), dynamic_shapes=dims), "dynamic"
    except Exception:  # noqa: BLE001 - the model fixes its batch somewhere (a reshape): keep the profile's
        with torch.no_grad():
            return torch.export.export(model, (task.example_input(batch),)), batch


def export_trial(result: SearchResult, trial: int, out: Path) -> Path:
    """Write trial ``trial`` of ``result`` as a deploy package in ``out`` (must be new or empty).

    Raises:
        ExportError: no such trial, the trial did not complete, or ``out`` is not empty.
    """
    import torch

    from autoprune import outputs
    from autoprune.export import INPUT_NAME, OnnxArtifact

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
        staging = scratch_dir(parent, f".{out.name}.staging-")
        chmod_shared(staging, 0o777)  # mkdtemp makes 0700; a package is meant to be shared
    except OSError as exc:
        raise ExportError(f"cannot write into {parent}: {exc.strerror}.") from None

    try:
        from autoprune import storage as storage_mod
        from autoprune.artifacts import fetch
        from autoprune.results import final_result, rebuild_model

        here = TrialFiles.of(result.study_dir, trial)
        state = storage_mod.final_states(result.study).get(trial)
        art = result.artifact_store()
        if art is not None:  # what this folder lacks, from the study's artifact store
            if not (here.plan.is_file() and here.state.is_file() and here.onnx.is_file()):
                fetch(result.study, art, str(trial), here.dir)
            if final_result(here.final) is None and state is not None and state.get("state") == "done":
                fetch(result.study, art, f"{trial}/final", here.final.dir)
        # `autoprune finalize` completed it: package its final files, all of them
        final = final_result(here.final)
        if final is None and storage_mod.finalized_elsewhere(state, trial, result.study_dir, files_here=False):
            # the front shows its final figures, whose files are in another results folder
            raise ExportError(
                f"trial {trial} was finalized by {state.get('owner')} into {state.get('dir')}, not "
                f"{result.study_dir}: export it there (`autoprune export {state.get('dir')} --trial {trial}` on "
                "that machine), or share the results folder; the search-time files here would not match its "
                "final figures.")
        model, task, plan = rebuild_model(result, trial, final=final is not None)
        device = Device.open(result.identity["device"], check=False)
        profile = device.profile
        if profile.hash != result.identity["profile_hash"]:
            raise ExportError(
                f"device profile {profile.name!r} changed since the search (hash differs); "
                "its latency figures would not describe this package."
            )
        files = TrialFiles.of(result.study_dir, trial)
        if final is not None:  # and build as finalize did (TVM: its harder tuning, already in the database)
            device = Device.of(profile.for_finalize())
        onnx_src = files.final.onnx if final else files.onnx
        record = result.record(trial)
        assert record is not None  # the row above exists
        if final is None and sha256_file(onnx_src) != record.onnx_sha256:
            raise ExportError(f"{onnx_src} changed since the trial measured it (sha256 differs).")
        shutil.copyfile(onnx_src, staging / "model.onnx")

        art = OnnxArtifact(str(staging / "model.onnx"), str(record.onnx_sha256), str(record.arch_hash),
                           int(record.onnx_bytes or 0), int(record.macs or 0), int(record.params_count or 0),
                           int(record.nonzero_params or 0), float(record.parity_max_abs_diff or 0.0), (), ())
        built = device.build(art, staging)
        if built.error or built.artifact_path is None:
            raise ExportError(f"building the {profile.backend} artifact failed: {built.error}")

        example = task.example_input(profile.batch_size)
        program, pt2_batch = _export_program(model, task, profile.batch_size)
        torch.export.save(program, staging / "model.pt2")
        with torch.no_grad():
            returned = model(example)
        names, expected = outputs.names(returned), [t.numpy() for t in outputs.flat(returned)]
        # a few validation inputs with the float model's outputs: `autoprune run` checks
        # the artifact against them (for a quantized model, how closely it follows the float one)
        check_x = _check_inputs(task, profile.batch_size)
        with torch.no_grad():
            batches = [outputs.flat(model(torch.from_numpy(check_x[i:i + profile.batch_size])))
                       for i in range(0, len(check_x), profile.batch_size)]
        check_y = [np.concatenate([b[k].numpy() for b in batches]) for k in range(len(names))]
        # one output: `float_outputs` as before; several: `float_outputs_0`, `float_outputs_1`, ...
        np.savez(staging / CHECK_FILE, inputs=check_x, **_check_arrays(check_y))
        artifact = staging / Path(built.artifact_path).name
        runtime: dict[str, Any] = {"backend": profile.backend, "artifact": artifact.name,
                                   **device.backend.runtime_info(built, profile)}
        parity: float | None = None  # an artifact for another machine cannot be run here
        agreement: dict[str, Any] | None = None
        if device.runs_here():
            run = device.load(artifact, runtime)
            parity = check_agreement(run, example.numpy(), expected, profile.batch_size)["max_abs_diff"]
            agreement = check_agreement(run, check_x, check_y, profile.batch_size, names)
        precision = record.precision or "float32"
        quantization = dict(record.quantization or {"precision": "float32"})
        if final and final.get("calibration_samples"):  # finalize calibrated the fine-tuned weights again
            quantization["calibration_samples"] = int(final["calibration_samples"])

        base = result.baseline
        manifest: dict[str, Any] = {
            "schema": SCHEMA,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "study": result.identity["study"],
            "trial": int(trial),
            "task": result.identity["task"],
            "input": {"name": INPUT_NAME, "shape": list(example.shape), "dtype": "float32"},
            "output": {"name": names[0], "shape": list(expected[0].shape)},
            "outputs": [{"name": n, "shape": list(e.shape)} for n, e in zip(names, expected, strict=True)],
            "plan": plan.to_dict(),
            "precision": quantization,  # how the model was quantized (calibration method and samples), or float32
            "pt2": {"batch": pt2_batch},  # "dynamic": any batch size; else the one it takes
            "check": {"file": CHECK_FILE, "examples": int(len(check_x)),
                      "against": "the pruned float32 PyTorch model's outputs on validation inputs",
                      "agreement_at_export": agreement},
            # what the scores are: "accuracy" (top-1, %) unless the task named its metric,
            # and then the keys below carry its name (e.g. "mIoU", "baseline_mIoU")
            "metric": result.metric.describe(),
            "metrics": {**{result.metric.key(k): v for k, v in _figures(row, base, final).items()},
                "size_mb": float(row["size_mb"]),
                "macs": int(row["macs"]),
                "params": int(row["params"]),
                "latency_budget_ms": result.budget_ms,
                "export_parity_max_abs_diff": parity,
                **({result.metric.key("float_accuracy"): _float_accuracy(row, final)}
                   if precision != "float32" else {}),
            },
            "finalized": final,  # longer fine-tune and paired re-measurement, or null
            # every file of the package comes from one stage: the weights, the ONNX file and the figures
            "files_from": "final" if final is not None else "search",
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


def _load(folder: Path, manifest: dict[str, Any]):
    """The package's artifact, loaded with the backend that built it."""
    from autoprune import backends
    from autoprune._config import from_dict
    from autoprune.profiles import DeviceProfile

    runtime = manifest["runtime"]
    try:
        backend = backends.create(runtime["backend"])
        profile = from_dict(DeviceProfile, manifest["device"]["profile"], "manifest.device.profile")
    except ConfigError as exc:
        raise PackageError(f"this autoprune cannot run the package: {exc}") from None
    try:
        return backend.load(folder / runtime["artifact"], profile, runtime)
    except BackendError as exc:
        raise PackageError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a hostile or damaged artifact: the runtime's refusal, in one line
        raise PackageError(f"{runtime['backend']} refused the package's artifact {runtime['artifact']} "
                           f"({type(exc).__name__}: {first_line(exc)}); the package is damaged or not "
                           "autoprune's. Refusing it.") from None


def package_digest(folder: str | Path) -> str:
    """The package's one digest: the sha256 of its manifest, which lists every file's sha256.

    Got from a trusted place (``autoprune export`` prints it), it proves that a copy of
    the package is the one exported: ``autoprune run --expect-digest``.
    """
    return "sha256:" + sha256_file(Path(folder) / "manifest.json")


def verify_package(folder: Path, expect_digest: str | None = None) -> dict[str, Any]:
    """Check the manifest, and every file against it; return the manifest.

    Refused: a manifest whose digest is not ``expect_digest`` (when given), a malformed
    manifest, a file that is missing, modified, a symbolic link or not listed, a listed
    name that is a path (``/``, ``..``), and an artifact the manifest does not cover.
    """
    folder = Path(folder)
    mf = folder / "manifest.json"
    if not mf.is_file() or mf.is_symlink():
        raise PackageError(f"{folder} is not a deploy package (no manifest.json). Make one with `autoprune export`.")
    if expect_digest is not None:
        digest = package_digest(folder)
        wanted = expect_digest if expect_digest.startswith("sha256:") else f"sha256:{expect_digest}"
        if digest != wanted.lower():
            raise PackageError(f"the package's digest is {digest}, not the expected {wanted}: its manifest was "
                               "changed, or it is another package. Refusing to load it.")
    try:
        manifest = json.loads(mf.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PackageError(f"{mf} is not valid JSON ({exc}); the package is damaged.") from None
    if not isinstance(manifest, dict):
        raise PackageError(f"{mf} is not a JSON object; the package is damaged.")
    if manifest.get("schema") != SCHEMA:
        raise PackageError(f"{mf} has schema {manifest.get('schema')!r}; this autoprune reads {SCHEMA!r}.")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise PackageError(f"{mf}: `files` must map each file name to its sha256; the package is damaged.")
    for name, info in files.items():
        if not _plain_name(name):
            raise PackageError(f"{mf} lists {name!r}, which is not a plain file name in the package. Refusing it.")
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
            raise PackageError(f"{mf}: the entry of {name!r} has no sha256; the package is damaged.")
        path = folder / name
        if path.is_symlink():
            raise PackageError(f"{path} is a symbolic link; a package holds plain files only. Refusing it.")
        if not path.is_file():
            raise PackageError(f"{path} is listed in the manifest but missing; the package is incomplete.")
        if sha256_file(path) != info["sha256"]:
            raise PackageError(f"{path} does not match its sha256 in the manifest: it was modified. Refusing to load it.")
    unlisted = sorted(p.name for p in folder.iterdir() if p.name != "manifest.json" and p.name not in files)
    if unlisted:
        raise PackageError(f"{folder} holds files its manifest does not list ({', '.join(unlisted)}): something "
                           "was added to the package. Refusing to load it.")
    runtime, spec = manifest.get("runtime"), manifest.get("input")
    if not isinstance(runtime, dict) or not isinstance(runtime.get("backend"), str) or \
            runtime.get("artifact") not in files:
        raise PackageError(f"{mf}: `runtime` must name the backend and an artifact among the listed files; "
                           "the package is damaged.")
    if not isinstance(spec, dict) or not _shape_ok(spec.get("shape")):
        raise PackageError(f"{mf}: `input.shape` must be a list of positive sizes of at most "
                           f"{MAX_INPUT_VALUES:,} values in all; the package is damaged.")
    if not isinstance(manifest.get("device"), dict) or not isinstance(manifest["device"].get("profile"), dict):
        raise PackageError(f"{mf}: `device.profile` is missing; the package is damaged.")
    return manifest


# the largest input a package may declare (1 GiB of float32): a manifest is not trusted
# to size an allocation
MAX_INPUT_VALUES = 1 << 28


def _plain_name(name: Any) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name \
        and name != "manifest.json"


def _shape_ok(shape: Any) -> bool:
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and not isinstance(d, bool)
                                                           and d > 0 for d in shape):
        return False
    return int(np.prod(shape, dtype=np.float64)) <= MAX_INPUT_VALUES


def read_input(path: str | Path, shape: list[int]) -> tuple[np.ndarray, str | None]:
    """A ``.npy`` input for a model that takes ``shape`` (float32), and what was converted.

    Read memory-mapped, so a header that claims a huge array costs nothing; refused:
    other file kinds, non-numeric or complex data, another shape, values float32 cannot hold.
    """
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ConfigError(f"cannot read input {path}: {exc}. Give a .npy file made with numpy.save.") from None
    if not isinstance(x, np.ndarray):  # an .npz archive loads as a mapping of arrays
        raise ConfigError(f"input {path} is an .npz archive of several arrays; give one .npy array (numpy.save).")
    if x.dtype.kind not in "biuf":
        raise ConfigError(f"input {path} holds {x.dtype} data; the model takes real numbers (float32). "
                          "Save a numeric array.")
    if list(x.shape) != list(shape):
        raise ConfigError(f"input {path} has shape {list(x.shape)}; the model takes {list(shape)}.")
    converted = np.asarray(x, dtype=np.float32)
    if not np.isfinite(converted).all() and np.isfinite(np.asarray(x)).all():
        raise ConfigError(f"input {path} has values that float32 cannot hold (largest magnitude "
                          f"{float(np.abs(np.asarray(x)).max()):.3g}); the model takes float32.")
    note = None if x.dtype == np.float32 else f"input converted from {x.dtype} to float32"
    return converted, note


def run_package(folder: str | Path, input_path: str | Path | None = None, runs: int = 100,
                expect_digest: str | None = None) -> dict[str, Any]:
    """Verify a package, run it with plain ONNX Runtime (or the TVM runtime), and time it.

    Returns:
        A dict with ``output`` (the array), ``output_shape``, latency figures, the
        package's ``digest`` and ``note`` (what was converted in the input, or None).
    """
    if runs < 1:
        raise ConfigError(f"runs must be at least 1, got {runs}.")
    folder = Path(folder)
    manifest = verify_package(folder, expect_digest)
    spec = manifest["input"]
    note = None
    if input_path is None:
        x = np.random.default_rng(0).standard_normal(spec["shape"]).astype(np.float32)
    else:
        x, note = read_input(input_path, spec["shape"])
    loaded = _load(folder, manifest)

    def run(batch):
        try:
            return loaded(batch)
        except Exception as exc:  # noqa: BLE001 - the artifact loaded but does not run: the package's fault
            raise PackageError(f"the package's artifact failed to run ({type(exc).__name__}: {first_line(exc)}); "
                               "the package is damaged or not autoprune's.") from None

    def run_once():
        return run(x)

    outs = run_once()
    names = _output_names(manifest, len(outs))
    agreement, no_check = None, None
    check = manifest.get("check")
    if isinstance(check, dict) and check.get("file") in manifest["files"]:
        agreement = _agreement(folder / check["file"], run, spec["shape"], names)
    else:  # every package autoprune exports has one: say so rather than drop the line
        no_check = ("this package has no float check (its manifest names no check file), so its outputs were "
                    "not compared with the float model's; autoprune's packages all have one")
    for _ in range(5):
        run_once()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run_once()
        times.append(time.perf_counter() - t0)
    return {
        "output": outs[0],  # the first output (the only one, for most models)
        "output_shape": list(outs[0].shape),
        "outputs": dict(zip(names, outs, strict=True)),
        "latency_median_ms": float(np.median(times) * 1e3),
        "latency_p90_ms": float(np.percentile(times, 90) * 1e3),
        "runs": runs,
        "manifest": manifest,
        "digest": package_digest(folder),
        "note": note,
        "agreement": agreement,
        "no_check": no_check,
    }


def _output_names(manifest: dict[str, Any], count: int) -> list[str]:
    """The outputs' names as the manifest lists them (an untrusted file: plain strings
    only), else ``output`` or ``output.K``."""
    listed = manifest.get("outputs")
    names = [o.get("name") for o in listed if isinstance(o, dict)] if isinstance(listed, list) else []
    if len(names) == count and all(isinstance(n, str) and 0 < len(n) <= 200 for n in names):
        return names
    return ["output"] if count == 1 else [f"output.{k}" for k in range(count)]


def _agreement(path: Path, run, shape: list[int], names: list[str]) -> dict[str, Any]:
    """The package's own check: its artifact on the kept validation inputs, against the
    float model's outputs (the file's checksum was verified with the others)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            inputs = data["inputs"]
            if "float_outputs" in data.files:
                expected = [data["float_outputs"]]
            else:
                expected = [data[f"float_outputs_{k}"] for k in range(len(names))]
    except (OSError, ValueError, KeyError) as exc:
        raise PackageError(f"{path} cannot be read ({exc}); the package is damaged.") from None
    if inputs.ndim != len(shape) or list(inputs.shape[1:]) != list(shape[1:]) or len(inputs) % shape[0]:
        raise PackageError(f"{path} holds inputs of shape {list(inputs.shape)}, not batches of {shape}; "
                           "the package is damaged.")
    return check_agreement(run, inputs.astype(np.float32), expected, shape[0], names)
