"""autoprune's search against uniform pruning and random search, measured alike.

Three arms on one task and device profile, in one run:

- **autoprune**: the search ``autoprune search`` runs (TPE, warm start, default space);
- **uniform**: every prunable group cut by the same ratio (0.1 ... 0.8) by L1 with
  ``round_to`` 8 and the space's recovery budget, what users do by hand today;
- **random**: Optuna's RandomSampler, same space and trial budget, baseline enqueued,
  no warm start.

Every candidate goes through the same pipeline (prune, recover, evaluate, export,
build, 3-process timing). The machine is shared and its latency drifts over minutes, so
the arms take turns trial by trial (the order rotates every round) and each re-measures
the unpruned baseline: drift hits all three alike.

Then every arm's front gets **the same final fine-tune**: the members the search itself
would finalize (the fastest within 1 + 3 points of the baseline and the most accurate,
at most ``--final-members``) are taken from their search-time weights to the space's
``final_steps`` more at its final batch (``autoprune.finalize.finalize_member``:
distilled, BN re-estimated), scored on the whole validation set and timed right after the baseline
(paired), the arms' members interleaved. The verdict is on those final figures.

Run: ``.venv/bin/python benchmarks/compare.py [--trials 28] [--out FILE] [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _machine import LoadMonitor, add_load_arguments, facts, load_summary, write_report

ARMS = ("autoprune", "uniform", "random", "int8-only", "uniform-int8")
UNIFORM_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
DROPS = (0.5, 1.0)  # accuracy points below the baseline


def pareto_2d(df: pd.DataFrame) -> pd.DataFrame:
    """Points no other point beats on accuracy (max) and latency (min) at once."""
    from autoprune.pareto import two_d_front  # the one front rule finalize uses too

    return two_d_front(df)


def best_speedup(
    df: pd.DataFrame, base_acc: float, base_ms: float, drop_pts: float
) -> pd.Series | None:
    ok = df[df["accuracy"] >= base_acc - drop_pts - 1e-9]  # accuracy is in percent
    if ok.empty:
        return None
    return ok.loc[ok["latency_ms"].idxmin()]


class SearchArm:
    """One autoprune study driven a trial at a time (what ``search()`` runs, in turns)."""

    def __init__(self, name: str, root: Path, args, sampler: str, warm_start: bool) -> None:
        from autoprune.search_loop import SearchConfig, open_session

        self.name = name
        self.trials = args.trials
        config = SearchConfig(
            task=args.task,
            device=args.device,
            latency_budget_ms=args.latency_budget_ms,
            n_trials=args.trials,
            study_name=name,
            results_dir=str(root),
            seed=args.seed,
            sampler=sampler,
            warm_start=warm_start,
        )
        self.session = open_session(config, log=lambda msg: print(f"[{name}] {msg}", file=sys.stderr, flush=True))
        self.study = self.session.study
        self.study_dir = self.session.study_dir

    @property
    def remaining(self) -> int:
        from autoprune.storage import finished

        return max(0, self.trials - finished(self.study))

    def step(self) -> None:
        from autoprune import results
        from autoprune.storage import counted

        self.session.run(counted(self.study) + 1)  # one more trial
        results.write_trials(self.study, self.study_dir)

    def frame(self) -> pd.DataFrame:
        from autoprune import results
        from autoprune.trials import TrialFiles

        res = results.SearchResult.load(self.study_dir)
        res.write_all()
        df = results.trials_frame(self.study)
        df["onnx"] = [str(TrialFiles.of(self.study_dir, n).onnx) for n in df["trial"]]
        return df


class UniformArm:
    """Plans cutting every group by one ratio (L1, round_to 8), run by ``run_candidate``.

    ``precision``: the candidates' precision (the baseline stays float32); ``unpruned``
    adds the unpruned model at that precision (the INT8-only arm: quantization alone).
    """

    def __init__(self, root: Path, ctx, ratios: tuple[float, ...], seed: int, name: str = "uniform",
                 precision: str = "float32", unpruned: bool = False) -> None:
        from autoprune.objective import Context, Stager
        from autoprune.pruning import GroupChoice, PruningPlan

        self.name = name
        self.root = root / name
        # every uniform candidate climbs every recovery rung (no judge cuts it short), so
        # it reaches the final fine-tune with at least the search's longest recovery
        self.ctx = Context(ctx.task, ctx.device, ctx.space, cache=None, seed=seed,
                           stager=Stager(budget_ms=math.inf, skips=False, promote_margin=math.inf))
        self.seed = seed
        names = [g.info.name for g in ctx.space.groups]
        self.queue: list[tuple[str, object]] = [("baseline", PruningPlan())]
        if unpruned:
            self.queue.append((f"unpruned {precision}", PruningPlan(precision=precision)))
        at = "" if precision == "float32" else f" {precision}"
        round_to = ctx.space._round(8, precision)  # 8, raised to what the precision's kernels want here
        self.queue += [
            (f"l1 {r:g}{at}", PruningPlan({n: GroupChoice("l1", r) for n in names}, round_to=round_to,
                                          precision=precision))
            for r in ratios
        ]
        self.queue.append(("baseline (again, at the end)", PruningPlan()))
        self.csv = self.root / "trials.csv"
        self.rows: list[dict] = (
            pd.read_csv(self.csv).to_dict("records") if self.csv.is_file() else []
        )

    @property
    def remaining(self) -> int:
        return len(self.queue) - len(self.rows)

    def step(self) -> None:
        from autoprune.objective import TrialFailure, run_candidate

        label, plan = self.queue[len(self.rows)]
        n = len(self.rows)
        trial_dir = self.root / "trials" / str(n)
        start = time.time()
        try:
            c = run_candidate(self.ctx, plan, trial_dir, self.seed + n, n)
        except TrialFailure as exc:
            self.rows.append({"trial": n, "label": label, "state": "FAIL", "fail_reason": str(exc)})
            self.frame()
            return
        self.rows.append(
            {
                "trial": n,
                "label": label,
                "state": "COMPLETE",
                "baseline": plan.is_identity and plan.precision == "float32",
                "precision": plan.precision,
                "accuracy": c.accuracy,
                "finetune_steps": c.finetune_steps,
                "latency_ms": c.latency.median_ms,
                "latency_noisy": c.latency.noisy,
                "latency_session_spread": c.latency.session_spread,
                "macs": c.onnx.macs,
                "size_mb": c.size_mb,
                "load_avg": c.latency.load_avg,
                "duration_s": time.time() - start,
                "onnx": c.onnx.path,
            }
        )
        self.frame()

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.rows)
        self.root.mkdir(parents=True, exist_ok=True)
        df.to_csv(self.csv, index=False)
        return df


def candidate_files(name: str, root: Path, trial: int):
    from autoprune.trials import TrialFiles

    return TrialFiles.of(root / name, trial)


def finalize_arms(frames: dict[str, pd.DataFrame], root: Path, ctx, members: int, log,
                  steps: int | None = None) -> pd.DataFrame:
    """The same final fine-tune and paired timing for every arm's front (see the docstring)."""
    from autoprune.deploy import load_candidate
    from autoprune.device import Device
    from autoprune.evaluate import accuracy
    from autoprune.finalize import choose_rows, finalize_member
    from autoprune.results import DEFAULT_MAX_DROP
    from autoprune.trials import TrialFailure

    task, space = ctx.task, ctx.space.space
    rec = space.recovery
    steps = rec.final_steps if steps is None else steps
    device = Device.open(ctx.device.name, fresh=True)
    base_acc = float(pd.concat(frames.values()).query("baseline == True")["accuracy"].median())
    queues = {}
    for arm, df in frames.items():
        done = df[(df["state"] == "COMPLETE") & ~df["baseline"].astype(bool)]
        done = done[done["accuracy"] >= base_acc - 10]
        queues[arm] = list(choose_rows(done, base_acc, DEFAULT_MAX_DROP, members).itertuples())
    base_full = accuracy(task.model, task.val, None)
    rows = []
    while any(queues.values()):  # interleaved, one member of each arm in turn
        for arm, queue in queues.items():
            if not queue:
                continue
            row = queue.pop(0)
            files = candidate_files(arm, root, int(row.trial))
            files.final.dir.mkdir(parents=True, exist_ok=True)
            model, plan = load_candidate(task, files)
            searched = getattr(row, "finetune_steps", None)
            searched = rec.finetune_steps if searched is None or pd.isna(searched) else int(searched)
            try:
                f = finalize_member(model, plan, task, space, device, task.model, ctx.distill, steps,
                                    searched, seed=int(row.trial) + steps, out=files.final,
                                    tag=f"{arm} {int(row.trial)}", calibration_seed=ctx.seed)
            except TrialFailure as exc:
                log(f"{arm} trial {int(row.trial)}: final timing failed: {exc}")
                continue
            rows.append({"arm": arm, "trial": int(row.trial), "search_accuracy": row.accuracy,
                         "search_latency_ms": row.latency_ms, **f, "baseline_accuracy": base_full,
                         "accuracy_drop": base_full - f["final_accuracy"]})
            log(f"{arm} trial {int(row.trial)}: {row.accuracy:.2f}% ({searched} steps) -> "
                f"{f['final_accuracy']:.2f}% final, {f['paired_speedup']:.2f}x paired")
    return pd.DataFrame(rows)


