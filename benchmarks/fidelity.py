"""Proxy fidelity, measured: does a short recovery rank candidates as a full one does?

The search scores every candidate after a short recovery (the first rung, 40 steps) and
promotes the promising ones to longer rungs (160, then 640 steps in all); only the
finalized members get the full fine-tune (800 steps in all) and the whole validation
set. Promotion is sound only if the short figures rank candidates as the full ones
would. For candidates of one real search this benchmark re-runs exactly the search's
recovery (same plan, same seed, every rung, no promotion judge) and then the final
fine-tune, and reports the accuracy at each rung against the final accuracy with
Kendall's tau per rung (goal: >= 0.8 at the rungs that decide promotion).

With ``--ablation N`` it also runs N of the candidates with distillation off (labels
only, same steps): what distillation adds at equal steps.

Accuracy only: no latency is timed here, so the load figure is recorded but a busy
machine only makes the run slower, not its figures wrong.

Run: ``.venv/bin/python benchmarks/fidelity.py [--study results/<study>] [--candidates 12]``
(without ``--study`` it first runs a 24-trial search without finalize).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _machine import LoadMonitor, add_load_arguments, facts  # noqa: E402


def pick(result, k: int) -> pd.DataFrame:
    """``k`` completed pruned candidates spread evenly over the latency range (those the
    search did not fine-tune too: the replay recovers every one in full)."""
    df = result.trials
    done = df[(df["state"] == "COMPLETE") & ~df["baseline"].astype(bool)]
    done = done.sort_values("latency_ms").reset_index(drop=True)
    if len(done) <= k:
        return done
    idx = sorted({round(i * (len(done) - 1) / (k - 1)) for i in range(k)})
    return done.loc[idx]


def replay(ctx, plan, seed: int, distill: bool, final_steps: int) -> dict:
    """The search's recovery of one plan, every rung, then the final fine-tune."""
    from autoprune import objective
    from autoprune.evaluate import accuracy
    from autoprune.finalize import fine_tune

    if not distill:
        rec = dataclasses.replace(ctx.space.space.recovery, distill_weight=0.0)
        ctx = dataclasses.replace(ctx, space=dataclasses.replace(
            ctx.space, space=dataclasses.replace(ctx.space.space, recovery=rec)))
    rec = ctx.space.space.recovery
    times: dict[str, float] = {}
    start = time.perf_counter()
    model, report, _ = objective.prune_and_recover(ctx, plan, seed, times)
    first = accuracy(model, ctx.task.val, rec.eval_samples)
    rungs, _ = objective.climb(ctx, model, report.masks, 0.0, {rec.finetune_steps: first}, seed, times)
    fine_tune(model, ctx.task, rec, final_steps, report.masks, ctx.distill, seed=seed + final_steps)
    final = accuracy(model, ctx.task.val, None)
    return {**{f"acc@{s}": a for s, a in rungs.items()}, "final": final, "seconds": time.perf_counter() - start}


