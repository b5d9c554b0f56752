"""ONNX export at the profile's fixed input shape, checked and compared with PyTorch.

The legacy TorchScript exporter (``dynamo=False``, opset 17) is used on purpose: on
this machine kind it exported about 5x faster than the dynamo exporter, which matters
when every trial exports, and both give the same ORT latency. A model the legacy
exporter refuses (e.g. adaptive pooling to a size that does not divide its input, as
AlexNet and VGG have below 224x224) is exported by the dynamo exporter instead (opset
18), and checked the same way.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autoprune import outputs
from autoprune._config import sha256_file
from autoprune.errors import first_line

INPUT_NAME, OPSET = "input", 17
OUTPUT_NAME = outputs.OUTPUT_NAME  # a model with several outputs: outputs.names
DYNAMO_OPSET = 18  # the dynamo exporter's lowest


class ExportFailure(RuntimeError):
    """Export or the parity check failed (becomes a failed trial at stage 'export')."""


@dataclass(frozen=True)
class OnnxArtifact:
    """An exported candidate. ``arch_hash`` ignores weight values: it keys latency."""

    path: str
    sha256: str
    arch_hash: str
    bytes: int
    macs: int
    params: int
    nonzero_params: int
    max_abs_diff: float
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]  # the first output's, with several
    gzip_bytes: int = 0  # what the file costs to ship: zeros from sparse methods compress


def architecture_hash(model_bytes: bytes) -> str:
    """sha256 of the ONNX graph with initializer values removed (shapes/dtypes kept).

    Dense kernels run in the same time whatever the weight values, so two candidates
    with the same layer shapes (e.g. l1 and l2 cutting the same counts) share a latency.
    """
    import onnx

    proto = onnx.load_from_string(model_bytes)
    for init in proto.graph.initializer:
        shape = list(init.dims)
        init.ClearField("raw_data")
        for name in ("float_data", "int32_data", "int64_data", "double_data"):
            init.ClearField(name)
        del init.dims[:]
        init.dims.extend(shape)
    proto.producer_version = ""
    return hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()


def file_facts(path: Path, blob: bytes) -> dict[str, Any]:
    """The :class:`OnnxArtifact` fields that describe the written file ``path`` (holding
    ``blob``): its path, sha256, architecture hash, size and gzip-compressed size (the
    ``size_metric: gzip`` objective)."""
    return {"path": str(path), "sha256": sha256_file(path), "arch_hash": architecture_hash(blob),
            "bytes": len(blob), "gzip_bytes": len(gzip.compress(blob, compresslevel=6, mtime=0))}


@contextlib.contextmanager
def _mha_fastpath_off():
    """nn.MultiheadAttention takes a fused kernel in eval mode with an even head count;
    the fused op has no ONNX export, the plain path does (same numbers)."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def count_params(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    return total, nonzero


