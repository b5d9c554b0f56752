"""Every pruning method's measured effect on latency, size and accuracy.

Each method cuts every prunable group by the same moderate ratio (0.3, round_to 8;
``drop_block`` removes every other removable residual block) and goes through the real
trial pipeline: surgery, recovery, evaluation, ONNX export, the x86-ort build and the
3-process timing protocol. Two models:

- torchvision ResNet-18 at 1x3x224x224 (random weights: no ImageNet here, so no
  recovery and no accuracy; latency and size are real);
- the reference task (fashion-mnist ResNet-14) with the default recovery budget, so
  the accuracy column is real too.

Run: ``.venv/bin/python benchmarks/methods.py [--out FILE] [--skip-resnet18]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from autoprune import pruning
from autoprune.device import Device
from autoprune.objective import Context, run_candidate
from autoprune.profiles import load_profile
from autoprune.pruning import GroupChoice, PruningPlan
from autoprune.space import load_space, resolve
from autoprune.tasks import load_task
from autoprune.trials import TrialFailure

sys.path.insert(0, str(Path(__file__).parent))
from _machine import LoadMonitor, add_load_arguments, write_report  # noqa: E402
from stage_times import resnet18_task  # noqa: E402

RATIO = 0.3
METHODS = [m.name for m in pruning.METHODS.values() if m.kind != "keep"]


def plans(resolved) -> dict[str, PruningPlan]:
    out = {"(unpruned)": PruningPlan()}
    for name in METHODS:
        if name == "drop_block":
            if resolved.blocks:
                out[name] = PruningPlan(drop_blocks=resolved.blocks[::2])
            continue
        out[name] = PruningPlan({g.info.name: GroupChoice(name, RATIO) for g in resolved.groups}, round_to=8)
    return out


def run(task, recovery: dict, with_accuracy: bool) -> list[dict]:
    profile = load_profile("x86-ort")
    space = load_space("default")
    space = dataclasses.replace(space, recovery=dataclasses.replace(space.recovery, **recovery))
    resolved = resolve(space, task.model, task.example_input(1), task.ignored_layers)
    ctx = Context(task, Device.of(profile), resolved, cache=None)
    rows = []
    for label, plan in plans(resolved).items():
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            try:
                cand = run_candidate(ctx, plan, Path(tmp), seed=0)
            except TrialFailure as exc:
                rows.append({"model": task.name, "method": label, "failed": f"{exc.stage}: {exc.reason}"})
                continue
        o, m = cand.onnx, cand.latency
        rows.append({
            "model": task.name,
            "method": label,
            "kind": pruning.METHODS[label].kind if label in pruning.METHODS else "",
            "accuracy_%": cand.accuracy if with_accuracy else None,  # already in percent
            "latency_ms": m.median_ms,
            "noisy": m.noisy,
            "params_M": o.params / 1e6,
            "nonzero_M": o.nonzero_params / 1e6,
            "MMACs": o.macs / 1e6,
            "onnx_MB": o.bytes / 1e6,
            "gzip_MB": o.gzip_bytes / 1e6,
            "trial_s": time.perf_counter() - start,
        })
        print(rows[-1], file=sys.stderr, flush=True)
    df = pd.DataFrame(rows)
    base = df[df["method"] == "(unpruned)"].iloc[0]
    df["speedup"] = base["latency_ms"] / df["latency_ms"]
    df["gzip_vs_dense"] = df["gzip_MB"] / base["gzip_MB"]
    return df.to_dict("records")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/methods.md"))
    parser.add_argument("--skip-resnet18", action="store_true")
    add_load_arguments(parser)
    args = parser.parse_args()
    monitor = LoadMonitor()
    rows = []
    if not args.skip_resnet18:
        rows += run(resnet18_task(), {"finetune_steps": 0, "bn_batches": 0, "eval_samples": 32}, False)
    rows += run(load_task("fashion-mnist"), {}, True)
    df = pd.DataFrame(rows)
    cols = ["model", "method", "kind", "accuracy_%", "latency_ms", "speedup", "noisy", "params_M", "nonzero_M",
            "MMACs", "onnx_MB", "gzip_MB", "gzip_vs_dense", "trial_s"] + (["failed"] if "failed" in df else [])
    text = (
        f"# Every method at ratio {RATIO} (round_to 8), measured\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end; "
        f"profile x86-ort (ONNX Runtime CPU, 1 thread, median of 3 processes). ResNet-18 has random weights "
        f"(no accuracy); fashion-mnist uses the default recovery (BN recalibration + 40 fine-tune steps) and "
        f"scores 2,000 validation images.\nCommand: `.venv/bin/python benchmarks/methods.py`.\n\n"
        + df[cols].to_markdown(index=False, floatfmt=".3f") + "\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(args.out, text, monitor, args.allow_noisy or getattr(args, "quick", False))
    print(text)


if __name__ == "__main__":
    main()