def kendall(a: pd.Series, b: pd.Series) -> float:
    from scipy.stats import kendalltau

    tau = kendalltau(a, b).statistic
    return float("nan") if tau is None or math.isnan(tau) else float(tau)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--study", type=Path, help="a results folder of a finished search (default: run one)")
    parser.add_argument("--trials", type=int, default=24, help="trials of the search run without --study")
    parser.add_argument("--budget-ms", type=float, default=0.8, help="its latency budget")
    parser.add_argument("--candidates", type=int, default=12)
    parser.add_argument("--ablation", type=int, default=4, help="candidates also run without distillation")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/fidelity.md"))
    add_load_arguments(parser)
    args = parser.parse_args()

    import autoprune
    from autoprune.device import Device
    from autoprune.objective import Context, Stager
    from autoprune.profiles import load_profile
    from autoprune.pruning import PruningPlan
    from autoprune.results import SearchResult
    from autoprune.space import load_space, resolve
    from autoprune.tasks import load_task
    from autoprune.trials import TrialFiles

    monitor = LoadMonitor()
    scratch = tempfile.TemporaryDirectory()
    if args.study is None:
        print(f"running a {args.trials}-trial search without finalize ...", file=sys.stderr, flush=True)
        result = autoprune.search(task="fashion-mnist", device="x86-ort", latency_budget_ms=args.budget_ms,
                                  n_trials=args.trials, results_dir=scratch.name, finalize=False, progress=False)
        source = f"a fresh {args.trials}-trial search (fashion-mnist, x86-ort, budget {args.budget_ms:g} ms, seed 0)"
    else:
        result = SearchResult.load(args.study)
        source = f"the study in `{args.study}`"
    ident = result.identity
    task = load_task(ident["task"], ident.get("data_dir"))
    space = load_space(ident["space"])
    rec = space.recovery
    resolved = resolve(space, task.model, task.example_input(1), task.ignored_layers)
    # every rung, whatever the front: the judge never stops a candidate here
    ctx = Context(task, Device.of(load_profile(ident["device"])), resolved, None, seed=ident["seed"],
                  stager=Stager(budget_ms=math.inf, skips=False, promote_margin=math.inf))
    chosen = pick(result, args.candidates)
    rows = []
    for i, (_, row) in enumerate(chosen.iterrows()):
        n = int(row["trial"])
        plan = PruningPlan.from_dict(json.loads(TrialFiles.of(result.study_dir, n).plan.read_text()))
        seed = ident["seed"] + n
        out = {"trial": n, "latency_ms": row["latency_ms"], "search_accuracy": row["accuracy"],
               "search_fidelity": row["fidelity"], **replay(ctx, plan, seed, True, rec.final_steps)}
        if i % max(1, len(chosen) // max(1, args.ablation)) == 0 and sum("no_kd_final" in r for r in rows) < args.ablation:
            plain = replay(ctx, plan, seed, False, rec.final_steps)
            out.update({f"no_kd_{k}": v for k, v in plain.items()})
        rows.append(out)
        print(json.dumps(out), file=sys.stderr, flush=True)
    df = pd.DataFrame(rows)
    rung_cols = [f"acc@{s}" for s in rec.all_rungs]
    taus = pd.DataFrame([{"rung (total steps)": c.split("@")[1], "decides": "promotion to the next rung"
                          if c != rung_cols[-1] else "which members the front and finalize show",
                          "Kendall tau vs final": kendall(df[c], df["final"]),
                          "mean gap to final (pt)": (df["final"] - df[c]).mean()} for c in rung_cols])
    kd = df.dropna(subset=["no_kd_final"]) if "no_kd_final" in df else df.iloc[0:0]
    kd_table = ""
    if not kd.empty:
        gains = {c: (kd[c] - kd[f"no_kd_{c}"]).mean() for c in [*rung_cols, "final"]}
        kd_table = (
            f"\n## What distillation adds at equal steps ({len(kd)} of the candidates)\n\n"
            "Mean accuracy with distillation (weight "
            f"{rec.distill_weight:g}, temperature {rec.distill_temperature:g}) minus without, same plan, seed "
            "and steps:\n\n"
            + pd.DataFrame([{"figure": k, "gain (pt)": v} for k, v in gains.items()]).to_markdown(
                index=False, floatfmt=".2f") + "\n\n"
            + kd[["trial", *rung_cols, "final", *[f"no_kd_{c}" for c in rung_cols], "no_kd_final"]].to_markdown(
                index=False, floatfmt=".2f") + "\n"
        )
    text = (
        "# Proxy fidelity: rung accuracy against the fully fine-tuned accuracy\n\n"
        f"{facts()}"
        f"- Candidates: {len(df)} completed pruned candidates of {source}, spread evenly over latency.\n"
        f"- Each candidate re-runs the search's recovery (same plan and seed; BN recalibration, "
        f"{rec.finetune_steps} steps, then every rung {list(rec.rungs)} in total steps, distillation on, "
        f"{min(len(task.val), rec.eval_samples or len(task.val))} validation images per rung), then the final fine-tune, {rec.final_steps} more steps "
        f"at batch {rec.final_batch_size} (peak lr {rec.final_lr:g}, BN re-estimated), scored on all {len(task.val)} validation images.\n"
        "- Fidelity: every rung figure is search-time; `final` is final.\n\n"
        "## Kendall's tau per rung\n\n" + taus.to_markdown(index=False, floatfmt=".3f") + "\n\n"
        "## Per candidate\n\n"
        + df[["trial", "latency_ms", "search_accuracy", "search_fidelity", *rung_cols, "final", "seconds"]]
        .to_markdown(index=False, floatfmt=".3f") + "\n" + kd_table
    )
    # Accuracy only: a busy machine makes the run slower, never its figures different, so
    # the load is recorded but the report is not refused (unlike the timing benchmarks').
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text.rstrip("\n") + f"\n\n- {monitor.summary()} (accuracy only: load changes the run's "
                        "duration, not its figures)\n")
    print(text)


if __name__ == "__main__":
    main()
