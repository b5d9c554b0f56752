"""Two workers finalize a front in about half the time one does (issue 26).

One search on PostgreSQL with an artifact store runs its trials and stops before
finalize (``--no-finalize``). Its study is then copied twice (``optuna.copy_study``:
the same trials, the same front, the same files in the store), and each copy is
finalized from empty results folders:

- **one**: one ``autoprune worker`` process;
- **two**: two ``autoprune worker`` processes, each with its own results folder.

Each worker is one "machine" of one core: pinned to its own core (``taskset``) with one
torch thread. On this 2-core machine that is the only fair way to give two workers the
resources of two machines; one worker with both cores would be a different machine.
The workers fetch every trial's files from the store (their folders start empty) and
claim the members through the storage, so each member is finalized once.

Then ``autoprune export`` from a third, empty folder, given only ``--storage``,
``--study`` and ``--artifacts``, packages a finalized member; the package's ONNX model
is scored on the task's whole validation set with ONNX Runtime and must match the
member's final accuracy, and ``autoprune run`` must run it.

Run alone on a quiet machine:
``.venv/bin/python benchmarks/finalize_workers.py [--out results/benchmarks/finalize_workers.md]``
(about 15 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import LoadMonitor, add_load_arguments, facts, write_report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, core: int | None = None) -> subprocess.Popen:
    """``autoprune ARGS``; pinned to ``core`` with one torch thread when given."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    pin = []
    if core is not None:
        pin = ["taskset", "-c", str(core)]
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    quiet = ["--quiet"] if args[0] in ("search", "worker") else []
    return subprocess.Popen([*pin, sys.executable, "-m", "autoprune", *args, *quiet], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def bench_space(folder: Path, final_steps: int) -> Path:
    """The default space with a short screen, one rung and ``final_steps``: the benchmark
    times how finalizing spreads over workers, and a member's cost scales with its steps."""
    text = (REPO / "search_spaces" / "default.yaml").read_text()
    for old, new in (("  plans: 160 ", "  plans: 16 "), ("  rungs: [160, 640]", "  rungs: [160]"),
                     ("  final_steps: 800 ", f"  final_steps: {final_steps} ")):
        if old not in text:
            sys.exit(f"benchmark: search_spaces/default.yaml changed ({old.strip()!r} not found); update bench_space")
        text = text.replace(old, new)
    path = folder / "bench-space.yaml"
    path.write_text(text)
    return path


def wait(*procs: subprocess.Popen, timeout: float = 3600) -> None:
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        if p.returncode != 0:
            sys.exit(f"benchmark: {' '.join(p.args)} failed ({p.returncode}):\n{err[-3000:]}")


def copy_for_finalize(url: str, source: str, name: str, members: int) -> None:
    """``source`` copied to ``name``, renamed in its identity and set to finalize ``members``."""
    import optuna

    from autoprune import storage

    optuna.copy_study(from_study_name=source, from_storage=url, to_storage=url, to_study_name=name)
    study = optuna.load_study(study_name=name, storage=url)
    study.set_user_attr(storage.IDENTITY_ATTR, {**storage.identity(study), "study": name})
    storage.set_run_info(study, {**storage.run_info(study), "finalize": True, "final_members": members})


def finalize_arm(url: str, study: str, cores: list[int], root: Path) -> dict:
    started = time.perf_counter()
    procs = [cli("worker", "--storage", url, "--study", study, "--results-dir", str(root / f"w{i}"), core=core)
             for i, core in enumerate(cores)]
    wait(*procs)
    wall = time.perf_counter() - started
    import optuna

    states = {int(k.split(":")[1]): v for k, v in optuna.load_study(study_name=study, storage=url).user_attrs.items()
              if k.startswith("autoprune_final:")}
    return {"study": study, "workers": len(cores), "wall_s": wall, "members": len(states),
            "done": sum(s.get("state") == "done" for s in states.values()),
            "owners": len({s.get("owner") for s in states.values()}), "states": states}


def package_metric(pkg: Path, task_name: str) -> float:
    """The exported package's ONNX model scored by the task's metric on its whole
    validation set (through ONNX Runtime: :class:`autoprune.evaluate.OnnxModel`)."""
    from autoprune.evaluate import OnnxModel
    from autoprune.tasks import load_task

    task = load_task(task_name)
    return task.metric(OnnxModel(pkg / "model.onnx"), task.val)


def main() -> None:
    from autoprune.testing.postgres import postgres_server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/finalize_workers.md"))
    # digits' front is one model (its fastest is also its most accurate): fashion-mnist's has several
    parser.add_argument("--task", default="fashion-mnist")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--final-steps", type=int, default=60)
    parser.add_argument("--budget-ms", type=float, default=5.0)
    add_load_arguments(parser)
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        sys.exit("benchmark: two one-core workers need two cores")
    monitor = LoadMonitor()
    root = Path(tempfile.mkdtemp(prefix="finalize-workers-"))
    store = root / "artifacts"
    space = bench_space(root, args.final_steps)
    with postgres_server() as url:
        t0 = time.perf_counter()
        # float32 only: an INT8 member of the unpruned model needs no fine-tune, and would
        # make the members' costs unequal
        wait(cli("search", "--no-finalize", "--task", args.task, "--device", "x86-ort", "--latency-budget-ms",
                 str(args.budget_ms), "--trials", str(args.trials), "--space", str(space), "--precision", "float32",
                 "--storage", url, "--study", "searched", "--artifacts", str(store),
                 "--results-dir", str(root / "search")))
        search_s = time.perf_counter() - t0
        print(f"search: {search_s:.0f} s", flush=True)
        arms = []
        for label, cores in (("one", [0]), ("two", [0, 1])):
            copy_for_finalize(url, "searched", label, args.members)
            arm = finalize_arm(url, label, cores, root / label)
            arms.append(arm)
            print(f"{label}: {arm['members']} members in {arm['wall_s']:.0f} s by {arm['owners']} process(es)",
                  flush=True)
        # export from a third, empty folder: only the storage, the study and the store
        two = arms[1]
        member = min(n for n, s in two["states"].items() if s.get("state") == "done")
        final_acc = (two["states"][member].get("figures") or {}).get("final_accuracy")
        wait(cli("export", str(root / "empty"), "--storage", url, "--study", "two", "--trial", str(member),
                 "--artifacts", str(store), "--out", str(root / "pkg")))
        ran = subprocess.run([sys.executable, "-m", "autoprune", "run", str(root / "pkg"), "--runs", "20"],
                             env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=600)
        pkg_acc = package_metric(root / "pkg", args.task)
        manifest = json.loads((root / "pkg" / "manifest.json").read_text())
    one, two = arms
    lines = [
        "# Finalizing on several workers: one worker against two",
        "",
        facts(),
        f"Task `{args.task}`, device `x86-ort`, float32, {args.trials} trials searched on PostgreSQL with an "
        f"artifact store in {search_s:.0f} s (`--no-finalize`; the default space with a 16-plan screen, one "
        f"rung and `final_steps: {args.final_steps}`); the study copied twice, each copy finalized "
        f"(at most {args.members} members) by workers started from empty results folders. "
        "Each worker is pinned to its own core with one torch thread: one machine of one core each.",
        "",
        "| arm | workers | members finalized | processes that finalized | wall s | vs one |",
        "|---|---|---|---|---|---|",
        *(f"| {a['study']} | {a['workers']} | {a['done']} of {a['members']} | {a['owners']} | {a['wall_s']:.0f} | "
          f"{a['wall_s'] / one['wall_s']:.2f}x |" for a in arms),
        "",
        f"Wall time runs from the workers' start (each process imports torch, loads the task and fetches the "
        f"trials' files from the store) to the last one's exit.",
        "",
        "## Export from an empty folder",
        "",
        f"`autoprune export <empty> --storage URL --study two --trial {member} --artifacts STORE`: "
        f"package from `{manifest.get('files_from')}` files, manifest accuracy {manifest['metrics'].get('accuracy')}, "
        f"the member's final accuracy in the storage {final_acc}; the package's `model.onnx` scored by the "
        f"task's metric on the whole validation set with ONNX Runtime: **{pkg_acc:.2f}**. `autoprune run`: exit {ran.returncode}"
        f"{'; ' + ran.stdout.strip().splitlines()[-1] if ran.stdout.strip() else ''}.",
        "",
    ]
    write_report(args.out, "\n".join(lines) + "\n", monitor, args.allow_noisy)
    print(f"wrote {args.out}")
    if ran.returncode != 0 or final_acc is None or abs(pkg_acc - float(final_acc)) > 0.05:
        sys.exit(f"benchmark: the package does not match the finalized member ({pkg_acc} vs {final_acc}); "
                 f"run: {ran.stderr[-1000:]}")


if __name__ == "__main__":
    main()
