"""Memory and throughput of a search on an image folder: 60,000 vs 6,000 PNG images.

Writes the Fashion-MNIST training images as PNG files (torchvision's ImageFolder
layout) twice, all 60,000 and the first 6,000, with the same 1,000 test images as
``val/``, and runs the same short search on each (``--task imagefolder:DIR --model
torchvision:resnet18 --input-size 32``), each in its own process. Reported per folder:
the search process's peak resident memory (its data-loading workers' largest apart),
and images per second through recovery (BN recalibration and fine-tune steps) and
evaluation, from the trials' stage times.

Goal (issue 15): peak RSS within 10% between the two folders: memory must not grow with
the data. The weights are a fresh ResNet-18's: this measures memory and throughput, so
its accuracy figures mean nothing and are not reported.

    .venv/bin/python benchmarks/imagefolder.py            # alone on a quiet machine
    .venv/bin/python benchmarks/imagefolder.py --quick    # smoke run (small folders)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml
from _machine import LoadMonitor, add_load_arguments, facts, write_report
from _pngs import write_pngs

ROOT = Path(__file__).resolve().parents[1]
SPACE = """version: 1
default: {methods: [none, l1, taylor], ratio: {low: 0.2, high: 0.6, step: 0.1}}
round_to: [8]
recovery: {finetune_steps: FT, rungs: [], eval_samples: EVAL, bn_batches: 10, batch_size: 64}
precision: {choices: [float32]}
staging: {enabled: false}
"""

CHILD = """
import json, resource, sys, time
import autoprune
args = json.loads(sys.argv[1])
start = time.perf_counter()
result = autoprune.search(**args)
self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"peak_rss_mb": self_kb / 1024, "largest_child_rss_mb": children_kb / 1024,
                  "seconds": time.perf_counter() - start}))
"""


def search(folder: Path, weights: Path, space: Path, results: Path, trials: int, workers: int | None) -> dict:
    args = {"task": f"imagefolder:{folder}", "task_args": {"model": "torchvision:resnet18", "weights": str(weights),
                                                          "input_size": 32},
            "device": "x86-ort", "latency_budget_ms": 100.0, "n_trials": trials, "space": str(space),
            "results_dir": str(results), "finalize": False, "progress": False, "workers": workers}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True,
                          cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"the search on {folder} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    study = next(results.iterdir())
    trials_df = pd.read_csv(study / "trials.csv")
    done = trials_df[(trials_df["state"] == "COMPLETE") & ~trials_df["baseline"]]
    rec = yaml.safe_load(space.read_text())["recovery"]
    # recovery reads (steps + 2 x bn_batches) batches: BN statistics before and after the fine-tune
    recovered = len(done) * (rec["finetune_steps"] + 2 * rec["bn_batches"]) * rec["batch_size"]
    scored = trials_df[trials_df["state"] == "COMPLETE"]
    out.update({
        "trials": int(len(scored)),
        "recovery_images_per_s": recovered / done["recover_s"].sum() if len(done) else float("nan"),
        "evaluation_images_per_s": scored["eval_samples"].sum() / scored["evaluate_s"].sum(),
    })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results/benchmarks/imagefolder.md")
    parser.add_argument("--quick", action="store_true", help="smoke run: 600 and 60 images, 2 trials")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--workers", type=int, default=None, help="--workers of the searches (default: autoprune's)")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "autoprune-pngs",
                        help="where the PNG folders are written (kept for the next run)")
    add_load_arguments(parser)
    args = parser.parse_args()

    import torch
    import torchvision

    big, small, val = (600, 60, 100) if args.quick else (60000, 6000, 1000)
    trials = 2 if args.quick else args.trials
    ft, n_eval = (4, 64) if args.quick else (40, 1000)
    t0 = time.time()
    folders = {n: write_pngs(args.data / f"fashion-{n}", n_train=n, n_val=val) for n in (big, small)}
    written_s = time.time() - t0
    monitor = LoadMonitor()
    start = time.time()
    rows = []
    with tempfile.TemporaryDirectory(prefix="autoprune-imagefolder-") as tmp:
        work = Path(tmp)
        torch.manual_seed(0)
        weights = work / "resnet18.pt"
        torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), weights)
        space = work / "space.yaml"
        space.write_text(SPACE.replace("FT", str(ft)).replace("EVAL", str(n_eval)))
        for n, folder in folders.items():  # the large folder first: a warm page cache favours neither
            got = search(folder, weights, space, work / f"r{n}", trials, args.workers)
            rows.append({"training images": n, **got})
    minutes = (time.time() - start) / 60
    df = pd.DataFrame(rows)
    ratio = df["peak_rss_mb"].max() / df["peak_rss_mb"].min()
    verdict = "met" if ratio <= 1.10 else "not met"
    table = df.rename(columns={"peak_rss_mb": "peak RSS, search process (MB)",
                               "largest_child_rss_mb": "largest child process peak RSS (MB)",
                               "seconds": "search wall time (s)",
                               "recovery_images_per_s": "recovery images/s",
                               "evaluation_images_per_s": "evaluation images/s"}).round(1)
    text = f"""# A search on an image folder: memory and throughput against the folder's size

{facts()}- Wall time: {minutes:.1f} min (writing the PNG folders, not timed: {written_s:.0f} s).
- Each search: `--task imagefolder:DIR --model torchvision:resnet18 --input-size 32`, x86-ort, {trials} trials
  (the baseline and {trials - 1} pruned candidates), {ft}-step recoveries at batch 64 (plus 2 x 10 BN batches),
  {n_eval} validation images scored per candidate, float32, no finalize, `--workers`
  {args.workers if args.workers is not None else "default (the cores less one, at most 4)"}.
  Fresh ResNet-18 weights: accuracy means nothing here and is not reported.
- Peak RSS is `getrusage(RUSAGE_SELF).ru_maxrss` of the search process; its child processes
  (data-loading workers and timing processes) are apart: the largest of them is shown.

{table.to_markdown(index=False)}

Peak RSS ratio, larger folder to smaller: {ratio:.3f} (goal: within 10%, {verdict}).
"""
    write_report(args.out, text, monitor, args.allow_noisy)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
