"""Screen fidelity, measured: does a cheap score rank pruned candidates as their final accuracy does?

A search screens many plans cheaply and trains only the best (``autoprune/screen.py``);
the search's rungs (40, 160, 640 fine-tune steps) then decide what the front shows.
Each of those figures is sound only as far as it ranks candidates as the final
accuracy (the full fine-tune, the whole validation set) would. This benchmark draws
plans of the space, spread over its shared ratio, and for each one computes every
scoring method's figure and its cost (the task's metric on the scoring images after each
screen, and a loss-based figure of each: the divergence from the unpruned model's
outputs), then the search's recovery through every rung and the final fine-tune, and
reports Kendall's tau of each figure against the final
accuracy:

- over all candidates (they span the latency range, so capacity explains much of it);
- over the pairs of candidates whose measured latencies are within 25% of each other
  (``local tau``): what a screen must tell apart to choose between plans of one speed.

``--seed 0,1`` pools several seeds' candidates into one ranking (each seed's tau and a
bootstrap interval beside); ``--refinal`` trains each candidate to final once more under
another seed, and the first final ranked by the second is the ceiling that the training's
own noise sets on any figure.

Rows go to a JSON-lines file as they finish, and a run resumes from it.

Run: ``.venv/bin/python benchmarks/fidelity.py [--candidates 14] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import math
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _machine import LoadMonitor, add_load_arguments, append_row, facts, read_rows, write_rows  # noqa: E402

# (name, ScreenConfig overrides); "zero-shot" is scored with no BatchNorm re-estimation
METHODS = {
    "zero-shot": None,
    "adaptive BN": {"steps": 0},
    "adaptive BN + 10 steps": {"steps": 10},
    "adaptive BN + 20 steps": {"steps": 20},
    "adaptive BN + 40 steps": {"steps": 40},
}
# A loss-based figure of each re-estimated screen: minus the mean KL divergence of the
# screened model's outputs from the unpruned model's on the scoring images. A continuous
# figure where the accuracy on 1000 images moves in steps of 0.1 point; the issue names
# a loss-based score as an alternative to measure.
KL = {f"{name}, teacher KL": name for name, overrides in METHODS.items() if overrides is not None}
FIGURES = [*METHODS, *KL]


def plans(resolved, n: int, seed: int, low: float, high: float):
    """``n`` plans of the space, their shared ratios evenly spaced over [low, high]
    (the rest of each plan drawn at random, as the screen draws it)."""
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    step = resolved.space.global_ratio.range.step  # on the space's grid, or Optuna refuses the value
    for i in range(n):
        study.enqueue_trial({"ratio": round(round((low + (high - low) * i / max(1, n - 1)) / step) * step, 4)})
    return [resolved.suggest(study.ask()) for _ in range(n)]


def spread_order(n: int) -> list[int]:
    """Indices 0..n-1 in an order whose every prefix spans the range (both ends, then the
    middles of the widest gaps), so a run stopped early still covers the latency range."""
    if n <= 2:
        return list(range(n))
    order, gaps = [0, n - 1], [(0, n - 1)]
    while gaps:
        gaps.sort(key=lambda g: g[0] - g[1])  # widest first
        lo, hi = gaps.pop(0)
        if hi - lo < 2:
            continue
        mid = (lo + hi) // 2
        order.append(mid)
        gaps += [(lo, mid), (mid, hi)]
    return order


def score(ctx, model, masks, overrides, seed: int) -> float:
    from autoprune.screen import screen

    config = ctx.space.space.screen
    if overrides is None:  # plain zero-shot: the pruned model as it is
        return ctx.task.metric(model, ctx.task.val, config.samples)
    return screen(model, masks, ctx.task, dataclasses.replace(config, **overrides), ctx.distill, seed)


def teacher_kl(ctx, model, samples: int) -> float:
    """Minus the mean KL(teacher || model) per example (per pixel for a per-pixel output:
    over the class axis), first outputs only, at temperature 1, over the first ``samples``
    validation examples: higher is better, as a metric."""
    import torch

    from autoprune.recover import class_kl, flat

    total, n = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i, (x, _) in enumerate(ctx.task.val.head(samples).batches(250)):
            key = (id(ctx.task.model), samples, i)
            if key not in _TEACHER:  # the same images for every candidate: the teacher runs once
                _TEACHER[key] = flat(ctx.task.model.eval()(x))[0]
            s, t = flat(model(x))[0], _TEACHER[key]
            kl = class_kl(s, t)
            total += float(kl.sum()) / (kl.numel() / len(x))
            n += len(x)
    return -total / n


_TEACHER: dict = {}


def screens(ctx, plan, seed: int, work: Path) -> tuple[dict, object, object]:
    """One plan's latency, every screen figure and its cost, and the search's first rung
    (its figure and cost); also the model at that rung and its pruning report."""
    from autoprune import objective

    row: dict = {"plan": plan.to_dict()}
    times: dict[str, float] = {}
    start = time.perf_counter()
    pruned, report = objective.prune(ctx, plan, seed)
    prune_s = time.perf_counter() - start
    onnx = objective.export_candidate(ctx, pruned, "float32", work / "model.onnx", times).artifact
    latency, _, _ = objective.measure(ctx, onnx, work, times)
    row.update(latency_ms=latency.median_ms, mmacs=onnx.macs / 1e6)
    for name, overrides in METHODS.items():
        model = copy.deepcopy(pruned)
        t0 = time.perf_counter()
        row[name] = score(ctx, model, report.masks, overrides, seed)
        row[f"{name} s"] = prune_s + time.perf_counter() - t0
        if overrides is not None:
            t0 = time.perf_counter()
            row[f"{name}, teacher KL"] = teacher_kl(ctx, model, ctx.space.space.screen.samples)
            row[f"{name}, teacher KL s"] = row[f"{name} s"] + time.perf_counter() - t0
    rec = ctx.space.space.recovery
    t0 = time.perf_counter()
    model, report, _ = objective.prune_and_recover(ctx, plan, seed, times)
    row[f"rung {rec.finetune_steps} steps"] = ctx.task.metric(model, ctx.task.val, rec.eval_samples)
    row[f"rung {rec.finetune_steps} steps s"] = time.perf_counter() - t0
    return row, model, report


def candidate(ctx, plan, seed: int, work: Path, rungs: bool = True) -> dict:
    """Every screen figure of one plan, its latency, its rungs and its final accuracy
    (``rungs=False``: the first rung only, then the final fine-tune, as finalize trains
    a member the search stopped at its first rung)."""
    row, model, report = screens(ctx, plan, seed, work)
    rec = ctx.space.space.recovery
    t0 = time.perf_counter()
    reached, row["final"] = to_final(ctx, model, report.masks, row[f"rung {rec.finetune_steps} steps"], seed, rungs)
    row.update({f"rung {s} steps": a for s, a in reached.items()})
    # the whole recovery, first rung included (the rungs' costs are shares of it)
    row["train s"] = row[f"rung {rec.finetune_steps} steps s"] + time.perf_counter() - t0
    return row


REFINAL_SEED = 7919  # added to a candidate's seed for its second recovery (any other seed would do)


def refinal(ctx, plan, seed: int, rungs: bool = True) -> float:
    """The final accuracy of ``plan`` trained once more as :func:`candidate` trains it (first
    rung, the later rungs if ``rungs``, the final fine-tune) under another seed: two finals
    of one plan differ by the training's own noise, which bounds how well any figure can
    rank plans by their final accuracy."""
    from autoprune import objective

    seed += REFINAL_SEED
    model, report, _ = objective.prune_and_recover(ctx, plan, seed, {})
    first = ctx.task.metric(model, ctx.task.val, ctx.space.space.recovery.eval_samples) if rungs else math.nan
    return to_final(ctx, model, report.masks, first, seed, rungs)[1]


def to_final(ctx, model, masks, first: float, seed: int, rungs: bool) -> tuple[dict[int, float], float]:
    """From the first rung (``first``: its figure) to the final accuracy, as finalize trains
    a member: the later rungs if ``rungs``, then the final fine-tune, scored on the whole
    validation set. Returns the later rungs reached ({} without them) and that accuracy."""
    from autoprune import objective
    from autoprune.finalize import fine_tune

    rec = ctx.space.space.recovery
    reached = {}
    if rungs:
        reached, _ = objective.climb(ctx, model, masks, 0.0, {rec.finetune_steps: first}, seed, {})
    fine_tune(model, ctx.task, rec, rec.final_steps, masks, ctx.distill, seed=seed + rec.final_steps)
    return reached, ctx.task.metric(model, ctx.task.val)


def retime(ctx, row: dict, plan, seed: int, work: Path) -> dict:
    """``row`` with its latency and every cost measured again (the screens and the first
    rung; not the final fine-tune), for figures whose timings were taken on a busy
    machine. The figures are the ones trained to final; where a screen gives another
    figure now, ``retime_differs`` keeps both. A figure the row lacks (one added to this
    benchmark after the row was trained) is taken from this run."""
    fresh, _, _ = screens(ctx, plan, seed, work)
    figures = [*FIGURES, f"rung {ctx.space.space.recovery.finetune_steps} steps"]
    differs = {k: [row[k], fresh[k]] for k in figures if k in row and not math.isclose(row[k], fresh[k], abs_tol=1e-9)}
    timed = {k: v for k, v in fresh.items() if k.endswith(" s") or k == "latency_ms"}
    added = {k: fresh[k] for k in figures if k not in row}
    return {**row, **timed, **added, "retimed": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "retime_differs": differs}


def replay_context(task_name: str, space_name: str, device_name: str, seed: int):
    """The task, space and a search context that trains every candidate through every
    rung, float32 (the judge never stops a candidate here): what this benchmark and
    ``tilts.py`` replay plans in."""
    from autoprune.device import Device
    from autoprune.objective import Context, Stager
    from autoprune.profiles import load_profile
    from autoprune.space import load_space, resolve
    from autoprune.tasks import load_task

    task = load_task(task_name, None)
    space = load_space(space_name)
    device = Device.of(load_profile(device_name))
    resolved = resolve(space, task.model, task.example_input(1), task.ignored_layers).offer(device.profile,
                                                                                          ("float32",))
    ctx = Context(task, device, resolved, None, seed=seed,
                  stager=Stager(budget_ms=math.inf, skips=False, promote_margin=math.inf))
    return task, space, resolved, ctx


def kendall(a: pd.Series, b: pd.Series) -> float:
    from scipy.stats import kendalltau

    tau = kendalltau(a, b).statistic
    return float("nan") if tau is None or math.isnan(tau) else float(tau)


BOOTSTRAP = 2000


def bootstrap_tau(a: pd.Series, b: pd.Series, n: int = BOOTSTRAP) -> tuple[float, float]:
    """The 5th and 95th percentiles of Kendall's tau over ``n`` resamples of the
    candidates (with replacement; a fixed generator, so a report regenerates alike)."""
    import numpy as np

    rng = np.random.default_rng(0)
    x, y = a.to_numpy(), b.to_numpy()
    taus = [kendall(pd.Series(x[i]), pd.Series(y[i])) for i in rng.integers(0, len(x), (n, len(x)))]
    if all(math.isnan(t) for t in taus):  # a figure alike for every candidate ranks nothing
        return float("nan"), float("nan")
    lo, hi = np.nanpercentile(taus, [5, 95])
    return float(lo), float(hi)


def local_tau(df: pd.DataFrame, col: str, within: float = 1.25) -> tuple[float, int]:
    """Kendall's tau over the pairs whose latencies are within ``within`` x of each other."""
    conc = disc = 0
    for i, j in itertools.combinations(range(len(df)), 2):
        a, b = df.iloc[i], df.iloc[j]
        if max(a["latency_ms"], b["latency_ms"]) > within * min(a["latency_ms"], b["latency_ms"]):
            continue
        s = (a[col] - b[col]) * (a["final"] - b["final"])
        conc += s > 0
        disc += s < 0
    return ((conc - disc) / (conc + disc) if conc + disc else float("nan")), conc + disc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", default="fashion-mnist")
    parser.add_argument("--device", default="x86-ort")
    parser.add_argument("--space", default="default")
    parser.add_argument("--candidates", type=int, default=14)
    parser.add_argument("--low", type=float, default=0.2, help="the lowest shared ratio drawn")
    parser.add_argument("--high", type=float, default=0.85, help="the highest")
    parser.add_argument("--seed", "--seeds", dest="seeds", type=_seeds, metavar="N[,N...]",
                        default=[0], help="the seed that draws the plans; several (0,1,2): the report pools "
                                          "their candidates, with each seed's tau beside")
    parser.add_argument("--rungs", action=argparse.BooleanOptionalAction, default=True,
                        help="train every candidate through the search's later rungs before the final fine-tune "
                             "(--no-rungs: the first rung, then the final fine-tune; about a third cheaper)")
    parser.add_argument("--rows", type=Path, default=Path("results/benchmarks/fidelity-rows.jsonl"),
                        help="finished candidates (a run resumes from it)")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/fidelity.md"))
    parser.add_argument("--report-only", action="store_true", help="write the report from the rows file as it is")
    parser.add_argument("--max-minutes", type=float, default=math.inf,
                        help="start no candidate after this long; report the ones done (rerun to add the rest)")
    parser.add_argument("--retime", action="store_true",
                        help="measure the latency and the costs of the rows in this report again (their screens "
                             "and first rung, not the final fine-tune: minutes, not the run's hours), for rows "
                             "timed on a busy machine; their figures stay, a screen figure that comes out "
                             "otherwise now is reported")
    parser.add_argument("--refinal", action="store_true",
                        help="train every candidate of this report once more under another seed, to final "
                             "(`final again`), and rank the first final by the second: the ceiling the final "
                             "accuracy's own noise sets on any figure's tau (minutes a candidate)")
    add_load_arguments(parser)
    args = parser.parse_args()

    monitor = LoadMonitor()
    every = read_rows(args.rows)
    scratch = tempfile.TemporaryDirectory()
    began = time.monotonic()
    done: list[dict] = []
    for seed in args.seeds:
        task, space, resolved, ctx = replay_context(args.task, args.space, args.device, seed)
        drawn = plans(resolved, args.candidates, seed, args.low, args.high)
        # rows of other plans (another seed, or the space as it was) stay in the file, not in this report
        mine = [r for r in every if r["seed"] == seed and r.get("rungs", True) == args.rungs
                and any(r["plan"] == p.to_dict() for p in drawn)]
        for i in spread_order(len(drawn)):
            plan = drawn[i]
            if args.report_only or any(r["plan"] == plan.to_dict() for r in mine):
                continue
            if time.monotonic() - began > args.max_minutes * 60:
                break
            work = Path(scratch.name) / f"{seed}-{i}"
            work.mkdir()
            row = {"seed": seed, "index": i, "rungs": args.rungs, **candidate(ctx, plan, seed + i, work, args.rungs)}
            mine.append(row)
            every.append(row)  # (a --retime of this same run rewrites the file from it)
            append_row(args.rows, row)
            print(json.dumps({k: v for k, v in row.items() if k != "plan"}), file=sys.stderr, flush=True)
        if args.retime:
            for row in mine:
                work = Path(scratch.name) / f"retime-{seed}-{row['index']}"
                work.mkdir()
                plan = next(p for p in drawn if p.to_dict() == row["plan"])
                row.update(retime(ctx, row, plan, seed + row["index"], work))  # the same row in `every`
                print(json.dumps({k: v for k, v in row.items() if k != "plan"}), file=sys.stderr, flush=True)
        for row in mine if args.refinal else []:
            if "final again" in row or time.monotonic() - began > args.max_minutes * 60:
                continue
            plan = next(p for p in drawn if p.to_dict() == row["plan"])
            row["final again"] = refinal(ctx, plan, seed + row["index"], args.rungs)  # the same row in `every`
            write_rows(args.rows, every)  # (a row that changes: the file is written again, whole)
            print(json.dumps({k: row[k] for k in ("seed", "index", "final", "final again")}), file=sys.stderr,
                  flush=True)
        done += mine
    if args.retime:
        write_rows(args.rows, every)

    df = pd.DataFrame(done)
    rec, sc = space.recovery, space.screen
    deciding = next(n for n, o in METHODS.items() if o is not None and o["steps"] == sc.steps)
    rung_cols = [c for c in df if c.startswith("rung ") and not c.endswith(" s")]
    figures = [c for c in FIGURES if c in df and df[c].notna().all()]  # rows older than a figure: run --retime
    rows = []
    for col in [*figures, *rung_cols]:
        tau_local, pairs = local_tau(df, col)
        cost = df[f"{col} s"].median() if f"{col} s" in df else df["train s"].median() * (
            int(col.split()[1]) / ((rec.all_rungs[-1] if args.rungs else rec.finetune_steps) + rec.final_steps))
        rows.append({"method": col, "tau": kendall(df[col], df["final"]), "seconds_per_candidate": cost,
                     "deciding": col == deciding, "local_tau": tau_local, "local_pairs": pairs})
        if len(args.seeds) > 1:  # each seed's own figure beside the pooled one, and how far the pool is sure
            rows[-1].update({f"tau_seed_{k}": kendall(g[col], g["final"]) for k, g in df.groupby("seed")})
            rows[-1]["tau_5"], rows[-1]["tau_95"] = bootstrap_tau(df[col], df["final"])
    again = df["final again"].dropna() if "final again" in df else pd.Series(dtype=float)
    if len(again) >= 3:  # the noise ceiling: the final ranked by the same plan's final under another seed
        twice = df.loc[again.index]
        rows.append({"method": "final again (noise ceiling)", "tau": kendall(twice["final again"], twice["final"]),
                     "seconds_per_candidate": twice["train s"].median(), "deciding": False,
                     **dict(zip(("local_tau", "local_pairs"), local_tau(twice, "final again"), strict=True))})
    table = pd.DataFrame(rows)
    shown = [*(["seed"] if len(args.seeds) > 1 else []), "index", "latency_ms", "mmacs", *figures, *rung_cols, "final",
             *(["final again"] if len(again) >= 3 else [])]
    table.to_csv(args.out.with_suffix(".csv"), index=False, float_format="%.3f")
    text = (
        "# Screen fidelity: cheap scores against the final accuracy\n\n"
        f"{facts()}"
        f"- Rows in `{args.rows}` (a run resumes from them; `--report-only` rewrites this report from them).\n"
        f"- Task `{args.task}`, space `{args.space}`, device `{args.device}` (latency measured, float32 only).\n"
        f"- {len(df)} of {args.candidates * len(args.seeds)} plans drawn from the space ({args.candidates} a seed, "
        f"seeds {', '.join(map(str, args.seeds))}; done in an order that spans the range), "
        f"shared ratio evenly spaced over {args.low:g}-{args.high:g}, the rest of each plan (deviations) at random.\n"
        f"- Screens: pruned, BatchNorm re-estimated on {sc.bn_batches} batches of {sc.batch_size}, then the steps "
        f"named (distilled, lr {sc.lr:g}), scored on the first {sc.samples} validation images (search-time "
        "fidelity). `seconds_per_candidate` counts the surgery and the screen, not the latency measurement.\n"
        "- `, teacher KL`: the same screen scored by a loss instead of the metric: minus the mean KL divergence "
        "of its outputs from the unpruned model's on the same images (temperature 1; higher is better).\n"
        + (f"- Rungs: the search's recovery ({rec.finetune_steps} steps, then {list(rec.rungs)} in total, "
           if args.rungs else f"- Rungs: the search's first rung only ({rec.finetune_steps} steps, ")
        + f"{rec.eval_samples} validation images; search-time); the first rung's cost is measured (surgery, "
        "steps, scoring), a later rung's is its share of the whole training time.\n"
        f"- Final: {rec.final_steps} more steps at batch {rec.final_batch_size} after the last rung (what "
        "finalize gives a member the search trained that far), all "
        f"{len(task.val)} validation images (final fidelity).\n"
        f"- `deciding`: the figure the search uses to choose what it trains (the space's `screen:`).\n"
        + _retimed_note(df)
        + _refinal_note(df)
        + "\n## Kendall's tau against the final accuracy\n\n"
        + table.to_markdown(index=False, floatfmt=".3f") + "\n\n"
        "`local_tau` counts only the pairs of candidates within 25% of each other's latency "
        "(`local_pairs` of them)."
        + (" `tau` pools every seed's candidates (one ranking over all of them); `tau_seed_N` is one seed's "
           f"alone; `tau_5`-`tau_95`: the 90% interval of the pooled tau over {BOOTSTRAP} resamples of the "
           "candidates (bootstrap)." if len(args.seeds) > 1 else "") + "\n\n"
        "## Per candidate\n\n"
        + df[shown].sort_values("latency_ms")
        .to_markdown(index=False, floatfmt=[".3f" if c in KL else ".2f" for c in shown]) + "\n"
    )
    under = ("the re-timing's: the latencies and seconds above were measured under it" if args.retime else
             "accuracy only: load changes the run's duration, not its figures; latencies are measured under it")
    args.out.write_text(text + f"\n- {monitor.summary()} ({under})\n")
    print(text)


