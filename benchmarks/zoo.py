"""Which torchvision classification models autoprune can search, and with what.

Every model from ``torchvision.models.list_models(module=torchvision.models)`` up to
``--max-params-m`` million parameters (random weights, 10 classes, 64x64 input; 96 for
Inception v3, 224 for MaxViT) goes through two steps, each in a fresh process under one time limit
per model:

1. **Plans** (``--child``): set-up's tracing with its limits (``space.resolve_task``),
   then one structured plan (L1, 0.3 of every group, round_to 8), one 2:4 plan (the
   groups it fits), and block removal where blocks exist; each exported to ONNX and
   checked against ONNX Runtime.
2. **Search**: ``autoprune search`` with 3 trials (the baseline and the uniform L1 warm
   starts at 0.5 and 0.3), a short recovery (``zoo/zoo-space.yaml``: 4 fine-tune steps),
   timed on ``zoo/zoo-x86-ort.yaml`` (x86-ort with a short timing protocol). The best
   speed-up is the unpruned latency over the fastest timed pruned trial's.

The data are scikit-learn's digits scaled up (``zoo/zoo_tasks.py``); accuracy on random
weights means nothing here and is not reported. A model "failed clearly" when the search
exited with one line (exit 2) or every pruned trial failed with a stage and reason;
"failed badly" when it crashed, hung past the limit, or printed a traceback.

Run alone on a quiet machine: ``.venv/bin/python benchmarks/zoo.py [--timeout 300]``.
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

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "zoo"))
from _machine import LoadMonitor, add_load_arguments, append_row, facts, read_rows, write_report  # noqa: E402

SPACE = HERE / "zoo" / "zoo-space.yaml"
PROFILE = HERE / "zoo" / "zoo-x86-ort.yaml"


def plans(name: str) -> dict:
    """In a child: trace ``name`` with set-up's limits, then prune it three ways and export."""
    from zoo_tasks import make_task

    from autoprune import pruning
    from autoprune.errors import SetupError
    from autoprune.export import to_onnx
    from autoprune.pruning import GroupChoice, PruningPlan
    from autoprune.space import load_space, resolve_task

    task = make_task(name, train=32, val=8)
    x = task.example_input(1)
    params = sum(p.numel() for p in task.model.parameters())
    row: dict = {"model": name, "params_M": round(params / 1e6, 1), "input": task.input_shape[-1]}
    start = time.perf_counter()
    try:
        resolved = resolve_task(load_space(str(SPACE)), task)
    except SetupError as exc:
        row.update(setup_s=round(time.perf_counter() - start, 1), setup=f"FAIL {exc}")
        return row
    row["setup_s"] = round(time.perf_counter() - start, 1)
    groups = list(resolved.found)
    row.update(groups=len(groups), grouped=sum(g.channel_groups > 1 for g in groups),
               protected=len(resolved.protected), tp_warnings=len(resolved.warnings))
    modules = dict(task.model.named_modules())
    fits = [g for g in groups if any(modules[m].weight.shape[1] % 4 == 0 for m in g.members)]
    blocks = pruning.find_blocks(task.model)
    row["blocks"] = len(blocks)
    todo = {
        "l1": PruningPlan({g.name: GroupChoice("l1", 0.3) for g in groups}, round_to=8),
        "nm_2_4": PruningPlan({g.name: GroupChoice("nm_2_4", 0.5) for g in fits}) if fits else None,
        "drop_block": PruningPlan(drop_blocks=tuple(blocks[::2])) if blocks else None,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for label, plan in todo.items():
            if plan is None:
                row[label] = "n/a"
                continue
            try:
                pruned, _ = pruning.apply(task.model, plan, x, ignored_layers=task.ignored_layers)
                art = to_onnx(pruned, x, Path(tmp) / f"{label}.onnx", parity_atol=1e-3, parity_rtol=1e-3)
                kept = art.params / params if label != "nm_2_4" else art.nonzero_params / params
                row[label] = f"ok ({'nonzero' if label == 'nm_2_4' else 'params'} {kept:.2f})"
            except Exception as exc:  # noqa: BLE001 - the table records it
                row[label] = f"FAIL {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    return row


def search(name: str, results: Path, timeout: float) -> dict:
    """A 3-trial CLI search of ``name``; what it printed and what trials.csv holds."""
    import pandas as pd

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE / "zoo"), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "autoprune", "search", "--task", f"zoo_tasks:{name}", "--device", str(PROFILE),
           "--space", str(SPACE), "--latency-budget-ms", "100000", "--trials", "3", "--study", name,
           "--results-dir", str(results), "--no-finalize", "--quiet"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"search": f"BAD no result within {timeout:g} s", "search_s": round(timeout)}
    row: dict = {"search_s": round(time.perf_counter() - start, 1)}
    err = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    if "Traceback" in proc.stderr or proc.returncode not in (0, 2):
        row["search"] = f"BAD exit {proc.returncode}: {(err or [''])[-1][:200]}"
        return row
    if proc.returncode == 2:
        row["search"] = "FAIL " + " ".join(ln.strip() for ln in err)[:300]
        return row
    trials = pd.read_csv(results / name / "trials.csv")
    base = trials[trials["baseline"].fillna(False).astype(bool)]
    pruned = trials[~trials["baseline"].fillna(False).astype(bool)]
    timed = pruned[(pruned["state"] == "COMPLETE") & pruned["latency_ms"].notna()]
    if timed.empty or base.empty:
        reasons = "; ".join(sorted({f"{s}: {r}"[:160] for s, r in zip(pruned["fail_stage"], pruned["fail_reason"],
                                                                        strict=True)}))
        row["search"] = f"FAIL no pruned trial timed ({reasons})"
        return row
    b = float(base["latency_ms"].iloc[0])
    row.update(search=f"ok ({len(timed)} of {len(pruned)} pruned trials timed)", base_ms=round(b, 3),
               best_speedup=round(b / float(timed["latency_ms"].min()), 2))
    return row


