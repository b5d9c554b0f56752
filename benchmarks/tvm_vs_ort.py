"""Latency of ONNX Runtime against TVM untuned and TVM MetaSchedule-tuned, and tuning reuse.

Models: the reference task's model (fashion-mnist, 1x1x28x28) and torchvision
ResNet-18 at 1x3x224x224 (random weights: latency does not depend on them). For each:
ORT (x86-ort), TVM with no tuning (an empty database) and TVM tuned with MetaSchedule
into a fresh database, each timed in separate processes by the local runner under the
profile's protocol (ResNet-18 untuned runs ~1.5 s a call, so it gets a short protocol).
Then three pruned fashion-mnist candidates are built one after another on the tuned
database, which is how a search uses it: the database reuse rate is the share of their
tuning tasks already in it.

Run: ``.venv/bin/python benchmarks/tvm_vs_ort.py [--out results/benchmarks/tvm_vs_ort.md]``
(about 20 minutes on 2 cores).
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

import torch

from autoprune.device import Device
from autoprune.export import to_onnx
from autoprune.profiles import DeviceProfile, load_profile
from autoprune.pruning import GroupChoice, PruningPlan, apply
from autoprune.space import load_space, resolve
from autoprune.tasks import load_task
from autoprune.trials import TrialFailure

sys.path.insert(0, str(Path(__file__).parent))
from _machine import LoadMonitor, add_load_arguments, write_report  # noqa: E402


def tvm_profile(base: DeviceProfile, db: Path, max_trials: int, per_task: int = 8) -> DeviceProfile:
    tuning = dataclasses.replace(base.tvm.tuning, database=str(db), max_trials=max_trials, trials_per_task=per_task)
    return dataclasses.replace(base, tvm=dataclasses.replace(base.tvm, tuning=tuning))


def short_protocol(profile: DeviceProfile) -> DeviceProfile:
    m = dataclasses.replace(profile.measurement, warmup=2, min_repeats=5, max_repeats=10, max_seconds=1.0,
                            noise_retries=0, sessions=2, timeout_s=600)
    return dataclasses.replace(profile, measurement=m)


def build_and_time(onnx, profile: DeviceProfile, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    try:
        got = Device.of(profile).measure(onnx, work)  # no cache: every call builds and times
    except TrialFailure as exc:
        raise RuntimeError(f"{profile.name}: {exc.stage.value} failed: {exc.reason}") from None
    m = got.measurement
    return {"median_ms": m.median_ms, "ci": (m.ci_low_ms, m.ci_high_ms), "cv": m.cv, "noisy": m.noisy,
            "build_s": got.build_s, **got.build_info}


def resnet18():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=1000).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/tvm_vs_ort.md"))
    parser.add_argument("--r18-trials-per-task", type=int, default=4)
    add_load_arguments(parser)
    args = parser.parse_args()
    monitor = LoadMonitor()
    started = time.perf_counter()
    ort_p, tvm_p = load_profile("x86-ort"), load_profile("x86-tvm")
    tmp = Path(tempfile.mkdtemp(prefix="tvm-vs-ort-"))
    task = load_task("fashion-mnist")
    models = [("fashion-mnist ResNet-14, 1x1x28x28", task.model, task.example_input(1), 8),
              ("ResNet-18, 1x3x224x224", resnet18(), torch.randn(1, 3, 224, 224), args.r18_trials_per_task)]
    rows = []
    for label, model, x, per_task in models:
        key = label.split()[0].lower()
        onnx = to_onnx(model, x, tmp / f"{key}.onnx", 1e-3)
        big = x.numel() > 10_000
        row = {"model": label}
        row["ort"] = build_and_time(onnx, short_protocol(ort_p) if big else ort_p, tmp / key / "ort")
        print(label, "ORT", f"{row['ort']['median_ms']:.3f} ms", flush=True)
        untuned = tvm_profile(tvm_p, tmp / key / "db-empty", 0)
        row["untuned"] = build_and_time(onnx, short_protocol(untuned) if big else untuned, tmp / key / "untuned")
        print(label, "TVM untuned", f"{row['untuned']['median_ms']:.3f} ms", flush=True)
        db = tmp / key / "db"
        tuned = tvm_profile(tvm_p, db, 10_000, per_task)  # budget: every task gets per_task trials
        row["tuned"] = build_and_time(onnx, short_protocol(tuned) if big else tuned, tmp / key / "tuned")
        print(label, "TVM tuned", f"{row['tuned']['median_ms']:.3f} ms", row["tuned"]["tuning_s"], "s", flush=True)
        row["per_task"] = per_task
        rows.append(row)

    # pruned candidates built one after another on the fashion-mnist database
    space = resolve(load_space("default"), task.model, task.example_input(1), task.ignored_layers)
    names = [g.info.name for g in space.groups]
    plans = [
        ("every group -50%, round_to 8", {n: 0.5 for n in names}),
        ("every other group -50%, round_to 8", {n: 0.5 for n in names[::2]}),
        ("every group -25%, round_to 8", {n: 0.25 for n in names}),
    ]
    db = tmp / "fashion-mnist" / "db"
    reuse = []
    for label, ratios in plans:
        plan = PruningPlan({n: GroupChoice("l1", r) for n, r in ratios.items()}, 8)
        pruned, _ = apply(task.model, plan, task.example_input(1), ignored_layers=task.ignored_layers)
        onnx = to_onnx(pruned, task.example_input(1), tmp / f"cand{len(reuse)}.onnx", 1e-3)
        res = build_and_time(onnx, tvm_profile(tvm_p, db, tvm_p.tvm.tuning.max_trials), tmp / f"cand{len(reuse)}")
        ort_res = build_and_time(onnx, ort_p, tmp / f"cand{len(reuse)}-ort")
        res["ort_ms"] = ort_res["median_ms"]
        reuse.append((label, res))
        print(label, res["tasks"], res["tasks_reused"], res["tuning_s"], f"{res['median_ms']:.3f} ms", flush=True)

    total = time.perf_counter() - started
    report(args.out, rows, reuse, total, tvm_p, monitor, args.allow_noisy)
    print(f"wrote {args.out} ({total / 60:.1f} min)")


def report(out: Path, rows: list[dict], reuse: list, total_s: float, tvm_p: DeviceProfile, monitor: LoadMonitor,
           allow_noisy: bool) -> None:
    import tvm

    from autoprune.backends.tvm import resolve_target

    target = resolve_target(tvm_p.tvm)
    lines = [
        "# ONNX Runtime against TVM (untuned and MetaSchedule-tuned) on this CPU",
        "",
        f"Written by `benchmarks/tvm_vs_ort.py` in {total_s / 60:.1f} min on {platform.machine()} "
        f"({os.cpu_count()} cores, CPU `{target['mcpu']}`, load average "
        f"{os.getloadavg()[0]:.2f} at the end; the machine was shared), apache-tvm {tvm.__version__}. "
        "Every figure is a median of medians from separate timing processes (local runner), "
        "1 thread for both engines (the x86-ort and x86-tvm profiles).",
        "",
        "## Latency",
        "",
        "| model | ORT ms | TVM untuned ms | TVM tuned ms | tuned / ORT | tasks | trials per task | tuning s | compile s (tuned) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        o, u, t = r["ort"], r["untuned"], r["tuned"]
        lines.append(
            f"| {r['model']} | {o['median_ms']:.3f} | {u['median_ms']:.2f} | {t['median_ms']:.3f} | "
            f"{t['median_ms'] / o['median_ms']:.2f}x | {t['tasks']} | {r['per_task']} | {t['tuning_s']:.0f} | "
            f"{t['compile_s']:.1f} |"
        )
    lines += [
        "",
        "Untuned = an empty tuning database: TVM's default schedules (convolutions unscheduled, one thread). "
        "Tuned = every task given the stated number of MetaSchedule trials (evolutionary search, population "
        f"{tvm_p.tvm.tuning.population}, XGBoost cost model) into a fresh database. "
        "ResNet-18 is timed with a short protocol (5-10 runs, 2 processes) because untuned it takes seconds a call.",
        "",
        "## Tuning database reuse across pruned candidates (fashion-mnist)",
        "",
        f"Built in this order on the database the tuned fashion-mnist baseline filled, with the x86-tvm "
        f"profile's budget ({tvm_p.tvm.tuning.max_trials} trials a candidate, "
        f"{tvm_p.tvm.tuning.trials_per_task} a task, largest new tasks first).",
        "",
        "| candidate | tasks | reused from DB | tuned now | left default | tuning s | TVM ms | ORT ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    n_tasks = n_reused = 0
    for label, res in reuse:
        n_tasks += res["tasks"]
        n_reused += res["tasks_reused"]
        lines.append(
            f"| {label} | {res['tasks']} | {res['tasks_reused']} | {res['tasks_tuned']} | {res['tasks_default']} | "
            f"{res['tuning_s']:.0f} | {res['median_ms']:.3f} | {res['ort_ms']:.3f} |"
        )
    rate = n_reused / n_tasks if n_tasks else 0.0
    lines += ["", f"**Database reuse rate: {n_reused}/{n_tasks} tasks = {rate:.0%}.**", ""]
    write_report(out, "\n".join(lines) + "\n", monitor, allow_noisy)


if __name__ == "__main__":
    main()
