"""Where TVM's latency gap to ONNX Runtime comes from, how far tuning closes it, and
how well a search's candidates share one tuning database.

1. Factors, on the reference task's model (fashion-mnist, 1x1x28x28): ONNX Runtime
   (x86-ort), then TVM untuned with a generic and with this CPU's target, then
   MetaSchedule-tuned with plain and with pre-packed (blocked) weight layouts, topped
   up step by step to more trials a task on one database, then rebuilt at the search's
   budget from the filled database (is it applied?).
2. ResNet-18 at 1x3x224x224 (torchvision, random weights: latency does not depend on
   them): ONNX Runtime against TVM tuned at ``--r18-trials-per-task``, topped up step
   by step on one database (``--r18-trials-per-task 8 24``: 8 a task, then 24), with
   each engine's throughput in GFLOP/s (ResNet-18 is 1.82 GMACs a call).
3. Database reuse across a search's candidates at each ``round_to`` (8, 16, 32):
   candidates sampled from the default search space (Optuna's RandomSampler, seeded),
   each pruned and exported; a candidate's tuning tasks count as reused when an
   earlier candidate had them (the share over candidates 6 on). Both when every new
   task is tuned, and under the profile's per-candidate budget (the backend's own
   selection rule, largest tasks first).

Every latency is a median of medians from separate timing processes (the local runner,
the profile's protocol), 1 thread for both engines. Tuning runs here, on 2 cores.

Run alone on a quiet machine:
``.venv/bin/python benchmarks/tvm_vs_ort.py [--out results/benchmarks/tvm_vs_ort.md]``
(about 50 minutes). ``--r18-only`` re-runs section 2 alone and keeps sections 1 and 3
of the existing report, said as such.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

from autoprune.device import Device
from autoprune.export import to_onnx
from autoprune.profiles import DeviceProfile, load_profile
from autoprune.tasks import load_task
from autoprune.trials import TrialFailure

sys.path.insert(0, str(Path(__file__).parent))
from _machine import LoadMonitor, add_load_arguments, facts, write_report  # noqa: E402


def tvm_profile(base: DeviceProfile, db: Path, per_task: int, max_trials: int = 100_000, *,
                prepack: bool = True, target: dict | None = None, population: int | None = None,
                layout: str | None = None) -> DeviceProfile:
    """``base`` tuning every task to ``per_task`` records (0: no tuning) into ``db``."""
    tuning = dataclasses.replace(base.tvm.tuning, database=str(db), max_trials=max_trials if per_task else 0,
                                 trials_per_task=max(per_task, 1), prepack_weights=prepack,
                                 population=population or base.tvm.tuning.population)
    tvm = dataclasses.replace(base.tvm, tuning=tuning, target=target or base.tvm.target,
                              layout=layout or base.tvm.layout)
    return dataclasses.replace(base, tvm=tvm)


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
    return {"median_ms": m.median_ms, "cv": m.cv, "noisy": m.noisy, "build_s": got.build_s, **got.build_info}


def resnet18():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=1000).eval()


def factors(onnx, ort_p: DeviceProfile, tvm_p: DeviceProfile, tmp: Path, steps: list[int]) -> list[dict]:
    """The factor table's rows on one model, in order; prints each as it is done."""
    rows = []

    def add(label: str, res: dict, trials: str = "0", tuning_s: float = 0.0) -> None:
        rows.append({**res, "arm": label, "trials": trials, "tuning_s": tuning_s})  # cumulative, not res's own
        print(f"{label}: {res['median_ms']:.3f} ms (tuning {tuning_s:.0f} s)", flush=True)

    add("ONNX Runtime (x86-ort), 1 thread", build_and_time(onnx, ort_p, tmp / "ort"))
    old = {"prepack": False, "population": 64, "layout": "NCHW"}  # the profile before issue 17
    generic = {"kind": "llvm", "num-cores": 1}
    add("TVM untuned, generic x86-64 target, NCHW", build_and_time(
        onnx, tvm_profile(tvm_p, tmp / "db-none", 0, target=generic, **old), tmp / "generic"))
    add("TVM untuned, this CPU's target (`mcpu: host`), NCHW", build_and_time(
        onnx, tvm_profile(tvm_p, tmp / "db-none", 0, **old), tmp / "host"))
    first = steps[0]
    # each row adds one change to the one above, at the same budget
    arms = [("population 64, NCHW, plain weights (the old profile)", "db-old", old),
            ("+ pre-packed weights", "db-packed", {**old, "prepack": True}),
            (f"+ population {tvm_p.tvm.tuning.population}", "db-pop", {**old, "prepack": True,
                                                                       "population": None}),
            ("+ NHWC convolutions (the x86-tvm profile)", "db-profile", {})]
    for label, db, changes in arms:
        res = build_and_time(onnx, tvm_profile(tvm_p, tmp / db, first, **changes), tmp / db.replace("db", "b"))
        add(f"TVM tuned {first}/task, {label}", res, f"{first}/task", res["tuning_s"])
    total = rows[-1]["tuning_s"]
    for per_task in steps[1:]:  # the profile's database topped up
        res = build_and_time(onnx, tvm_profile(tvm_p, tmp / "db-profile", per_task), tmp / f"profile{per_task}")
        total += res["tuning_s"]
        add(f"TVM tuned {per_task}/task, the x86-tvm profile (topped up)", res, f"{per_task}/task", total)
    applied = build_and_time(onnx, tvm_profile(tvm_p, tmp / "db-profile", first), tmp / "applied")
    add(f"the same database, rebuilt at {first}/task (tuned now: {applied['tasks_tuned']}, "
        f"reused: {applied['tasks_reused']}/{applied['tasks']})", applied, "0", applied["tuning_s"])
    return rows


