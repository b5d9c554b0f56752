"""Recovery throughput: fine-tune steps per second on the train device.

The loop a candidate's recovery runs (``autoprune.recover.train``: SGD, distillation
from the unpruned model with its kept outputs, masks re-applied) timed at equal steps,
for the reference task's model and for torchvision ResNet-18 at 224 px (random inputs:
the figure is the step's cost, not the data's), on each train device and mixed
precision named. The CUDA rows run only where torch sees a GPU, and name it.

Run: ``.venv/bin/python benchmarks/train_throughput.py [--devices cpu,cuda] [--amp off,bf16]``;
``--json`` prints one figure for comparing two checkouts of the package.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _machine import LoadMonitor, add_load_arguments, facts, write_report  # noqa: E402


def models(which: list[str]):
    """(name, model, train split, batch size) for each model asked for."""
    import torch

    from autoprune.tasks import Split, load_task

    for name in which:
        if name == "fashion-mnist":
            task = load_task("fashion-mnist")
            yield name, task.model, task.train, 64
        elif name == "resnet18-224":
            import torchvision

            g = torch.Generator().manual_seed(0)
            data = Split(torch.randn(512, 3, 224, 224, generator=g), torch.randint(0, 1000, (512,), generator=g))
            yield name, torchvision.models.resnet18(weights=None).eval(), data, 64
        else:
            raise SystemExit(f"unknown model {name!r}: fashion-mnist or resnet18-224")


def steps_per_s(model, data, batch: int, steps: int, repeats: int) -> float:
    """Median steps per second of ``repeats`` runs of ``steps`` distilled steps (after one
    warm-up run that also fills the teacher's kept outputs)."""
    from autoprune.recover import Distill, TrainConfig, train

    distill = Distill(copy.deepcopy(model))
    rates = []
    for r in range(repeats + 1):
        student = copy.deepcopy(model)
        start = time.perf_counter()
        train(student, data, TrainConfig(steps, batch, lr=0.01, seed=r % 2), distill=distill)
        if r:
            rates.append(steps / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="fashion-mnist,resnet18-224")
    parser.add_argument("--devices", default="cpu,cuda")
    parser.add_argument("--amp", default="off,bf16", help="mixed precisions to try on CUDA (the CPU runs off)")
    parser.add_argument("--steps", type=int, default=0, help="steps a run (default: 200 small model, 10 ResNet-18 "
                                                             "on the CPU, 100 on CUDA)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the first row's steps/s as JSON, no report")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/train_throughput.md"))
    add_load_arguments(parser)
    args = parser.parse_args()

    import torch

    monitor = LoadMonitor()
    rows, skipped = [], []
    for name, model, data, batch in models(args.models.split(",")):
        for device in args.devices.split(","):
            if device.startswith("cuda") and not torch.cuda.is_available():
                print(f"{name}: no CUDA device here, the {device} rows are not run", file=sys.stderr)
                skipped.append(f"{name} on {device}")
                continue
            for amp in (args.amp.split(",") if device.startswith("cuda") else ["off"]):
                try:  # the package before the train device: the CPU only
                    from autoprune import accelerator

                    accelerator.use(accelerator.resolve(device, amp))
                except ImportError:
                    if device != "cpu":
                        raise
                steps = args.steps or (200 if name == "fashion-mnist" else 100 if device != "cpu" else 10)
                rate = steps_per_s(model, data, batch, steps, args.repeats)
                gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else ""
                rows.append({"model": name, "batch": batch, "device": device, "gpu": gpu, "amp": amp,
                             "steps": steps, "steps_per_s": rate})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                if args.json:
                    print(json.dumps({"steps_per_s": rate}))
                    return
    table = pd.DataFrame(rows)
    text = ("# Recovery throughput: distilled fine-tune steps per second\n\n" + facts()
            + (f"- Not run, torch sees no CUDA device here: {', '.join(skipped)}.\n" if skipped else "")
            + "- `autoprune.recover.train` with distillation (teacher outputs kept), SGD, batch as shown; median of "
            f"{args.repeats} runs after a warm-up run. ResNet-18 reads random 224 px inputs.\n\n"
            + table.to_markdown(index=False, floatfmt=".2f") + "\n")
    write_report(args.out, text, monitor, args.allow_noisy)
    print(text)


if __name__ == "__main__":
    main()