def count_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass at ``example_input``: Torch-Pruning's
    count, with recurrent layers counted here (it takes a sequence's first example's
    shape as (batch, time): an LSTM of 0.5 M MACs counted 16.5 M; issue 28)."""
    import torch_pruning as tp

    recurrent = [m for m in model.modules() if isinstance(m, nn.RNNBase)]
    if not recurrent:
        macs, _ = tp.utils.count_ops_and_params(model, example_input)
        return int(macs)
    macs, _, per_layer, _ = tp.utils.count_ops_and_params(model, example_input, layer_wise=True)
    ours: dict[nn.Module, int] = {}

    def seen(module, args, _output):
        ours[module] = ours.get(module, 0) + _recurrent_macs(module, args[0])

    hooks = [m.register_forward_hook(seen) for m in recurrent]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for hook in hooks:
            hook.remove()
    # Torch-Pruning's total is per example (divided by the batch), its per-layer counts are not
    batch = len(example_input)
    wrong = sum(int(per_layer.get(m) or 0) for m in recurrent)
    return int(round(macs + (sum(ours.values()) - wrong) / batch))


def _recurrent_macs(module: nn.RNNBase, x) -> int:
    """Every weight of every layer and direction (and LSTM projection) is used once per
    example per time step: that many MACs times batch times steps (the whole batch's)."""
    if isinstance(x, nn.utils.rnn.PackedSequence):
        steps = int(x.data.shape[0])  # every example's steps, packed
    elif x.dim() == 2:  # unbatched (time, features)
        steps = int(x.shape[0])
    else:
        steps = int(x.shape[0]) * int(x.shape[1])  # batch * time, in either order
    per_step = sum(p.numel() for name, p in module.named_parameters() if name.startswith("weight_"))
    return per_step * steps


@contextlib.contextmanager
def _quiet_stdout():
    """Silence file descriptor 1 while exporting. The dynamo exporter reports its steps
    there, and torch 2.14's legacy exporter turns its C++ log on by mistake
    (``setup_onnx_logging`` tests the function ``_jit_is_onnx_log_enabled``, not its
    result), so a refused model prints its whole TorchScript graph."""
    import os
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(io.StringIO()):
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _export(model: nn.Module, example_input: torch.Tensor, dynamo: bool,
            output_names: list[str] | None = None) -> bytes:
    """The checked ONNX bytes of ``model`` from one of torch's two exporters (a model with
    several outputs is exported through :class:`outputs.Flat`, one ONNX output each)."""
    import onnx

    output_names = output_names or [OUTPUT_NAME]
    if output_names != [OUTPUT_NAME]:
        model = outputs.Flat(model)
    with warnings.catch_warnings(), torch.no_grad(), _mha_fastpath_off(), _quiet_stdout():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        if dynamo:
            program = torch.onnx.export(model, (example_input,), None, input_names=[INPUT_NAME],
                                        output_names=output_names, opset_version=DYNAMO_OPSET, dynamo=True,
                                        verbose=False)
            blob = program.model_proto.SerializeToString()
        else:
            buf = io.BytesIO()
            torch.onnx.export(model, (example_input,), buf, input_names=[INPUT_NAME], output_names=output_names,
                              opset_version=OPSET, dynamo=False)
            blob = buf.getvalue()
    onnx.checker.check_model(onnx.load_from_string(blob))
    return blob


def to_onnx(model: nn.Module, example_input: torch.Tensor, path: Path, parity_atol: float,
            parity_rtol: float = 0.0) -> OnnxArtifact:
    """Export ``model`` at ``example_input``'s shape to ``path``; check it; compare outputs.

    Raises:
        ExportFailure: PyTorch's own output is not finite, the exporter or checker
            failed, or ONNX Runtime's output differs from PyTorch's by more than
            ``parity_atol + parity_rtol * max|PyTorch output|`` (a model whose outputs
            reach 1e14 cannot be held to an absolute 1e-3 in float32).
    """
    import onnxruntime as ort

    model = model.eval()
    with torch.no_grad(), _mha_fastpath_off():
        out = model(example_input)
    try:
        names = outputs.names(out)
        wanted = [t.numpy() for t in outputs.flat(out)]
    except TypeError as exc:
        raise ExportFailure(str(exc)) from None
    if not all(np.isfinite(e).all() for e in wanted):
        raise ExportFailure(
            "the model's outputs are not finite (NaN or inf): the pruned model diverged, e.g. a fine-tune "
            "with too high a learning rate, or batch-norm statistics that no longer fit its weights"
        )
    try:
        blob = _export(model, example_input, dynamo=False, output_names=names)
    except Exception as exc:  # noqa: BLE001 - any exporter failure is this candidate's failure
        legacy = f"{type(exc).__name__}: {first_line(exc)}"
        try:
            blob = _export(model, example_input, dynamo=True, output_names=names)
        except Exception as again:  # noqa: BLE001
            raise ExportFailure(f"ONNX export failed: {legacy}; the dynamo exporter too: "
                                f"{type(again).__name__}: {first_line(again)}") from exc

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
    diff = parity(session.run(None, {INPUT_NAME: example_input.numpy()}), wanted, names, parity_atol, parity_rtol)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(blob)
    tmp.replace(path)
    params, nonzero = count_params(model)
    return OnnxArtifact(
        **file_facts(path, blob),
        macs=count_macs(model, example_input),
        params=params,
        nonzero_params=nonzero,
        max_abs_diff=diff,
        input_shape=tuple(example_input.shape),
        output_shape=tuple(wanted[0].shape),
    )


def parity(got: list[np.ndarray], wanted: list[np.ndarray], names: list[str], atol: float, rtol: float) -> float:
    """The largest difference between ONNX Runtime's outputs and PyTorch's, each output
    held to ``atol + rtol * its own max |value|`` (a box output in pixels and a score in
    0-1 are not held to one scale).

    Raises:
        ExportFailure: an output is missing, has another shape, or differs by more.
    """
    if len(got) != len(wanted):
        raise ExportFailure(f"the ONNX file has {len(got)} outputs; PyTorch's model returned {len(wanted)}")
    worst = 0.0
    for name, g, w in zip(names, got, wanted, strict=True):
        label = "" if len(names) == 1 else f" {name}"
        if g.shape != w.shape:
            raise ExportFailure(f"ONNX output{label} shape {g.shape} != PyTorch {w.shape}")
        diff = float(np.max(np.abs(g - w))) if g.size else 0.0
        scale = float(np.max(np.abs(w))) if w.size else 0.0
        if not diff <= atol + rtol * scale:  # also catches NaN
            raise ExportFailure(
                f"ONNX Runtime output{label} differs from PyTorch by {diff:.3g} (> parity_atol {atol:g} + "
                f"parity_rtol {rtol:g} x max |output| {scale:.3g})"
            )
        worst = max(worst, diff)
    return worst
