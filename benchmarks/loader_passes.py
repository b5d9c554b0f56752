"""The cost of a pass over a split read from a Dataset (issue 26.1: loading processes).

A candidate reads its data many times: BN re-estimation batches, each recovery rung, and
the metric on the validation subset. This times those passes as a candidate makes them,
on Fashion-MNIST images behind a map-style ``Dataset`` (decoded from memory, as an image
folder's would be after the operating system's cache), with ``--workers`` loading
processes: per pass, the median over ``--passes`` passes, for an evaluation pass (360
examples, batch 500) and a recovery rung (40 steps of 64).

Run: ``.venv/bin/python benchmarks/loader_passes.py --json`` from each checkout to compare
two versions of the package (``PYTHONPATH=<checkout>``); alone on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import LoadMonitor, add_load_arguments  # noqa: E402


class Images(torch.utils.data.Dataset):
    """One (image, label) at a time, converted per read as a decoded file would be."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = (x * 255).to(torch.uint8), y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i].float() / 255, self.y[i]


def main() -> None:
    from autoprune.tasks import load_task
    from autoprune.tasks._base import DataSplit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--passes", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    add_load_arguments(parser)
    args = parser.parse_args()
    monitor = LoadMonitor()
    task = load_task("fashion-mnist")
    train = DataSplit(Images(task.train.x, task.train.y), workers=args.workers)
    val = DataSplit(Images(task.val.x, task.val.y), workers=args.workers)
    gen = torch.Generator().manual_seed(0)
    evals, rungs = [], []
    for _ in range(args.passes):
        t0 = time.perf_counter()
        for _x, _y in val.head(360).batches(500):  # the metric on the validation subset
            pass
        evals.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _idx, _x, _y in train.sample(64, 40, gen):  # a 40-step recovery rung
            pass
        rungs.append(time.perf_counter() - t0)
    figures = {"eval_pass_ms": round(1e3 * statistics.median(evals), 1),
               "rung_pass_ms": round(1e3 * statistics.median(rungs), 1),
               "workers": args.workers, "passes": args.passes, "load": monitor.summary(),
               "package": str(Path(__import__("autoprune").__file__).parent), "pid": os.getpid()}
    print(json.dumps(figures) if args.json else figures)


if __name__ == "__main__":
    main()
