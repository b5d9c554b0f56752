"""Time each stage of one trial (prune, recover, evaluate, export, build, measure).

For the reference task (fashion-mnist) and torchvision ResNet-18 at 1x3x224x224, each
unpruned and with every group cut 50% by L1 (round_to 8). ResNet-18 has no ImageNet
data here, so it trains and scores on random tensors: its accuracy is meaningless, its
stage times are real. Run: ``.venv/bin/python benchmarks/stage_times.py [--out FILE]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from autoprune.device import Device
from autoprune.objective import Context, run_candidate
from autoprune.profiles import load_profile
from autoprune.pruning import GroupChoice, PruningPlan
from autoprune.space import load_space, resolve
from autoprune.tasks import Split, Task, load_task

sys.path.insert(0, str(Path(__file__).parent))
from _machine import LoadMonitor, add_load_arguments, write_report  # noqa: E402


def resnet18_task() -> Task:
    import torchvision

    gen = torch.Generator().manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=1000).eval()
    x = torch.randn(96, 3, 224, 224, generator=gen)
    y = torch.randint(0, 1000, (96,), generator=gen)
    return Task("resnet18-224", model, (3, 224, 224), Split(x[:64], y[:64]), Split(x[64:], y[64:]),
                ignored_layers=("fc",))


def run(task: Task, recovery_overrides: dict, rows: list[dict]) -> None:
    profile = load_profile("x86-ort")
    space = load_space("default")
    space = dataclasses.replace(space, recovery=dataclasses.replace(space.recovery, **recovery_overrides))
    resolved = resolve(space, task.model, task.example_input(1), task.ignored_layers)
    ctx = Context(task, Device.of(profile), resolved, cache=None)
    half = PruningPlan({g.info.name: GroupChoice("l1", 0.5) for g in resolved.groups}, round_to=8)
    for label, plan in (("unpruned", PruningPlan()), ("l1 50% all groups", half)):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            cand = run_candidate(ctx, plan, Path(tmp), seed=0)
            total = time.perf_counter() - start
        rows.append({"model": task.name, "candidate": label, **cand.stage_s, "total": total,
                     "latency_ms": cand.latency.median_ms, "cv": cand.latency.cv, "runs": cand.latency.runs,
                     "MMACs": cand.onnx.macs / 1e6, "accuracy": cand.accuracy,
                     "recovery": f"{space.recovery.finetune_steps} steps x {space.recovery.batch_size}"})
        print(rows[-1], file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/stage_times.md"))
    parser.add_argument("--skip-resnet18", action="store_true")
    add_load_arguments(parser)
    args = parser.parse_args()
    monitor = LoadMonitor()
    rows: list[dict] = []
    run(load_task("fashion-mnist"), {}, rows)
    if not args.skip_resnet18:
        # ResNet-18 at 224 trains ~100x slower per image: a smaller recovery budget.
        run(resnet18_task(), {"finetune_steps": 5, "batch_size": 16, "bn_batches": 2, "eval_samples": 32}, rows)
    import pandas as pd

    df = pd.DataFrame(rows)
    stages = ["prune", "recover", "evaluate", "export", "build", "measure", "total"]
    table = df[["model", "candidate", "recovery", *stages, "latency_ms", "cv", "runs", "MMACs"]]
    text = (f"# Stage times of one trial (seconds)\n\nMachine: {platform.machine()}, "
            f"{torch.get_num_threads()} torch threads, profile x86-ort (ORT 1 thread). "
            f"Command: `.venv/bin/python benchmarks/stage_times.py`.\n\n"
            + table.to_markdown(index=False, floatfmt=".3f") + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(args.out, text, monitor, args.allow_noisy or getattr(args, "quick", False))
    print(text)


if __name__ == "__main__":
    main()