def reuse(task, tvm_p: DeviceProfile, tmp: Path, round_tos: list[int], n: int, seed: int) -> list[dict]:
    """Database reuse across ``n`` sampled candidates at each ``round_to``."""
    import optuna
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from autoprune.backends.tvm import relax_module, resolve_target, task_cost, task_key
    from autoprune.pruning import apply
    from autoprune.space import load_space, resolve

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    example = task.example_input(1)
    base = resolve(load_space("default"), task.model, example, task.ignored_layers)
    target = tvm.target.Target(resolve_target(tvm_p.tvm))
    tuning = tvm_p.tvm.tuning
    out = []
    for r in round_tos:
        prof = dataclasses.replace(tvm_p, tvm=dataclasses.replace(tvm_p.tvm, tuning=dataclasses.replace(tuning,
                                                                                                      round_to=r)))
        space = base.offer(prof)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        seen_all: set[str] = set()  # every task of every earlier candidate tuned
        seen_budget: set[str] = set()  # tuned under the per-candidate budget, largest first
        tasks_after = reused_all = reused_budget = 0
        widths: set[tuple] = set()
        for i in range(n):
            plan = space.suggest(study.ask())
            pruned, _ = apply(task.model, plan, example, ignored_layers=task.ignored_layers,
                              gradient_batches=[(task.train.x[:64], task.train.y[:64])])  # taylor's gradients
            widths.add(tuple(int(m.out_channels) for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)))
            onnx = to_onnx(pruned, example, tmp / f"r{r}-{i}.onnx", 1e-3)
            mod, _ = relax_module(onnx.path, prof)
            tasks = ms.relax_integration.extract_tasks(mod, target)
            keys = [task_key(t) for t in tasks]
            if i >= 5:
                tasks_after += len(keys)
                reused_all += sum(k in seen_all for k in keys)
                reused_budget += sum(k in seen_budget for k in keys)
            seen_all.update(keys)
            new = sorted(((t, k) for t, k in zip(tasks, keys, strict=True) if k not in seen_budget),
                         key=lambda tk: -task_cost(tk[0]))
            seen_budget.update(k for _, k in new[:tuning.max_trials // tuning.trials_per_task])
        out.append({"round_to": r, "candidates": n, "tasks_after": tasks_after,
                    "reuse_all": reused_all / tasks_after, "reuse_budget": reused_budget / tasks_after,
                    "distinct_tasks": len(seen_all), "distinct_widths": len(widths)})
        print(f"round_to {r}: reuse {reused_all / tasks_after:.0%} (all tuned), "
              f"{reused_budget / tasks_after:.0%} (budget)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/tvm_vs_ort.md"))
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 32],
                        help="trials a task, topped up in this order on one database (reference model)")
    parser.add_argument("--r18-trials-per-task", type=int, nargs="+", default=[8],
                        help="trials a task for ResNet-18, topped up in this order on one database")
    parser.add_argument("--skip-r18", action="store_true")
    parser.add_argument("--r18-only", action="store_true",
                        help="re-run section 2 only; sections 1 and 3 are kept from --out")
    parser.add_argument("--candidates", type=int, default=20, help="sampled candidates per round_to")
    add_load_arguments(parser)
    args = parser.parse_args()
    monitor = LoadMonitor()
    started = time.perf_counter()
    ort_p, tvm_p = load_profile("x86-ort"), load_profile("x86-tvm")
    tmp = Path(tempfile.mkdtemp(prefix="tvm-vs-ort-"))
    if args.r18_only:
        kept = args.out.read_text() if args.out.is_file() else ""
        if "## 2. ResNet-18" not in kept:
            sys.exit(f"--r18-only keeps sections 1 and 3 of {args.out}, and it has none; run without it.")
        r18 = resnet18_rows(tvm_p, ort_p, tmp, args.r18_trials_per_task)
        total = time.perf_counter() - started
        write_report(args.out, r18_only_report(kept, r18_section(r18, tvm_p, total)), monitor, args.allow_noisy)
        print(f"wrote {args.out} ({total / 60:.1f} min)")
        return
    task = load_task("fashion-mnist")
    ref = to_onnx(task.model, task.example_input(1), tmp / "ref.onnx", 1e-3)
    rows = factors(ref, ort_p, tvm_p, tmp / "ref", args.steps)
    r18 = None if args.skip_r18 else resnet18_rows(tvm_p, ort_p, tmp, args.r18_trials_per_task)
    reuse_rows = reuse(task, tvm_p, tmp / "reuse", [8, 16, 32], args.candidates, seed=0)
    total = time.perf_counter() - started
    report(args, rows, r18, reuse_rows, total, tvm_p, monitor)
    print(f"wrote {args.out} ({total / 60:.1f} min)")


