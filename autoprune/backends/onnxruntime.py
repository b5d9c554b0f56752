"""ONNX Runtime: the artifact is the ORT-optimised ONNX file for the profile's settings."""

from __future__ import annotations

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
    from autoprune.profiles import DeviceProfile, OrtSettings

LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
          "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
INSTALL_HINT = {
    "CUDAExecutionProvider": "install onnxruntime-gpu (`pip install -e .[gpu]`) and the CUDA runtime",
    "TensorrtExecutionProvider": "install onnxruntime-gpu with TensorRT",
}


def session_options(settings: OrtSettings, optimized_path: str | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = settings.intra_op_threads
    opts.inter_op_num_threads = settings.inter_op_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[settings.graph_optimization_level])
    opts.log_severity_level = 3  # the NCHWc "same environment" notice is expected here
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    return opts


def timing_session(artifact_path: str | Path, profile: DeviceProfile):
    """A session on the profile's settings and the random inputs it is timed with (a
    dynamic axis at the profile's batch size)."""
    import numpy as np
    import onnxruntime as ort

    settings = profile.onnxruntime
    session = ort.InferenceSession(str(artifact_path), session_options(settings), providers=list(settings.providers))
    rng = np.random.default_rng(0)
    feeds = {inp.name: rng.standard_normal([d if isinstance(d, int) else profile.batch_size for d in inp.shape])
             .astype(np.float32) for inp in session.get_inputs()}
    return session, feeds


class OrtBackend(Backend):
    """The artifact is the ORT-optimised ONNX file (the plain ONNX file for a board)."""

    name = "onnxruntime"

    def check_available(self, profile: DeviceProfile, *, on_host: bool = True) -> None:
        if not on_host:
            return  # the providers that matter are the device's; its session reports a missing one
        import onnxruntime as ort

        available = ort.get_available_providers()
        missing = [p for p in profile.onnxruntime.providers if p not in available]
        if missing:
            hints = _hints(missing)
            raise BackendError(
                f"profile {profile.name!r} asks for {', '.join(missing)}, but this onnxruntime "
                f"offers {available}. To fix: {hints}, or choose another profile (`autoprune devices`)."
            )
        gpu = [p for p in profile.onnxruntime.providers if p in GPU_PROVIDERS]
        if gpu and not Path("/proc/driver/nvidia/version").exists():
            # onnxruntime-gpu lists its providers whether or not a GPU is there, and then
            # quietly falls back to the CPU: that would time the wrong device
            raise BackendError(
                f"profile {profile.name!r} asks for {', '.join(gpu)}, and this onnxruntime offers it, but "
                "no NVIDIA driver is loaded (/proc/driver/nvidia/version is missing), so there is no GPU to "
                "time on. To fix: run on a machine with an NVIDIA GPU and driver, or choose a CPU profile "
                "(`autoprune devices`)."
            )

    def build(self, onnx: OnnxArtifact, profile: DeviceProfile, out_dir: Path, *,
              on_host: bool = True) -> BuildResult:
        import onnxruntime as ort

        start = time.perf_counter()
        if not on_host:
            # ORT's "all" level writes layouts for this CPU (NCHWc on x86) that another
            # machine may not run; the device optimises the plain model when it loads it
            import shutil

            out = Path(out_dir) / "model.device.onnx"  # not the export's name: it is deleted after timing
            shutil.copyfile(onnx.path, out)
            return BuildResult(str(out), None, time.perf_counter() - start)
        out = Path(out_dir) / "model.opt.onnx"
        try:
            ort.InferenceSession(
                onnx.path,
                session_options(profile.onnxruntime, str(out)),
                providers=list(profile.onnxruntime.providers),
            )
        except Exception as exc:  # noqa: BLE001 - an unbuildable candidate fails its trial
            return BuildResult(None, f"{type(exc).__name__}: {exc}", time.perf_counter() - start)
        return BuildResult(str(out), None, time.perf_counter() - start)

    def time(self, artifact_path: str, profile: DeviceProfile) -> Measurement:
        from autoprune.measure import timed_loop

        settings = profile.onnxruntime
        session, feeds = timing_session(artifact_path, profile)
        if settings.io_binding:
            run_once = _bound_run(session, feeds, settings.providers[0])
        else:
            def run_once():
                session.run(None, feeds)
        return timed_loop(run_once, profile.measurement, settings.intra_op_threads)

    def load(self, artifact_path: str | Path, profile: DeviceProfile,
             runtime: Mapping[str, Any] | None = None) -> Callable[[np.ndarray], list[np.ndarray]]:
        import onnxruntime as ort

        settings = profile.onnxruntime
        available = ort.get_available_providers()
        providers = [p for p in settings.providers if p in available]
        if not providers:
            raise BackendError(f"the model needs {list(settings.providers)}, but this onnxruntime offers "
                               f"{available}. To fix: {_hints(settings.providers)}.")
        session = ort.InferenceSession(str(artifact_path), session_options(settings), providers=providers)
        name = session.get_inputs()[0].name

        def run(x: np.ndarray) -> list[np.ndarray]:
            return session.run(None, {name: x})

        return run


def _hints(providers) -> str:
    return "; ".join(INSTALL_HINT.get(p, f"install an onnxruntime build with {p}") for p in providers)


def _bound_run(session, feeds, provider: str):
    """A run with inputs copied to the provider's device once and outputs left there.

    Never run on a GPU (this project's machines have none); it follows ONNX Runtime's
    documented I/O-binding API.
    """
    import onnxruntime as ort

    device = "cuda" if provider in GPU_PROVIDERS else "cpu"
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, device, 0))
    for out in session.get_outputs():
        binding.bind_output(out.name, device)

    def run_once():
        session.run_with_iobinding(binding)  # returns once the provider's stream is done

    return run_once
