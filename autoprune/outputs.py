"""A model's outputs as a flat list of tensors, and back.

Detectors and multi-task models return a tuple, list or dict of tensors (issue 28).
Export, parity, distillation and the deployed package work on the flat list; the
names given to the ONNX file's outputs say how to put it back together, so an ONNX
file (an INT8 candidate scored by the task's metric, a deployed artifact) returns
what the PyTorch model returned:

- one tensor: ``output`` (as before: single-output files are unchanged);
- a tuple or list: ``output.0``, ``output.1``, ... (given back as a tuple);
- a dict with string keys: ``output:KEY`` for each key, in the dict's order.

How each output is distilled (``Task.distill``): ``"kl"`` (softened class scores over
axis 1, Hinton et al.), ``"mse"`` (regression outputs: boxes, embeddings) or ``"none"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

OUTPUT_NAME = "output"
DISTILL_MODES = ("kl", "mse", "none")


def flat(out: Any) -> list[torch.Tensor]:
    """The tensors of a model's output, in order.

    Raises:
        TypeError: the output is not a tensor, nor a non-empty tuple, list or
            string-keyed dict of tensors.
    """
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        if out and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in out.items()):
            return list(out.values())
    elif isinstance(out, Sequence) and out and all(isinstance(v, torch.Tensor) for v in out):
        return list(out)
    raise TypeError(f"a model's output must be a tensor, or a tuple, list or dict (string keys) of tensors; "
                    f"this one is {describe(out)}")


def describe(out: Any) -> str:
    """``4x10`` for a tensor, ``(4x10, 4x4)`` for a tuple, ``{logits: 4x10, ...}`` for a dict."""
    if isinstance(out, torch.Tensor):
        return "x".join(str(d) for d in out.shape) or "a scalar"
    if isinstance(out, Mapping):
        return "{" + ", ".join(f"{k}: {describe(v)}" for k, v in out.items()) + "}"
    if isinstance(out, (tuple, list)):
        return "(" + ", ".join(describe(v) for v in out) + ")"
    return type(out).__name__


def names(out: Any) -> list[str]:
    """The ONNX output names for ``out`` (see the module docstring)."""
    if isinstance(out, torch.Tensor):
        return [OUTPUT_NAME]
    if isinstance(out, Mapping):
        return [f"{OUTPUT_NAME}:{k}" for k in out]
    return [f"{OUTPUT_NAME}.{i}" for i in range(len(out))]


def keys(output_names: Sequence[str]) -> list[str | int]:
    """What a task names each output by: the dict key, or the position."""
    return [n.split(":", 1)[1] if n.startswith(OUTPUT_NAME + ":") else i for i, n in enumerate(output_names)]


def rebuild(output_names: Sequence[str], tensors: Sequence[Any]) -> Any:
    """The model's output again, from an ONNX file's outputs and their names."""
    output_names = list(output_names)
    if output_names and all(n.startswith(OUTPUT_NAME + ":") for n in output_names):
        return {n.split(":", 1)[1]: t for n, t in zip(output_names, tensors, strict=True)}
    if output_names == [f"{OUTPUT_NAME}.{i}" for i in range(len(tensors))]:
        return tuple(tensors)  # a tuple or list, also of one tensor
    return tuple(tensors) if len(tensors) > 1 else tensors[0]  # one output, or a file from elsewhere


class Flat(nn.Module):
    """``model`` with its outputs as a tuple of tensors: what the ONNX exporters are given
    for a model with several outputs (a dict's keys live on in the output names)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(flat(self.model(x)))


def distill_modes(output_names: Sequence[str], asked: Mapping[Any, str] | None) -> list[str]:
    """How each output is distilled: ``asked`` (output key or position -> mode) over the
    default, KL for the first output and MSE for the others.

    Raises:
        ValueError: ``asked`` names an output the model lacks, or a mode that is not one
            of :data:`DISTILL_MODES`.
    """
    known = keys(output_names)
    modes = ["kl"] + ["mse"] * (len(known) - 1)
    for key, mode in (asked or {}).items():
        if mode not in DISTILL_MODES:
            raise ValueError(f"Task.distill[{key!r}] is {mode!r}; choose one of {', '.join(DISTILL_MODES)}.")
        if key in known:
            modes[known.index(key)] = mode
        elif isinstance(key, int) and not isinstance(key, bool) and 0 <= key < len(known):
            modes[key] = mode
        else:
            raise ValueError(f"Task.distill names output {key!r}, but the model's outputs are "
                             f"{', '.join(map(repr, known))}.")
    return modes
