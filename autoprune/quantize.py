"""Numeric precision of a candidate: the exported float32 ONNX model, quantized or cast.

A precision is chosen per candidate (``PruningPlan.precision``), sampled by Optuna with
the pruning plan, and applied after the float model's export and parity check:

- ``float32``: the export as it is;
- ``int8``: ONNX Runtime static quantization in the QDQ format, weights per channel,
  activation and weight types from the device profile (``precision.int8``), activation
  ranges calibrated on the task's training inputs by the space's method (``minmax``,
  ``entropy`` or ``percentile``);
- ``int8-dynamic``: ONNX Runtime dynamic quantization of the linear layers only
  (``MatMul``/``Gemm``: weights int8, activations quantized at run time); convolutions
  stay float, since ``ConvInteger`` is slower than float convolution on CPUs;
- ``float16``: every float tensor cast to half precision (inputs and outputs stay
  float32), for devices whose profile says they run it (GPUs).

Why one precision per candidate, not per group: a float island inside an INT8 graph
costs a DequantizeLinear/QuantizeLinear pair at each border, and ONNX Runtime then runs
the float operator between them; a per-group choice would double the search space per
group for models whose groups are mostly too small to repay the borders. The choice is
recorded on the trial with how it was calibrated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autoprune.profiles import PRECISIONS, Int8Settings

if TYPE_CHECKING:
    from autoprune.export import OnnxArtifact

CALIBRATIONS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class Quantized:
    """A candidate at its precision: the artifact to build and time, and what was done."""

    artifact: OnnxArtifact
    settings: dict[str, Any]  # precision, format, types, calibration method and samples


@contextlib.contextmanager
def _quiet():
    """ONNX Runtime's quantizer logs a pre-processing hint through the root logger on
    every call, and its histogram calibrators print their progress: advice and chatter
    for hand-run scripts, not for a search's screen."""
    from autoprune.export import _quiet_stdout

    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.ERROR)
    try:
        with _quiet_stdout():
            yield
    finally:
        root.setLevel(before)


def quantize(float_onnx: OnnxArtifact, precision: str, out: Path, *, calibration: np.ndarray | None = None,
             method: str = "minmax", percentile: float = 99.999, int8: Int8Settings | None = None) -> Quantized:
    """Write ``float_onnx`` at ``precision`` to ``out``; return it as an artifact.

    ``calibration``: the inputs static INT8 calibrates on (shape ``(n, *input)``; fed
    one batch of the model's own batch size at a time). For ``float32`` the float
    file is the candidate itself (``out`` is not written).

    Raises:
        ValueError: an unknown precision or calibration method, or INT8 static without
            calibration inputs.
    """
    from autoprune.export import INPUT_NAME

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
    if precision == "float32":
        return Quantized(float_onnx, {"precision": "float32"})
    import onnxruntime.quantization as q

    int8 = int8 or Int8Settings()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.onnx")
    src = _without_shared_initializers(Path(float_onnx.path), out.with_suffix(".pre.onnx"))
    types = {"uint8": q.QuantType.QUInt8, "int8": q.QuantType.QInt8}
    if precision == "int8":
        if method not in CALIBRATIONS:
            raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATIONS)}.")
        if calibration is None or len(calibration) == 0:
            raise ValueError("INT8 static quantization needs calibration inputs.")
        batch = float_onnx.input_shape[0] if float_onnx.input_shape else 1
        if len(calibration) < batch:  # fewer samples than one batch of the model: repeat them
            calibration = np.resize(calibration, (batch, *calibration.shape[1:]))
        batches = [calibration[i:i + batch] for i in range(0, len(calibration) - batch + 1, batch)]
        reader = _Reader(INPUT_NAME, [np.ascontiguousarray(b, dtype=np.float32) for b in batches])
        methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
                   "percentile": q.CalibrationMethod.Percentile}
        extra = {"CalibPercentile": percentile} if method == "percentile" else {}
        with _quiet():
            q.quantize_static(src, str(tmp), reader, quant_format=q.QuantFormat.QDQ, per_channel=int8.per_channel,
                              activation_type=types[int8.activation_type], weight_type=types[int8.weight_type],
                              calibrate_method=methods[method], extra_options=extra)
        settings = {"precision": "int8", "format": "QDQ", "activation_type": int8.activation_type,
                    "weight_type": int8.weight_type, "per_channel": int8.per_channel, "calibration": method,
                    "calibration_samples": len(batches) * batch,
                    **({"percentile": percentile} if method == "percentile" else {})}
    elif precision == "int8-dynamic":
        with _quiet():
            q.quantize_dynamic(src, str(tmp), weight_type=types[int8.weight_type],
                               op_types_to_quantize=["MatMul", "Gemm"])
        settings = {"precision": "int8-dynamic", "format": "dynamic (MatMul/Gemm)",
                    "weight_type": int8.weight_type}
    else:  # float16
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(src), keep_io_types=True)
        onnx.save(model, str(tmp))
        settings = {"precision": "float16", "format": "cast (inputs and outputs float32)"}
    tmp.replace(out)
    if src != str(float_onnx.path):
        Path(src).unlink(missing_ok=True)
    return Quantized(_artifact(float_onnx, out), settings)


def _without_shared_initializers(path: Path, out: Path) -> str:
    """The float model with every ``Identity`` of an initializer replaced by a copy of it.

    torch's exporter shares equal weight tensors (a fresh model's zero biases, say) and
    reads the copies through ``Identity`` nodes; ONNX Runtime's quantizer then finds no
    initializer behind those inputs, leaves the biases float and the convolutions
    unfused (ResNet-18 at INT8 ran slower than at float32), or fails outright (the
    QOperator format). Returns the path to quantize (``path`` itself when nothing is shared).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    shared = [n for n in graph.node if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs]
    if not shared:
        return str(path)
    for node in shared:
        copy = numpy_helper.from_array(numpy_helper.to_array(inits[node.input[0]]), node.output[0])
        graph.initializer.append(copy)
        graph.node.remove(node)
    onnx.save(model, str(out))
    return str(out)


def _artifact(float_onnx: OnnxArtifact, path: Path) -> OnnxArtifact:
    """The quantized file as an artifact: its own bytes and hashes, the float model's
    counts (MACs and parameters do not change with precision) and export parity."""
    from autoprune.export import file_facts

    return dataclasses.replace(float_onnx, **file_facts(path, path.read_bytes()))


def calibration_inputs(train, samples: int, seed: int = 0) -> np.ndarray:
    """The training inputs INT8 activation ranges are calibrated on: ``samples`` of
    ``train`` (a task split) drawn with ``seed``; the same for every candidate of a search
    and for its finalize."""
    import torch

    n = min(samples, len(train))
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 1))[:n]
    return train.take(idx)[0].numpy()


class _Reader:
    """ONNX Runtime's calibration data reader over a list of input batches."""

    def __init__(self, name: str, batches: list[np.ndarray]) -> None:
        self._it = iter([{name: b} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)