R18_GFLOP = 2 * 1.814  # torchvision ResNet-18 at 224: 1.814 GMACs a call


def resnet18_rows(tvm_p: DeviceProfile, ort_p: DeviceProfile, tmp: Path, steps: list[int]) -> list[dict]:
    """ONNX Runtime, then TVM tuned to each of ``steps`` trials a task on one database
    (each row continues the last; its tuning column is the sum so far)."""
    onnx = to_onnx(resnet18(), torch.randn(1, 3, 224, 224), tmp / "r18.onnx", 1e-3)
    ort = build_and_time(onnx, short_protocol(ort_p), tmp / "r18" / "ort")
    rows = [{**ort, "engine": "ONNX Runtime (x86-ort), 1 thread", "per_task": "", "tuning_total": 0.0}]
    print("ResNet-18 ORT", f"{ort['median_ms']:.2f} ms", flush=True)
    total = 0.0
    for per_task in steps:
        res = build_and_time(onnx, short_protocol(tvm_profile(tvm_p, tmp / "r18" / "db", per_task)),
                             tmp / "r18" / f"tvm{per_task}")
        total += res["tuning_s"]
        rows.append({**res, "engine": "TVM tuned, pre-packed weights, NHWC (x86-tvm)", "per_task": per_task,
                     "tuning_total": total})
        print(f"ResNet-18 TVM {per_task}/task", f"{res['median_ms']:.2f} ms", f"tuning {total:.0f} s", flush=True)
    return rows


def r18_section(rows: list[dict], tvm_p: DeviceProfile, total_s: float | None = None) -> list[str]:
    from autoprune.backends.tvm import resolve_target

    ort_ms = rows[0]["median_ms"]
    from autoprune.runners._device import device_info

    isa = ", ".join(device_info().get("isa") or []) or "unknown"
    lines = [
        "## 2. ResNet-18, 1x3x224x224",
        "",
        "| engine | trials a task | tuning s (cumulative) | tasks | latency ms | vs ORT | GFLOP/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['per_task']} | {r['tuning_total']:.0f} | {r.get('tasks', '')} | "
                     f"{r['median_ms']:.2f} | {r['median_ms'] / ort_ms:.2f}x | "
                     f"{R18_GFLOP / (r['median_ms'] / 1000):.0f} |")
    lines += [
        "",
        "Timed with a short protocol (5-10 runs, 2 processes): a call takes tens of milliseconds. Each TVM "
        "row tops up the database of the row above it. GFLOP/s: 3.63 GFLOP a call (1.814 GMACs) over the "
        f"latency, on one core. TVM target `{resolve_target(tvm_p.tvm)}`; the CPU's vector extensions: {isa}.",
        *([f"", f"Section 2 was re-run alone (`--r18-only`) in {total_s / 60:.1f} min."] if total_s else []),
        "",
    ]
    return lines