def _refinal_note(df: pd.DataFrame) -> str:
    """What ``--refinal`` measured, for the report (nothing: no line)."""
    if "final again" not in df or df["final again"].notna().sum() < 3:
        return ""
    twice = df[df["final again"].notna()]
    gap = (twice["final again"] - twice["final"]).abs()
    return (f"- `final again (noise ceiling)`: {len(twice)} of {len(df)} candidates trained once more to final "
            f"under another seed (`--refinal`); the two finals of one plan differ by {gap.median():.2f} points "
            f"(median; at most {gap.max():.2f}). Its tau is the first final ranked by the second: about as far "
            "as a figure can agree with a final accuracy that moves this much from one training to the next "
            "(its cost is a whole training's).\n")


def _seeds(value: str) -> list[int]:
    """``--seed``'s value: one seed or several, comma-separated (argparse names this in its error)."""
    return [int(x) for x in value.split(",")]


def _retimed_note(df: pd.DataFrame) -> str:
    """What ``--retime`` changed, for the report (nothing: no line)."""
    if "retimed" not in df or df["retimed"].isna().all():
        return ""
    retimed = df[df["retimed"].notna()]
    differs = [d for d in retimed["retime_differs"] if isinstance(d, dict) and d]
    gaps = [abs(a - b) for d in differs for k, (a, b) in d.items() if k not in KL]  # points, not divergences
    which = ("each candidate's" if len(retimed) == len(df)
             else f"{len(retimed)} of {len(df)} candidates' (the others' as trained)")
    return (f"- Latencies and seconds re-timed with `--retime` ({retimed['retimed'].max()}): {which} "
            "screens and first rung run again, not the final fine-tune; the figures are those of the run that "
            f"trained them to final. {len(retimed) - len(differs)} of {len(retimed)} candidates gave every screen "
            "figure again exactly" + (f"; the others differ by up to {max(gaps):.2f} points" if gaps else "") + ".\n")


if __name__ == "__main__":
    main()