def param_count(name: str) -> float:
    """Millions of parameters, counted on the meta device (no memory, no time)."""
    import torch
    from zoo_tasks import build_model

    try:
        with torch.device("meta"):
            model = build_model(name)
    except (NotImplementedError, RuntimeError):  # an initialiser that copies data (RegNet): build it for real
        model = build_model(name)
    return sum(p.numel() for p in model.parameters()) / 1e6


def outcome(row: dict) -> str:
    parts = [str(row.get(k, "")) for k in ("setup", "search")]
    if any(p.startswith("BAD") for p in parts) or str(row.get("plans", "")).startswith("BAD"):
        return "failed badly"
    if str(row.get("search", "")).startswith("ok"):
        return "searched"
    return "failed clearly"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout", type=float, default=300, help="seconds per model, both steps together")
    parser.add_argument("--max-params-m", type=float, default=150, help="skip larger models")
    parser.add_argument("--only", nargs="*", help="these models only")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/zoo.md"))
    parser.add_argument("--rows", type=Path, help="JSON-lines file of finished models: appended as they finish, "
                        "and read back, so a stopped run resumes where it stopped")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    add_load_arguments(parser)
    args = parser.parse_args()
    if args.child:
        print("ZOO-RESULT " + json.dumps(plans(args.child)), flush=True)
        return
    import pandas as pd
    import torchvision

    monitor = LoadMonitor()
    names = args.only or torchvision.models.list_models(module=torchvision.models)
    done = {r["model"]: r for r in read_rows(args.rows)} if args.rows else {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            if name in done:
                rows.append(done[name])
                continue
            try:
                size = param_count(name)
            except Exception as exc:  # noqa: BLE001 - the table records it
                rows.append({"model": name, "plans": f"BAD cannot build it: {type(exc).__name__}: {exc}"[:200],
                             "outcome": "failed badly"})
                continue
            if size > args.max_params_m:
                rows.append({"model": name, "params_M": round(size, 1),
                             "outcome": f"skipped (over {args.max_params_m:g} M parameters)"})
                continue
            start = time.perf_counter()
            try:
                proc = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True,
                                      timeout=args.timeout)
                line = [ln for ln in proc.stdout.splitlines() if ln.startswith("ZOO-RESULT ")]
                row = json.loads(line[-1][11:]) if line else {
                    "model": name, "plans": f"BAD exit {proc.returncode}: "
                                            f"{(proc.stderr.strip().splitlines() or [''])[-1][:160]}"}
            except subprocess.TimeoutExpired:
                row = {"model": name, "plans": f"BAD no result within {args.timeout:g} s"}
            left = args.timeout - (time.perf_counter() - start)
            if "setup" not in row and "plans" not in row:
                row.update(search(name, Path(tmp), max(left, 30)))
            row["seconds"] = round(time.perf_counter() - start, 1)
            row["outcome"] = outcome(row)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            if args.rows:
                append_row(args.rows, row)
    df = pd.DataFrame(rows)
    for col in ("groups", "grouped", "protected", "blocks"):
        if col in df:
            df[col] = df[col].astype("Int64")
    counts = df["outcome"].value_counts()
    tried = df[~df["outcome"].str.startswith("skipped")]
    slowest = tried.sort_values("setup_s", ascending=False).iloc[0] if "setup_s" in tried and len(tried) else None
    cols = [c for c in ("model", "params_M", "input", "groups", "grouped", "protected", "blocks", "setup_s", "l1",
                        "nm_2_4", "drop_block", "search", "best_speedup", "seconds", "outcome") if c in df]
    fails = df[df["outcome"] != "searched"]
    detail = "\n".join(f"- **{r.model}**: {r.get('setup') or r.get('plans') or r.get('search') or r.outcome}"
                       for _, r in fails.iterrows())
    text = (
        "# autoprune across the torchvision classification models\n\n"
        + facts(monitor.summary()) + "\n"
        + f"Per model (random weights, 10 classes, 64x64 input, 96x96 for Inception v3, 224x224 for MaxViT; limit "
        f"{args.timeout:g} s for both steps): set-up tracing under its limits; L1 0.3 / 2:4 / block-removal "
        "plans pruned, exported and checked against ONNX Runtime; then a 3-trial search (baseline + uniform "
        "L1 0.5 and 0.3, 4 fine-tune steps, short timing protocol on x86-ort). Speed-ups are measured ONNX "
        "Runtime latencies (1 thread, batch 1) of the search's fastest timed pruned trial over the unpruned "
        "model; accuracy is not reported (random weights).\n\n"
        + "**Counts:** " + ", ".join(f"{k}: {v}" for k, v in counts.items())
        + (f". Slowest set-up: {slowest.model} ({slowest.setup_s:g} s)." if slowest is not None else ".")
        + "\n\n" + df[cols].to_markdown(index=False, floatfmt=".1f")
        + ("\n\n## Failures, as printed\n\n" + detail if detail else "") + "\n"
    )
    write_report(args.out, text, monitor, args.allow_noisy)
    print(text)


if __name__ == "__main__":
    main()