def r18_only_report(kept: str, section: list[str]) -> str:
    """``kept`` (the last full report) with section 2 replaced and its header re-dated;
    sections 1 and 3 stay, said to be from that run."""
    head, rest = kept.split("## 2. ResNet-18", 1)
    tail = rest[rest.index("## 3."):]
    load_line = next((ln for ln in kept.splitlines() if ln.startswith("- 1-min load average")), "")
    tail = tail.replace(load_line, f"{load_line} (the full run's)" if load_line else "")
    old_date = next((ln for ln in head.splitlines() if ln.startswith("- Date:")), "- Date: unknown")
    head_lines = [ln for ln in head.splitlines() if not ln.startswith(("- Command:", "- Date:", "- Machine:",
                                                                        "- Load average"))]
    note = (f"Sections 1 and 3 are from the full run of {old_date.removeprefix('- Date: ')}; section 2 is from the run this header "
            "describes.")
    return "\n".join([head_lines[0], "", facts(), note, *head_lines[1:], *section, tail])


def report(args, rows: list[dict], r18: dict | None, reuse_rows: list[dict], total_s: float,
           tvm_p: DeviceProfile, monitor: LoadMonitor) -> None:
    import tvm

    from autoprune.backends.tvm import resolve_target

    target = resolve_target(tvm_p.tvm)
    ort_ms = rows[0]["median_ms"]
    tuning = tvm_p.tvm.tuning
    lines = [
        "# ONNX Runtime against TVM on this CPU: where the gap comes from",
        "",
        facts(),
        f"Written by `benchmarks/tvm_vs_ort.py` in {total_s / 60:.1f} min; apache-tvm {tvm.__version__}, "
        f"target `{target}`. Every latency is a median of medians from separate timing processes (the local "
        "runner, the profile's protocol), **1 thread for both engines**: ONNX Runtime's intra-op pool is 1 "
        "(x86-ort), TVM's runtime pool is 1 (`TVM_NUM_THREADS=1` in the timing process, `num-cores: 1` in "
        "the target, so schedules are not parallelised either). Both timings include the output's allocation; "
        "neither includes the input's (TVM's input tensor is made once, ONNX Runtime reads numpy in place).",
        "",
        "## 1. Factors (reference model, fashion-mnist ResNet-14, 1x1x28x28)",
        "",
        "| arm | trials | tuning s (cumulative) | TVM tasks | latency ms | vs ORT |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['trials']} | {r['tuning_s']:.0f} | {r.get('tasks', '')} | "
                     f"{r['median_ms']:.3f} | {r['median_ms'] / ort_ms:.2f}x |")
    lines += [
        "",
        "Tuning: MetaSchedule's evolutionary search (4 genetic iterations, XGBoost cost model, rounds of up "
        "to 16 trials, gradient task scheduler, the search on both cores, the schedules for one). Each tuned "
        "row adds one change to the row above it, into a fresh database; the topped-up row continues the "
        "profile's database, so its tuning time is the sum so far. Pre-packed: the weights are marked layout-free before tuning, so a schedule may read "
        "them in a blocked layout, and the build folds the rewritten weights into constants. The last row "
        "rebuilds the model at the smallest budget from the database the rows above filled: "
        "every task is found and nothing is tuned, so the records are applied at build time.",
        "",
    ]
    if r18 is not None:
        lines += r18_section(r18, tvm_p)
    lines += [
        "## 3. Tuning database reuse across a search's candidates (fashion-mnist)",
        "",
        f"{reuse_rows[0]['candidates']} candidates per row, sampled from the default search space "
        "(RandomSampler, seed 0) with every channel count raised to a multiple of `round_to`. A candidate's "
        "task is reused when an earlier candidate had it; the share is over candidates 6 on. "
        f"*Budget*: each candidate tunes at most {tuning.max_trials // tuning.trials_per_task} new tasks "
        f"(x86-tvm: {tuning.max_trials} trials, {tuning.trials_per_task} a task), the largest first, as the "
        "backend does.",
        "",
        "| round_to | reuse, every new task tuned | reuse, x86-tvm budget | distinct tasks | distinct width sets |",
        "|---|---|---|---|---|",
    ]
    for r in reuse_rows:
        lines.append(f"| {r['round_to']} | {r['reuse_all']:.0%} | {r['reuse_budget']:.0%} | "
                     f"{r['distinct_tasks']} | {r['distinct_widths']} |")
    lines.append("")
    write_report(args.out, "\n".join(lines) + "\n", monitor, args.allow_noisy)


if __name__ == "__main__":
    main()