def schedule(remaining: dict[str, int]) -> list[list[str]]:
    """Rounds of arm names: each arm's remaining steps spread evenly over the rounds (as
    many rounds as the longest arm needs); the order within a round rotates."""
    n = max(remaining.values(), default=0)
    at = {
        arm: {round(i * (n - 1) / max(1, k - 1)) for i in range(k)}
        if k > 1
        else ({0} if k else set())
        for arm, k in remaining.items()
    }
    rounds = []
    for r in range(n):
        arms = [arm for arm in remaining if r in at[arm]]
        shift = r % max(1, len(arms))
        rounds.append(arms[shift:] + arms[:shift])
    return rounds


def plot(
    fronts: dict[str, pd.DataFrame],
    alls: dict[str, pd.DataFrame],
    base_acc: float,
    ref_ms: float,
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"autoprune": "tab:blue", "uniform": "tab:orange", "random": "tab:green", "int8-only": "tab:red",
              "uniform-int8": "tab:purple"}
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for arm in fronts:
        a, f = alls[arm], fronts[arm]
        ax.scatter(a["latency_ms"], a["accuracy"], s=14, alpha=0.3, color=colors[arm])
        f = f.sort_values("latency_ms")
        xs = list(f["latency_ms"]) + [ref_ms]
        ys = list(f["accuracy"])
        ax.step(xs, ys + ys[-1:], where="post", color=colors[arm], lw=1.8, label=f"{arm} front")
        ax.scatter(f["latency_ms"], f["accuracy"], s=30, color=colors[arm], edgecolor="k", lw=0.5)
    for d in DROPS:
        ax.axhline(base_acc - d, color="grey", ls=":", lw=0.8)
        ax.text(ref_ms, base_acc - d, f" -{d:g} pt", va="center", fontsize=8, color="grey")
    ax.axvline(
        ref_ms, color="k", ls="--", lw=0.8, label=f"median baseline {ref_ms:.2f} ms (HV reference)"
    )
    lo = min(base_acc - 6, min(f["accuracy"].min() for f in fronts.values()))
    ax.set_ylim(max(lo, base_acc - 15), base_acc + 1)
    ax.set_xlabel("measured latency (ms, x86-ort, median of 3 processes)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Accuracy vs measured latency: three search strategies, interleaved")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="markdown report (default "
        "results/benchmarks/compare.md; with --quick, inside --results-dir)",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help="where the three studies go "
        "(default results/compare, results/compare-quick with --quick); replaced",
    )
    parser.add_argument(
        "--trials", type=int, default=20, help="trials per search arm, baseline included"
    )
    parser.add_argument("--final-members", type=int, default=5,
                        help="front members per arm given the final fine-tune")
    parser.add_argument("--task", default="fashion-mnist")
    parser.add_argument("--device", default="x86-ort")
    parser.add_argument("--latency-budget-ms", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 3 trials per search arm, 2 ratios"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --results-dir instead of replacing it",
    )
    parser.add_argument(
        "--stop-after-min",
        type=float,
        default=None,
        help="start no new round after this many minutes (arms stay balanced); "
        "a file STOP in --results-dir does the same",
    )
    add_load_arguments(parser)
    args = parser.parse_args()
    monitor = LoadMonitor()
    ratios = UNIFORM_RATIOS
    final_steps = None
    if args.quick:
        args.trials, ratios = min(args.trials, 3), (0.3, 0.6)
        args.final_members, final_steps = min(args.final_members, 2), 60
    root = args.results_dir or Path("results/compare-quick" if args.quick else "results/compare")
    out = args.out or (root / "compare.md" if args.quick else Path("results/benchmarks/compare.md"))
    if root.exists() and not args.resume:
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "STOP").unlink(missing_ok=True)

    t0 = time.time()
    arms = {
        "autoprune": SearchArm("autoprune", root, args, "tpe", True),
        "random": SearchArm("random", root, args, "random", False),
    }
    ctx = arms["autoprune"].session.ctx
    arms["uniform"] = UniformArm(root, ctx, ratios, args.seed)
    if "int8" in ctx.space.precisions:  # what a user gets from quantization alone, and with uniform pruning
        arms["int8-only"] = UniformArm(root, ctx, (), args.seed, "int8-only", "int8", unpruned=True)
        arms["uniform-int8"] = UniformArm(root, ctx, ratios, args.seed, "uniform-int8", "int8")
    tl_csv = root / "timeline.csv"
    timeline = pd.read_csv(tl_csv).to_dict("records") if tl_csv.is_file() else []
    loads = [row["load1"] for row in timeline]
    plan = schedule({name: arm.remaining for name, arm in arms.items()})
    setup_s = time.time() - t0
    stopped = ""
    for r, names in enumerate(plan):
        elapsed = (time.time() - t0) / 60
        if (root / "STOP").exists() or (
            args.stop_after_min is not None and elapsed > args.stop_after_min
        ):
            stopped = f"stopped after round {r} of {len(plan)} ({elapsed:.0f} min): time budget"
            break
        for name in names:
            start = time.time()
            arms[name].step()
            loads.append(os.getloadavg()[0])
            timeline.append(
                {
                    "round": r,
                    "wall_clock": time.strftime("%H:%M:%S"),
                    "arm": name,
                    "start_s": start - t0,
                    "s": time.time() - start,
                    "load1": loads[-1],
                }
            )
            print(
                f"round {r + 1}/{len(plan)} {name}: {time.time() - start:.1f} s, load {loads[-1]:.2f}, "
                f"elapsed {(time.time() - t0) / 60:.1f} min",
                file=sys.stderr,
                flush=True,
            )
            pd.DataFrame(timeline).to_csv(tl_csv, index=False)
    wall = time.time() - t0

    from autoprune.pareto import hypervolume_2d

    frames = {name: arm.frame() for name, arm in arms.items()}
    for name, df in frames.items():
        df["arm"] = name
    ok = {n: df[df["state"] == "COMPLETE"].copy() for n, df in frames.items()}
    bases = pd.concat(
        [
            df[df["baseline"].astype(bool)][["arm", "trial", "accuracy", "latency_ms", "load_avg"]]
            for df in ok.values()
        ]
    )
    ref_ms = float(bases["latency_ms"].median())
    base_acc = float(bases["accuracy"].median())
    fronts = {n: pareto_2d(df) for n, df in ok.items()}

    t_final = time.time()
    final = finalize_arms(frames, root, arms["autoprune"].session.ctx, args.final_members,
                          log=lambda msg: print(f"[final] {msg}", file=sys.stderr, flush=True), steps=final_steps)
    final_s = time.time() - t_final
    final.to_csv(root / "final.csv", index=False)
    present = [n for n in ARMS if n in frames]
    final_rows = []
    for n in present:
        f = final[final["arm"] == n] if not final.empty else final
        row = {"arm": n, "finalized": len(f)}
        for d in DROPS:
            within = f[f["accuracy_drop"] <= d + 1e-9] if not f.empty else f
            best = within.loc[within["paired_speedup"].idxmax()] if not within.empty else None
            row[f"final best speedup <= {d:g} pt"] = (
                f"{best['paired_speedup']:.2f}x ({best['final_accuracy']:.2f}%, #{int(best['trial'])})"
                if best is not None else "none")
            row[f"_x{d:g}"] = float(best["paired_speedup"]) if best is not None else float("nan")
        # final points on a common scale: latency as a share of the paired baseline's
        pts = pd.DataFrame({"accuracy": f["final_accuracy"], "latency_ms": 1.0 / f["paired_speedup"]}) \
            if not f.empty else pd.DataFrame({"accuracy": [], "latency_ms": []})
        base_full = float(final["baseline_accuracy"].iloc[0]) if not final.empty else float("nan")
        row["final HV / (base acc x baseline latency)"] = hypervolume_2d(pts, 1.0) / base_full
        final_rows.append(row)
    final_df = pd.DataFrame(final_rows)
    by_arm = final_df.set_index("arm")
    ratio = {d: by_arm.loc["autoprune", f"_x{d:g}"] / by_arm.loc["uniform", f"_x{d:g}"] for d in DROPS}
    over_int8 = ({d: by_arm.loc["autoprune", f"_x{d:g}"] / by_arm.loc["int8-only", f"_x{d:g}"] for d in DROPS}
                 if "int8-only" in by_arm.index else None)
    final_df = final_df[[c for c in final_df.columns if not c.startswith("_x")]]

    summary = []
    for n in present:
        df, f = ok[n], fronts[n]
        own_base = bases[bases["arm"] == n]["latency_ms"].median()
        row = {
            "arm": n,
            "candidates": len(frames[n]),
            "completed": len(df),
            "front size": len(f),
            "hypervolume (acc x ms)": hypervolume_2d(df, ref_ms),
            "HV / (base acc x ref ms)": hypervolume_2d(df, ref_ms) / (base_acc * ref_ms),
            "own baseline ms": own_base,
            "noisy (3-process spread > 15%)": f"{int(df['latency_noisy'].astype(bool).sum())}/{len(df)}",
        }
        for d in DROPS:
            best = best_speedup(df, base_acc, ref_ms, d)
            row[f"best speedup <= {d:g} pt"] = (
                f"{ref_ms / best['latency_ms']:.2f}x ({best['latency_ms']:.3f} ms, "
                f"{best['accuracy']:.2f}%, #{int(best['trial'])})"
                if best is not None
                else "none"
            )
        summary.append(row)
    summary_df = pd.DataFrame(summary)

    png = out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(fronts, ok, base_acc, ref_ms, png)
    cols = [
        "arm",
        "trial",
        "accuracy",
        "latency_ms",
        "macs",
        "size_mb",
        "latency_noisy",
        "load_avg",
    ]
    every = pd.concat(
        [df.assign(label=df.get("label", df.get("warm_start"))) for df in ok.values()]
    )
    every[[*cols, "label"]].to_csv(out.with_suffix(".csv"), index=False)
    front_tables = []
    for n in present:
        f = fronts[n].copy()
        f["accuracy_%"] = f["accuracy"]
        f["drop_pt"] = base_acc - f["accuracy"]
        f["speedup"] = ref_ms / f["latency_ms"]
        f["MMACs"] = f["macs"] / 1e6
        front_tables.append(
            f"### {n}\n\n"
            + f[
                [
                    "trial",
                    "accuracy_%",
                    "drop_pt",
                    "latency_ms",
                    "speedup",
                    "MMACs",
                    "latency_noisy",
                ]
            ].to_markdown(index=False, floatfmt=".3f")
        )
    times = pd.DataFrame(timeline).groupby("arm")["s"].agg(["count", "median", "sum"])
    int8_line = "" if over_int8 is None else (
        f" Against quantization alone (the INT8-only arm), autoprune's best within 1 pt is {over_int8[1.0]:.2f}x "
        f"its speed-up (within 0.5 pt: {over_int8[0.5]:.2f}x): what pruning adds on top of INT8.")
    ctx_task = arms["autoprune"].session.ctx.task
    final_rec = arms["autoprune"].session.ctx.space.space.recovery
    text = f"""# autoprune search vs uniform pruning vs random search (interleaved)

{facts()}- {load_summary(loads)}
- Task `{args.task}`, device profile `{args.device}`, default search space, seed {args.seed},
  latency budget {args.latency_budget_ms:g} ms (a constraint for the two searches; the
  uniform arm ignores it). Wall time of the last invocation {wall / 60:.1f} min ({setup_s:.0f} s
  set-up); {times["sum"].sum() / 60:.1f} min of candidate time in all ({len(timeline)} candidates,
  {pd.DataFrame(timeline)["wall_clock"].iloc[0] if timeline else "?"} to
  {pd.DataFrame(timeline)["wall_clock"].iloc[-1] if timeline else "?"} UTC).
- Budget: {args.trials} trials per search arm were planned{"; " + stopped if stopped else ""}.
  A run stopped early stops at a round boundary, so every arm had the same share of the
  wall time; the counts per arm are in the summary.

Arms, all measured by the same runner (x86-ort: ONNX Runtime CPU, 1 thread, median of
3 timing processes):

- **autoprune**: TPE + warm start (the unpruned model at INT8, then uniform L1 0.5 and 0.3 at
  INT8, enqueued after the baseline),
  exactly the study `autoprune search` creates (TPE's first 8 trials are its random
  start-up, as in the CLI); {len(frames["autoprune"])} trials including the baseline.
- **uniform**: every group cut by L1 at one ratio ({", ".join(f"{r:g}" for r in ratios)}),
  round_to 8, the search space's recovery with every rung (no promotion judge: each
  candidate gets the longest recovery); plus the baseline at the start
  and again at the end. {len(frames["uniform"])} candidates.
- **random**: Optuna RandomSampler, same space, {len(frames["random"])} trials, baseline enqueued,
  no warm start.
- **int8-only**: the unpruned model quantized by ONNX Runtime (static QDQ, per-channel,
  u8 activations and s8 weights, minmax calibration on 200 training images): what a user
  does without autoprune. Plus the float baseline at the start and at the end.
- **uniform-int8**: the uniform arm's plans (round_to 8, already a multiple of the
  profile's INT8 channel multiple, 4), quantized the same way.
  The two searches choose float32 or INT8 per candidate (the default space's
  `precision.choices`); a quantized candidate's accuracy is its own (ONNX Runtime), after
  its float model's recovery.

**Drift control.** The arms ran in turns, one candidate at a time: each round runs one
autoprune trial and one random trial, with the uniform candidates spread evenly over the
rounds, the order rotating each round, so minutes-scale drift of a shared machine hits
each arm alike (per-candidate wall clock and load in `timeline.csv` of the results dir). Every arm measured the unpruned baseline
itself; the spread of those measurements is the drift seen during the run.

**Hypervolume** is the area of the (latency, accuracy) plane an arm's completed
candidates dominate, up to the reference point accuracy 0 and latency {ref_ms:.3f} ms (the
median of all {len(bases)} baseline measurements); units accuracy (%) x ms,
computed by `autoprune.pareto.hypervolume_2d`. It is also given normalised by
baseline accuracy x reference latency (1.0 would be the baseline's accuracy at zero
latency). **Speed-up** is the median baseline latency ({ref_ms:.3f} ms) over the
candidate's latency; "<= 0.5 pt" means accuracy at least baseline accuracy
({base_acc:.2f}%) minus 0.5 percentage points (2,000 validation images, so 0.05 pt = 1 image).
Every arm scores the same 2,000 images, so the baseline's accuracy is identical in all arms.

## Verdict on final figures

Every arm's front members (at most {args.final_members} each, chosen by the rule the search's
own finalize uses) fine-tuned alike, {final_steps or final_rec.final_steps} more steps at batch
{final_rec.final_batch_size} from their search-time weights, scored on all
{len(ctx_task.val):,} validation images, each timed right after the baseline (paired
speed-up); {final_s / 60:.1f} min. Baseline accuracy on the whole set
{float(final["baseline_accuracy"].iloc[0]) if not final.empty else float("nan"):.2f}%.

{final_df.to_markdown(index=False, floatfmt=".3f")}

autoprune's best speed-up within 1 pt is {ratio[1.0]:.2f}x uniform's (within 0.5 pt:
{ratio[0.5]:.2f}x).{int8_line} The hypervolume here is over the finalized points with latency as a
share of the paired baseline's (reference 1.0, accuracy 0), normalised by the baseline's
accuracy.

{final.round(3).to_markdown(index=False) if not final.empty else "(nothing finalized)"}

## Search-time summary (short recovery, 2,000 validation images)

Search-time figures are not of one fidelity: the two searches' candidates are scored at
the rung they reached (40, 160 or 640 steps), the uniform arm's after every rung (640
steps). Only the verdict above compares like with like.

{summary_df.to_markdown(index=False, floatfmt=".3f")}

![fronts](./{png.name})

## Baseline measurements (drift during the run)

{bases.to_markdown(index=False, floatfmt=".3f")}

## Time per candidate (s)

{times.to_markdown(floatfmt=".1f")}

## Fronts (accuracy vs latency, 2-D Pareto over completed candidates)

{chr(10).join(front_tables)}

All candidates: [`{out.with_suffix(".csv").name}`](./{out.with_suffix(".csv").name}).
Studies (not committed): {", ".join(f"`{root}/{n}`" for n in present)}.
"""
    write_report(out, text, monitor, args.allow_noisy or getattr(args, "quick", False))
    print(text)


if __name__ == "__main__":
    main()
