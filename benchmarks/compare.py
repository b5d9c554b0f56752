"""autoprune against the simple alternatives: equal wall time, several seeds, final figures.

Per task and seed, five arms:

- **autoprune**: the default command (``autoprune search``: the default space, its
  screen, then training of the plans it chooses), without its own finalize;
- **random**: Optuna's RandomSampler in the same space, no screen, no warm start, one
  trained trial after another until its wall time reaches autoprune's;
- **uniform**: every group cut by L1 at each ratio of the ladder (0.1 ... 0.9), float32;
- **uniform-int8**: the same plans at INT8;
- **tp-global-int8**: what a Torch-Pruning user does: ``MetaPruner(global_pruning=True)``
  with L1 importance at several ratios (its channel allocation across layers), INT8.

``--ablation`` adds two searches that split autoprune's two changes apart: the default
space without its screen (TPE, trained trials until autoprune's wall time), and the
screen on the retired per-group space (``search_spaces/retired/default-1.yaml`` with
the default space's ``screen:``; its ladder's ratios above 0.7 clip to 0.7, and it has
no tilts). They are reported in their own table and left out of ``compare.csv``, as are
autoprune's rows made with an earlier default space (each search row records its
``space_hash``; rows without one were made with ``search_spaces/retired/default-2.yaml``):
a changed default space runs the autoprune arm again, and its earlier rows stay beside it.

The fixed recipes (the last three) run their ladder once, every candidate recovered
through every rung, and report the wall time that took. Then every arm's candidates
get **the same finalize**: the members worth it (the fastest within 0.5 and within 1
point of the baseline at search time, with the search's slack, and the best within each
of three latency budgets: the baseline's latency / 4, / 8 and / 12) are fine-tuned the
space's ``final_steps`` more, scored on the whole validation set and timed right after
the baseline (paired). The unpruned model (float32, and INT8 where the arm has it) is a
candidate of every arm.

The searches get no latency budget by default (``WHOLE_FRONT_MS``, above every
candidate): the columns judge each arm's whole front (the fastest within 0.5 and 1 pt,
the best at three speeds), the ladders build theirs whole, and a search given one budget
trains only plans within it, so it would be judged on columns it was never asked about.
``--budget-ms`` asks the searches for one budget instead; their rows record it, and a
row of another budget is not reused.

Everything resumes: the searches are Optuna studies, the recipes and the finalized
members are rows in JSON-lines files under ``--results-dir``, and each finished
(task, seed, arm) is a row of ``--rows``; run the same command again to go on.
``--redo`` runs the ``--arms`` of the listed seeds again (after a change to the search
that replays show alters them): their rows stay in the rows file, marked superseded,
and their folders move to ``<results-dir>-superseded/``. Random search then ran to the
old wall time; ``--equal-wall --arms random`` brings it to the new one (a longer study
is cut to its first trials, which are what a shorter search ran: ``cut_to_wall``).

Run: ``.venv/bin/python benchmarks/compare.py [--task fashion-mnist] [--seeds 0,1,2]``
(``--quick``: a smoke run on digits).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import statistics
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _machine import LoadMonitor, add_load_arguments, append_row, command, facts, read_rows, write_rows  # noqa: E402

SEARCHES = ("autoprune", "random", "space-no-screen", "screen-old-space")
ABLATION = ("space-no-screen", "screen-old-space")  # with --ablation; autoprune is "both"
EARLIER = "autoprune-earlier-default"  # autoprune rows made with an earlier default space (a report label)
RANDOM_EARLIER = "random-earlier-default"  # random search rows made in an earlier default space (a report label)
# The arms that search the default space: their rows of an earlier one run again, and the
# report shows the old rows under these labels in the ablation table
EARLIER_LABELS = {"autoprune": EARLIER, "random": RANDOM_EARLIER}
ONE_WAVE = "autoprune-one-wave"  # autoprune rows whose screen's choice was trained in one wave (a report label)
ONE_WAVE_SPACE = "retired/default-3.yaml"  # the default space of 2026-12-06 to 07: today's, but one wave
UNTIL_WALL = ("random", "space-no-screen")  # trained trials until autoprune's wall time
ARMS = ("autoprune", "random", "uniform", "uniform-int8", "tp-global-int8")
LADDER = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
TP_RATIOS = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
DROPS = (0.5, 1.0)
BUDGETS = (4, 8, 12)  # the baseline's latency divided by these
WHOLE_FRONT_MS = 1000.0  # "no budget": far above any candidate of these tasks on x86-ort
UNRECORDED_SPACE = "retired/default-2.yaml"  # the default space of rows that did not record theirs
# Finalize times a pair again where a figure is far slower than at search time
# (autoprune/finalize.py's paired_timing) from this date on; later rows also say so
RETIMED_SINCE = "2026-12-06 23:21 UTC"
COLUMNS = ["task", "seed", "arm", "wall_s", "speedup_0_5", "speedup_1", "metric_at_4x", "metric_at_8x",
           "metric_at_12x"]


def pareto_2d(df: pd.DataFrame) -> pd.DataFrame:
    """Points no other point beats on accuracy (max) and latency (min) at once."""
    from autoprune.pareto import two_d_front  # the one front rule finalize uses too

    return two_d_front(df)


def best_speedup(df: pd.DataFrame, base_acc: float, base_ms: float, drop_pts: float) -> pd.Series | None:
    ok = df[df["accuracy"] >= base_acc - drop_pts - 1e-9]  # accuracy is in percent
    if ok.empty:
        return None
    return ok.loc[ok["latency_ms"].idxmin()]


# -- the arms: each returns its candidates (search-time figures) and its wall time ---------


def search_arm(args, task: str, seed: int, arm: str, root: Path, wall_limit: float | None):
    """autoprune's default command, or one of the searches that run until ``wall_limit``
    seconds (random search; the ablation's default space without its screen), or the
    ablation's screen on the retired space."""
    from autoprune import results, storage
    from autoprune.search_loop import SearchConfig, open_session

    if args.refinalize and not (root / arm / "config.json").is_file():
        raise SystemExit(f"--refinalize finalizes {arm}'s search of {task} seed {seed} again from its study, and "
                         f"{root / arm} has none (moved or deleted?): restore it, or leave out --refinalize to "
                         "search again")
    if args.equal_wall and not (root / arm / "config.json").is_file():
        raise SystemExit(f"--equal-wall cuts or extends {arm}'s study of {task} seed {seed}, and {root / arm} has "
                         "none (moved or deleted?): restore it, or run the arm again with --redo")
    until_wall = arm in UNTIL_WALL
    space = _screened_retired_space(root) if arm == "screen-old-space" else "default"
    if space == "default":
        _refuse_an_earlier_space(root / arm)
    config = SearchConfig(task=task, device=args.device, latency_budget_ms=_budget(args),
                          n_trials=10_000 if until_wall else args.trials, study_name=arm, results_dir=str(root),
                          seed=seed, sampler="random" if arm == "random" else "tpe", warm_start=arm != "random",
                          screen_plans=0 if until_wall else args.screen_plans, finalize=False, space=str(space))
    session = open_session(config, log=lambda m: print(f"[{task} {seed} {arm}] {m}", file=sys.stderr, flush=True))
    clock = root / f"{arm}.wall"  # wall time spent in earlier sittings
    spent = float(clock.read_text()) if clock.is_file() else 0.0

    def timed(target: int) -> None:
        nonlocal spent
        start = time.time()
        stop = threading.Event()

        def tick() -> None:  # a sitting cut short inside one long run (autoprune's) keeps its wall time
            while not stop.wait(30):
                clock.write_text(f"{spent + time.time() - start:.1f}")

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            session.run(target)
        finally:
            stop.set()
            ticker.join()
        spent += time.time() - start
        clock.write_text(f"{spent:.1f}")

    if until_wall:  # one trained trial after another until the wall time is autoprune's
        while spent < wall_limit:
            timed(storage.counted(session.study) + 1)
    else:
        timed(config.n_trials)
    df = results.trials_frame(session.study)
    if until_wall:
        df, spent = cut_to_wall(df, spent, wall_limit)
    df = df[df["state"] == "COMPLETE"].copy()
    df["dir"] = str(session.study_dir)
    return df, spent


def cut_to_wall(df: pd.DataFrame, spent: float, limit: float) -> tuple[pd.DataFrame, float]:
    """The trials a search run until ``limit`` seconds would have run, and its wall time:
    those begun before it. A study that ran longer (to the wall time of an autoprune search
    done again since) is cut rather than run again: each trial depends only on the trials
    before it (random search's plans do not depend on results at all), so its first trials
    are what the shorter search ran. Each trial's start is its place in the study's summed
    durations, scaled to ``spent`` (the loop's own seconds between trials, spread evenly);
    an interrupted trial counts none."""
    ordered = df.sort_values("trial")
    # an interrupted trial's duration spans the gap between sittings, which the clock did not count
    took = ordered["duration_s"].fillna(0.0).where(ordered["fail_stage"].astype(str) != "interrupted", 0.0)
    if spent <= limit or took.sum() <= 0:
        return df, spent
    scale = spent / took.sum()
    ends = took.cumsum() * scale
    kept = (ends - took * scale) < limit
    return df.loc[kept[kept].index], float(ends[kept].iloc[-1])


def _refuse_an_earlier_space(study_dir: Path) -> None:
    """A study folder searched in an earlier default space would resume in the space it
    recorded (studies keep theirs), and its row would then pass for today's space."""
    config = study_dir / "config.json"
    if not config.is_file():
        return
    identity = json.loads(config.read_text())
    recorded, plans = identity.get("space_hash"), identity.get("screen_plans")
    if not _alike_on(identity["task"], str(recorded), plans, screens=plans != 0):
        raise SystemExit(f"{study_dir} was searched in an earlier default space (its space hash "
                         f"{str(recorded)[:12]}): move it aside to run this arm in today's space")


def _screened_retired_space(root: Path) -> Path:
    """The space studies used before 2026-12 (a method and a ratio per group, 0.1-0.7,
    block removal; no shared ratio) with the default space's screen: the screen alone."""
    import yaml

    from autoprune.space import spaces_dir

    data = yaml.safe_load((spaces_dir() / "retired" / "default-1.yaml").read_text())
    data["screen"] = yaml.safe_load((spaces_dir() / "default.yaml").read_text())["screen"]
    data["name"] = "retired-default-1-screened"
    path = root / "screen-old-space.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def recipe_arm(ctx, arm: str, root: Path, seed: int, resolved) -> tuple[pd.DataFrame, float]:
    """A fixed ladder of plans, each recovered through every rung, timed alike."""
    from autoprune.objective import run_candidate
    from autoprune.trials import TrialFailure

    plans = ladder(ctx, arm, resolved)
    done = read_rows(root / arm / "candidates.jsonl")
    for n, (label, plan) in enumerate(plans):
        if n < len(done):
            continue
        start = time.time()
        row = {"trial": n, "label": label, "baseline": n == 0, "dir": str(root / arm)}
        try:
            c = run_candidate(ctx, plan, root / arm / "trials" / str(n), seed + n, n)
            row.update(state="COMPLETE", accuracy=c.accuracy, latency_ms=c.latency.median_ms,
                       finetune_steps=c.finetune_steps, precision=plan.precision)
        except TrialFailure as exc:
            row.update(state="FAIL", fail_reason=str(exc))
        row["seconds"] = time.time() - start
        append_row(root / arm / "candidates.jsonl", row)
        done.append(row)
    df = pd.DataFrame(done)
    return df[df["state"] == "COMPLETE"].copy(), float(df["seconds"].sum())


def ladder(ctx, arm: str, resolved) -> list[tuple[str, object]]:
    """The arm's plans: the baseline, the unpruned model at INT8, then its ratios."""
    from autoprune.pruning import GroupChoice, PruningPlan

    precision = "float32" if arm == "uniform" else "int8"
    round_to = resolved._round(8, precision)
    plans: list[tuple[str, object]] = [("baseline", PruningPlan())]
    if precision != "float32":
        plans.append(("unpruned int8", PruningPlan(precision=precision)))
    names = [g.info.name for g in resolved.groups]
    if arm.startswith("uniform"):
        plans += [(f"l1 {r:g}", PruningPlan({n: GroupChoice("l1", r) for n in names}, round_to, (), precision))
                  for r in LADDER]
    else:
        plans += [(f"tp global {r:g}", tp_global_plan(ctx, resolved, r, round_to, precision)) for r in TP_RATIOS]
    return plans


def tp_global_plan(ctx, resolved, ratio: float, round_to: int, precision: str):
    """Torch-Pruning's global L1 pruning at ``ratio``, as the per-group plan it amounts to.

    ``MetaPruner(global_pruning=True)`` ranks every group's channels against one global
    threshold; the widths it leaves, per group, become the plan's ratios (L1 keeps the
    same channels within a group), so the arm is recovered and timed by the same code.
    """
    import torch_pruning as tp

    from autoprune.pruning import GroupChoice, PruningPlan

    model = copy.deepcopy(ctx.task.model).eval()
    ignored = [model.get_submodule(name) for name in [*resolved.protected, *ctx.task.ignored_layers]]
    before = {g.info.name: model.get_submodule(g.info.name).weight.shape[0] for g in resolved.groups}
    pruner = tp.pruner.MetaPruner(model, ctx.example_input[:1], importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=ratio, global_pruning=True, max_pruning_ratio=0.95,
                                  ignored_layers=ignored, round_to=round_to)
    pruner.step()
    groups = {}
    for name, width in before.items():
        kept = model.get_submodule(name).weight.shape[0]
        groups[name] = GroupChoice("l1", round(1 - kept / width, 6) if kept < width else 0.0)
    return PruningPlan(groups, 1, (), precision)  # the widths are TP's, already rounded


# -- the same finalize for every arm -----------------------------------------------------------


def members(df: pd.DataFrame, base_acc: float, base_ms: float, n: int, slack: float) -> pd.DataFrame:
    """The candidates each goal needs: fastest within each drop (+ slack), best within each budget."""
    pool = df[~df["baseline"].astype(bool)]
    role = pool.get("label", pool.get("warm_start", pd.Series(index=pool.index, dtype=object)))
    picks = list(pool[role.astype(str).str.startswith("unpruned")].index)  # always a candidate
    for drop in DROPS:
        near = pool[pool["accuracy"] >= base_acc - drop - slack]
        picks += list(near.sort_values("latency_ms").head(2).index)
    for k in BUDGETS:
        within = pool[pool["latency_ms"] <= base_ms / k * 1.1]
        picks += list(within.sort_values("accuracy", ascending=False).head(1).index)
    return pool.loc[list(dict.fromkeys(picks))[:n]]


def finalize_arm(ctx, device, arm: str, cands: pd.DataFrame, root: Path, n: int, again: bool = False) -> pd.DataFrame:
    """Finalize an arm's members (each a record of ``<arm>.final.jsonl``, which resumes it).
    ``again``: members finalized before finalize timed slow pairs again are finalized again
    (their records stay in the file; a member's last record counts)."""
    from autoprune.results import load_candidate
    from autoprune.finalize import FINAL_SLACK, finalize_member
    from autoprune.trials import TrialFailure, TrialFiles

    rec = ctx.space.space.recovery
    base = cands[cands["baseline"].astype(bool)].iloc[0]
    records = [d for d in read_rows(root / f"{arm}.final.jsonl") if not again or "final_latency_rounds" in d]
    done = list({d["trial"]: d for d in records}.values())
    for _, row in members(cands, base["accuracy"], base["latency_ms"], n, FINAL_SLACK).iterrows():
        if any(d["trial"] == int(row["trial"]) for d in done):
            continue
        files = TrialFiles.of(row["dir"], int(row["trial"]))
        files.final.dir.mkdir(parents=True, exist_ok=True)
        model, plan = load_candidate(ctx.task, files)
        searched = 0 if pd.isna(row.get("finetune_steps")) else int(row["finetune_steps"])
        try:
            f = finalize_member(model, plan, ctx.task, ctx.space.space, device, ctx.task.model, ctx.distill,
                                rec.final_steps, searched, seed=int(row["trial"]) + rec.final_steps,
                                out=files.final, tag=f"{arm} {int(row['trial'])}", calibration_seed=ctx.seed,
                                expected_ms=float(row["latency_ms"]), expected_base_ms=float(base["latency_ms"]))
        except TrialFailure as exc:
            f = {"error": str(exc)}
        out = {"trial": int(row["trial"]), "search_accuracy": row["accuracy"], "search_latency_ms": row["latency_ms"],
               **f}
        append_row(root / f"{arm}.final.jsonl", out)
        done.append(out)
    # members finalized for a longer cut of the same study (before --equal-wall) are not this one's
    return pd.DataFrame([d for d in done if "error" not in d and d["trial"] in set(cands["trial"].astype(int))])


def verdict(final: pd.DataFrame, base_final: float) -> dict:
    """An arm's final figures: best paired speed-up within each drop, best metric per budget
    (the unpruned float32 model is a candidate of every arm)."""
    rows = [{"final_accuracy": base_final, "paired_speedup": 1.0}]
    if not final.empty:
        rows += final[["final_accuracy", "paired_speedup"]].to_dict("records")
    df = pd.DataFrame(rows)
    out = {}
    for drop, key in zip(DROPS, ("speedup_0_5", "speedup_1"), strict=True):
        ok = df[df["final_accuracy"] >= base_final - drop - 1e-9]
        out[key] = float(ok["paired_speedup"].max())
    for k in BUDGETS:
        ok = df[df["paired_speedup"] >= k]
        out[f"metric_at_{k}x"] = float(ok["final_accuracy"].max()) if not ok.empty else None
    return out


def run_seed(args, task: str, seed: int, done: list[dict], rows_path: Path, monitor: LoadMonitor) -> None:
    from autoprune.device import Device
    from autoprune.finalize import RETIMES

    first_sample = len(monitor.samples)  # a seed's own load: a report may gather seeds of several sittings
    root = args.results_dir / task / str(seed)
    if args.redo:
        _set_aside(args, task, seed, done, rows_path)
    have = {r["arm"] for r in done if r["task"] == task and r["seed"] == seed
            and _current(r, args) and not (args.refinalize and not _retimed(r))
            and not (args.equal_wall and _off_wall(r, done, args))}
    todo = [arm for arm in ARMS + (ABLATION if args.ablation else ()) if arm not in have
            and (args.arms is None or arm in args.arms)]
    if not todo:
        return
    ctx, resolved = _context(args, task, seed)
    cands: dict[str, tuple[pd.DataFrame, float]] = {}
    limits: dict[str, float] = {}  # the wall time each search run until autoprune's ran to
    for arm in todo:
        if arm in SEARCHES:
            limit = cands["autoprune"][1] if "autoprune" in cands else _wall(args, done, task, seed, "autoprune")
            if limit is None and arm in UNTIL_WALL:
                raise SystemExit(f"{arm} runs until autoprune's wall time: run the autoprune arm of seed {seed} first")
            if arm in UNTIL_WALL:
                limits[arm] = limit
            cands[arm] = search_arm(args, task, seed, arm, root, limit)
        else:
            cands[arm] = recipe_arm(ctx, arm, root, seed, resolved)
    device = Device.open(args.device, fresh=True)
    _, info = device.describe()  # the timing device's CPU and ISA (a board's own, through RPC)
    base_final = ctx.task.metric(ctx.task.model, ctx.task.val)
    for arm, (df, wall) in cands.items():
        final = finalize_arm(ctx, device, arm, df, root, args.final_members, again=args.refinalize)
        load = monitor.samples[first_sample:] or [monitor.samples[-1]]
        row = {"task": task, "seed": seed, "arm": arm, "wall_s": round(wall, 1),
               **verdict(final, base_final), "base_final": base_final,
               "finalized": len(final), "candidates": len(df),
               **({"budget_ms": _budget(args)} if arm in SEARCHES else {}),
               **({"space_hash": _space_hash()} if arm in UNTIL_WALL + ("autoprune",) else {}),
               **({"wall_limit": round(limits[arm], 1)} if arm in limits else {}),
               "final_retimes": RETIMES,
               "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "command": command(),
               **host(info, final),
               "load_median": round(statistics.median(load), 2), "load_max": round(max(load), 2)}
        if args.refinalize or args.equal_wall:  # the rows file is written again whole, the rows it replaces marked
            _supersede(rows_path, done, row, args)
        else:
            append_row(rows_path, row)
        done.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)


def host(info: dict, final: pd.DataFrame) -> dict:
    """What the seed was timed on: the device's CPU and ISA (``Device.describe``) and the
    baseline's median final latency. Two sittings on hosts that name themselves alike gave
    INT8 speed-ups 1.7-2 times apart (2026-12-05), so a report must be able to tell them apart."""
    base = pd.to_numeric(final.get("baseline_latency_ms", pd.Series(dtype=float)), errors="coerce").dropna()
    return {"cpu": info.get("cpu"), "cpu_flags": list(info.get("isa") or []),
            "base_ms": round(float(base.median()), 4) if not base.empty else None}


def _budget(args) -> float:
    return WHOLE_FRONT_MS if args.budget_ms is None else args.budget_ms


def _current(row: dict, args) -> bool:
    """Whether a row answers this invocation: a search's only at the same budget (rows
    written before the budget was recorded, 2026-12-05, ran at 0.2 ms), and autoprune's
    and random search's only in today's default space (the others are shown as
    :func:`_earlier_default`); never one finalized again since (``superseded``)."""
    return _at_budget(row, args) and not _earlier_default(row) and "superseded" not in row


def _supersede(rows_path: Path, done: list[dict], row: dict, args) -> None:
    """Add ``row`` (finalized again, ``--refinalize``) to the rows file and mark the rows it
    replaces: the same task, seed and arm, current, finalized without timing slow pairs
    again. They stay in the file, with the date of the row that replaced them."""
    key = (row["task"], row["seed"], row["arm"])
    for r in done:
        if (r["task"], r["seed"], r["arm"]) == key and _current(r, args) and (
                not _retimed(r) if args.refinalize else _off_wall(r, done, args)):
            r["superseded"] = row["date"]
    write_rows(rows_path, done + [row])


def _set_aside(args, task: str, seed: int, done: list[dict], rows_path: Path) -> None:
    """``--redo``: mark the current rows of the ``--arms`` of this seed superseded and move
    their files aside, so they run again. An arm without a current row (a redo cut short
    and run again) is left to resume; its files are moved before its rows are marked, so
    an interruption between the two moves nothing twice (no folder: nothing to move)."""
    root = args.results_dir / task / str(seed)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M")
    for arm in args.arms:
        rows = [r for r in done if (r["task"], r["seed"], r["arm"]) == (task, seed, arm) and _current(r, args)]
        if not rows:
            continue
        aside = args.results_dir.with_name(args.results_dir.name + "-superseded") / task / str(seed) / stamp
        for path in (root / arm, root / f"{arm}.wall", root / f"{arm}.final.jsonl"):
            if path.exists():
                aside.mkdir(parents=True, exist_ok=True)
                path.rename(aside / path.name)
        for r in rows:
            r["superseded"] = f"{stamp} (--redo; files in {aside})"
        print(f"[{task} {seed} {arm}] --redo: its row is kept, marked superseded; its files are in {aside}",
              file=sys.stderr, flush=True)
    write_rows(rows_path, done)


def _off_wall(row: dict, done: list[dict], args) -> bool:
    """A search row run until autoprune's wall time that ran to another than the current
    autoprune row's of its seed (``--equal-wall`` cuts or extends it): its recorded
    ``wall_limit``, or, for rows written before it was (2026-12-07), a wall time more than
    10% off (it overshoots by at most its last trial)."""
    if row["arm"] not in UNTIL_WALL:
        return False
    wall = _wall(args, done, row["task"], row["seed"], "autoprune")
    return wall is not None and _ran_to_another_wall(row, wall)


def _ran_to_another_wall(row: dict, autoprune_wall: float) -> bool:
    """Whether a row run until autoprune's wall time ran to another than ``autoprune_wall``."""
    limit = row.get("wall_limit")
    if isinstance(limit, (int, float)) and not math.isnan(limit):
        return abs(limit - autoprune_wall) > 0.5
    return abs(row["wall_s"] / autoprune_wall - 1) > 0.1


def _at_budget(row: dict, args) -> bool:
    return row["arm"] not in SEARCHES or row.get("budget_ms", 0.2) == _budget(args)


def _earlier_default(row: dict) -> bool:
    """An autoprune or random search row made in an earlier default space than today's."""
    return row["arm"] in EARLIER_LABELS and _in_earlier_space(row)


def _searched_earlier(row: dict) -> bool:
    """A random or no-screen search row made in an earlier default space than today's."""
    return row["arm"] in UNTIL_WALL and _in_earlier_space(row)


def _in_earlier_space(row: dict) -> bool:
    """Whether a search row searched otherwise than today's default space would on its
    task: its recorded ``space_hash``, or, for rows written before it was recorded
    (2026-12-06), the space then shipped (``search_spaces/retired/default-2.yaml``: no
    block removal); random search's may differ in the screen; see :func:`_alike_on`."""
    return not _alike_on(row["task"], _recorded(row), screens=row["arm"] not in UNTIL_WALL)


def _recorded(row: dict) -> str:
    """A row's space hash: recorded, or (rows written before it was) retired/default-2's."""
    recorded = row.get("space_hash")  # (NaN in a frame's rows that lack it)
    return recorded if isinstance(recorded, str) else _space_hash(UNRECORDED_SPACE)


@functools.cache
def _alike_on(task: str, recorded: str, screen_plans: int | None = None, screens: bool = True,
              space: str | None = None) -> bool:
    """Whether a default space of hash ``recorded`` (a study's: with its ``screen_plans``)
    searches ``task`` as today's (or ``space``'s, a file under ``search_spaces/``) does:
    the same space, or one that differs from it only in block removal (``depth``) on a
    model with no residual block to remove, or, for a search that screens nothing
    (``screens`` false: random search), in its screen.
    fashion-mnist-seg's U-Net has no block: its seed 0 searched again in today's space
    (2026-12-07, before two waves) finalized members of the same final mIoU at both
    budgets, to every digit, as in ``retired/default-2``; only their timings differed."""
    import dataclasses

    from autoprune.pruning import find_blocks
    from autoprune.space import load_space, space_of, spaces_dir
    from autoprune.tasks import load_task

    today = load_space(spaces_dir() / space if space else "default")
    if screen_plans is not None:
        today = today.with_screen_plans(screen_plans)
    if recorded == today.hash:
        return True
    # the space a study of that hash resumes in (the package's lookup); another hash: none shipped
    earlier = space_of({"space": "default", "space_hash": recorded, "screen_plans": screen_plans})
    if earlier.hash != recorded or dataclasses.replace(earlier, depth=today.depth, description="",
                                                       screen=earlier.screen if screens else today.screen) \
            != dataclasses.replace(today, description=""):
        return False
    return earlier.depth == today.depth or not any(today.depth.matches(b) for b in find_blocks(load_task(task).model))


@functools.cache
def _space_hash(path: str | None = None) -> str:
    """The hash of the default space (or of a space file under ``search_spaces/``)."""
    from autoprune.space import load_space, spaces_dir

    return load_space(spaces_dir() / path if path else "default").hash


def _wall(args, done: list[dict], task: str, seed: int, arm: str) -> float | None:
    return next((r["wall_s"] for r in reversed(done) if (r["task"], r["seed"], r["arm"]) == (task, seed, arm)
                 and _current(r, args)), None)


def _context(args, task_name: str, seed: int):
    from autoprune.device import Device
    from autoprune.objective import Context, Stager
    from autoprune.space import load_space, resolve
    from autoprune.tasks import load_task

    task = load_task(task_name, None)
    device = Device.open(args.device, _budget(args))
    space = load_space("default")
    resolved = resolve(space, task.model, task.example_input(1), task.ignored_layers).offer(device.profile)
    # every recipe candidate climbs every rung (no judge cuts it short)
    return Context(task, device, resolved, None, seed=seed,
                   stager=Stager(budget_ms=math.inf, skips=False, promote_margin=math.inf)), resolved


def _sittings(t: pd.DataFrame) -> str:
    """When each seed ran and the machine's load meanwhile (rows of older runs lack it)."""
    lines = []
    for seed, s in t.groupby("seed"):
        last = s.iloc[-1]
        when = last.get("date") if isinstance(last.get("date"), str) else None
        on = (f"; on {last['cpu']} ({', '.join(last['cpu_flags']) or 'ISA not reported'}), the baseline's final "
              f"latency {last['base_ms']:.3f} ms" if isinstance(last.get("cpu"), str) and pd.notna(last.get("base_ms"))
              else "; host not recorded (rows before 2026-12-06)")
        lines.append(f"- seed {seed}: " + (f"finished {when}, 1-min load median {last['load_median']:.2f} "
                                           f"(max {last['load_max']:.2f}) while it ran" if when
                                           else "date and load not recorded (an older run)") + on)
    return "\n".join(lines) + "\n"


def report(rows: pd.DataFrame, args, monitor) -> str:
    parts = []
    for task, t in rows[rows["arm"].isin(ARMS)].groupby("task", sort=False):
        agg = []
        for arm in ARMS:
            a = t[t["arm"] == arm]
            if a.empty:
                continue
            line = {"arm": arm, "seeds": len(a), "wall_s (median)": a["wall_s"].median()}
            for col in COLUMNS[4:]:
                v = pd.to_numeric(a[col], errors="coerce")
                # a seed with no candidate at a budget has no figure: the median is of those that do, and says so
                some = f" ({v.notna().sum()} of {len(v)} seeds)" if v.isna().any() else ""
                line[col] = (f"{v.median():.2f} [{v.min():.2f}-{v.max():.2f}]{some}" if v.notna().any() else "")
            agg.append(line)
        parts.append(f"## {task}\n\nMedian over seeds [min-max]; speed-ups are paired final speed-ups over "
                     "the unpruned float32 model, metrics are final (full fine-tune, whole validation set); "
                     "\"(n of m seeds)\": the other seeds' arm had no finalized candidate there.\n\n"
                     + pd.DataFrame(agg).to_markdown(index=False, floatfmt=".1f") + "\n\n" + _sittings(t))
    return ("# autoprune against uniform pruning, random search and Torch-Pruning's global pruning\n\n"
            + facts()
            + f"- Rows in `{args.rows}`, one per task, seed and arm (also `{args.out.with_suffix('.csv').name}`); "
              "the run resumes from them.\n"
            + f"- Device `{args.device}`; "
            + ("no latency budget for the searches (each builds its whole front, as the ladders do); "
               if args.budget_ms is None else f"latency budget {args.budget_ms:g} ms for the searches; ")
            + f"autoprune trains {args.trials} trials; random search runs until its wall time reaches "
              "autoprune's.\n" + _unequal_walls(rows) + _earlier_searches(rows) + _alike_searches(rows)
            + _retiming(rows) + "\n"
            + "\n".join(parts) + _commands(rows) + _ablation(rows)
            + f"\n- This invocation (seeds already in the rows do not run again): {monitor.summary()}\n")


def _unequal_walls(rows: pd.DataFrame) -> str:
    """The seeds where random search ran to another wall time than autoprune's row has
    (its ``wall_limit``; rows without one: more than 10% off): autoprune searched again
    since (``--redo``), so the two did not search equally long there."""
    off = []
    for (task, seed), t in rows[rows["arm"].isin(("autoprune", "random"))].groupby(["task", "seed"], sort=False):
        by_arm = {r["arm"]: r for r in t.to_dict("records")}
        if len(by_arm) == 2 and _ran_to_another_wall(by_arm["random"], by_arm["autoprune"]["wall_s"]):
            off.append(f"{task} seed {seed} ({by_arm['random']['wall_s']:.0f} s against "
                       f"{by_arm['autoprune']['wall_s']:.0f} s)")
    if not off:
        return ""
    return ("- Not equal wall time: random search had " + "; ".join(off)
            + ". It ran to the wall time of an earlier autoprune search of that seed.\n")


def _commands(rows: pd.DataFrame) -> str:
    """The command that made each row: the report's header names only the invocation that
    wrote it last, and a report gathers sittings of several (rows before 2026-12-07 did
    not record theirs: the notes of their sittings have them)."""
    made = rows.get("command", pd.Series(index=rows.index, dtype=object))
    recorded = made.map(lambda c: isinstance(c, str))
    lines = []
    for cmd, r in rows[recorded].groupby(made[recorded], sort=False):
        which = "; ".join(f"{task} seed {seed}: {', '.join(g['arm'])}"
                          for (task, seed), g in r.groupby(["task", "seed"]))
        lines.append(f"- {which}: `{cmd}`")
    if not recorded.all():
        lines.append("- every other row: made before rows recorded their command (2026-12-07); the note of its "
                     "sitting names it")
    return "\nThe commands that made the rows:\n\n" + "\n".join(lines) + "\n" if lines else ""


def _alike_searches(rows: pd.DataFrame) -> str:
    """Which current search rows an earlier default space made (:func:`_alike_on`)."""
    recorded = rows.get("space_hash", pd.Series(index=rows.index, dtype=object))
    old = rows[rows["arm"].isin(tuple(EARLIER_LABELS)) & (recorded != _space_hash())]
    if old.empty:
        return ""
    which = "; ".join(f"{task} seed {seed} ({', '.join(g['arm'])})"
                      for (task, seed), g in old.groupby(["task", "seed"]))
    return (f"- Search rows made with an earlier default space that stand for today's: {which}. That space searches "
            "their task as today's does: it differs only in block removal, and their task's model has no residual "
            "block to remove, or only in the screen, which random search does not use.\n")


def report_rows(done: list[dict], args) -> pd.DataFrame:
    """The rows a report shows: those that answer this invocation, and autoprune's and
    random search's rows of an earlier default space under their ``EARLIER_LABELS`` or
    ``ONE_WAVE`` (the ablation table's; not superseded ones, the later of two)."""
    current, earlier, seen = [], [], set()
    for r in reversed(done):  # a task that an earlier space searched alike can have a row of each: the later counts
        if _current(r, args) and (key := (r["task"], r["seed"], r["arm"])) not in seen:
            seen.add(key)
            current.insert(0, r)
        elif _at_budget(r, args) and _earlier_default(r) and "superseded" not in r \
                and (key := (r["task"], r["seed"], label := _earlier_label(r))) not in seen:
            seen.add(key)
            earlier.insert(0, {**r, "arm": label})
    return pd.DataFrame(current + earlier)


def _earlier_label(row: dict) -> str:
    """The report label of a row of an earlier default space: ``ONE_WAVE`` for autoprune's
    made in (or alike) the space before two waves, else ``EARLIER_LABELS``'."""
    if row["arm"] == "autoprune" and _alike_on(row["task"], _recorded(row), space=ONE_WAVE_SPACE):
        return ONE_WAVE
    return EARLIER_LABELS[row["arm"]]


def _earlier_searches(rows: pd.DataFrame) -> str:
    """Which rows searched an earlier default space than today's (moved to the ablation
    table): autoprune's and random search's."""
    def seeds(label: str) -> str:
        return ", ".join(f"{r['task']} seed {r['seed']}" for r in rows[rows["arm"] == label].to_dict("records"))

    ours, theirs, once = seeds(EARLIER), seeds(RANDOM_EARLIER), seeds(ONE_WAVE)
    return ((f"- autoprune's rows of {once} trained the screen's choice in one wave (`search_spaces/retired/"
             "default-3.yaml`, or a space that searches their task alike): they are in the ablation table, not "
             "above.\n" if once else "")
            + (f"- autoprune's rows of {ours} were made with the default space before block removal "
               "(`search_spaces/retired/default-2.yaml`): they are in the ablation table, not above.\n" if ours else "")
            + (f"- Random search's rows of {theirs} searched the default space before block removal, for the "
               "wall time of autoprune's run in that space: they are in the ablation table, not above.\n"
               if theirs else ""))


def _retimed(row: dict) -> bool:
    """Whether a row's finalize could time a spell-slowed pair again: it says (``final_retimes``),
    or it was written after ``RETIMED_SINCE``."""
    said = row.get("final_retimes")
    if isinstance(said, (int, float)) and not math.isnan(said):
        return said > 0
    date = row.get("date")
    return isinstance(date, str) and date >= RETIMED_SINCE


def _retiming(rows: pd.DataFrame) -> str:
    """Which rows' finalize timed spell-slowed pairs again: a line, or none if no row did."""
    from autoprune.finalize import RETIME_OFF

    had = rows[[_retimed(r) for r in rows.to_dict("records")]] if not rows.empty else rows
    if had.empty:
        return ""
    which = "; ".join(f"{arm} on {task} seed{'s' if len(g) > 1 else ''} {', '.join(str(x) for x in sorted(g['seed']))}"
                      for (task, arm), g in had.groupby(["task", "arm"], sort=False))
    return (f"- Finalize times a member and its baseline again where either is over {RETIME_OFF:.0%} slower than "
            f"at search time, keeping each one's fastest round (since {RETIMED_SINCE}): {which}. The other rows "
            "took one paired timing per member, so a slow spell of the host could cost a member up to 1.5x there.\n")


def _ablation(rows: pd.DataFrame) -> str:
    """The ablation's rows beside autoprune's, seed by seed (``--ablation``)."""
    arms = {EARLIER: "both, before block removal (autoprune: shared ratio and screen; retired/default-2)",
            RANDOM_EARLIER: "random search before block removal (retired/default-2; to the wall time above)",
            "space-no-screen": "the shared-ratio space alone (no screen; TPE to equal wall time)",
            "screen-old-space": "the screen alone (on the retired per-group space, retired/default-1)",
            ONE_WAVE: "autoprune, the screen's choice trained in one wave (retired/default-3)",
            "autoprune": "autoprune today (shared ratio, block removal, screen, two waves)"}
    a = rows[rows["arm"].isin(ABLATION + tuple(EARLIER_LABELS.values()) + (ONE_WAVE,))]
    if a.empty:
        return ""
    seeds = set(a["seed"])
    t = rows[rows["arm"].isin(arms) & rows["seed"].isin(seeds) & rows["task"].isin(set(a["task"]))].copy()
    t["order"] = t["arm"].map(list(arms).index)
    t = t.sort_values(["task", "seed", "order"])
    t["arm"] = [arms[r["arm"]] + (", without block removal (retired/default-2)" if _searched_earlier(r) else "")
                for r in t.to_dict("records")]
    return ("\n## Ablation\n\nFinal figures, one row per task, seed and arm (same finalize as above).\n\n"
            + t[COLUMNS].astype(object).where(t[COLUMNS].notna(), None)
            .to_markdown(index=False, floatfmt=".2f", missingval="") + "\n")  # (empty where an arm has none)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", action="append", help="task (repeat for more; default fashion-mnist)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--device", default="x86-ort")
    parser.add_argument("--budget-ms", type=float, default=None,
                        help="the searches' latency budget (default: none, each builds its whole front)")
    parser.add_argument("--trials", type=int, default=10, help="trained trials of the autoprune arm")
    parser.add_argument("--final-members", type=int, default=6)
    parser.add_argument("--screen-plans", type=int, default=None, help="the autoprune arm's (default: the space's)")
    parser.add_argument("--results-dir", type=Path, default=Path("results/compare"))
    parser.add_argument("--rows", type=Path, default=Path("results/benchmarks/compare-rows.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/compare.md"))
    parser.add_argument("--ablation", action="store_true",
                        help="also the screen alone (retired space) and the new space alone (no screen)")
    parser.add_argument("--arms", type=lambda v: v.split(","), default=None,
                        help="run only these arms (comma-separated; a sitting too short for a whole seed)")
    parser.add_argument("--refinalize", action="store_true",
                        help="finalize again the --arms' rows finalized before slow pairs were timed again "
                             f"({RETIMED_SINCE}), from their searches (not run again) or recipes; the old rows "
                             "stay in the rows file, marked superseded")
    parser.add_argument("--redo", action="store_true",
                        help="run the --arms of the listed seeds again: their current rows stay in the rows file, "
                             "marked superseded, and their files move to <results-dir>-superseded/")
    parser.add_argument("--equal-wall", action="store_true",
                        help="bring the --arms that search until autoprune's wall time (random) to it where their "
                             "row ran to another (rows before wall_limit was recorded: more than 10%% off): a longer "
                             "study is cut (its first trials), a shorter one runs on; only members not finalized yet "
                             "are finalized; the old rows stay, marked superseded")
    parser.add_argument("--quick", action="store_true", help="smoke run: digits, one seed, short ladders")
    add_load_arguments(parser)
    args = parser.parse_args()
    if args.refinalize and not args.arms:
        parser.error("--refinalize finalizes named arms again: add --arms (e.g. --arms autoprune)")
    if args.redo and not args.arms:
        parser.error("--redo runs named arms again: add --arms (e.g. --arms autoprune)")
    if sum((args.redo, args.refinalize, args.equal_wall)) > 1:
        parser.error("use one of --redo (search again), --refinalize (finalize an old search again) and "
                     "--equal-wall (bring random search to autoprune's wall time)")
    if args.equal_wall and not args.arms:
        parser.error("--equal-wall brings named arms to autoprune's wall time: add --arms (e.g. --arms random)")
    if args.arms and (unknown := set(args.arms) - set(ARMS + ABLATION)):
        parser.error(f"unknown arm(s) {', '.join(sorted(unknown))}; arms: {', '.join(ARMS + ABLATION)}")
    global LADDER, TP_RATIOS
    if args.quick:
        # one member an arm and a short screen: the suite runs this (it took 7.7 min with 2 and 16)
        args.task, args.seeds, args.trials, args.final_members = ["digits"], "0", 3, 1
        args.screen_plans = 8
        LADDER, TP_RATIOS = (0.5,), (0.5,)
    monitor = LoadMonitor()
    done = read_rows(args.rows)
    for task in args.task or ["fashion-mnist"]:
        for seed in (int(s) for s in args.seeds.split(",")):
            run_seed(args, task, seed, done, args.rows, monitor)
    rows = report_rows(done, args)
    rows[rows["arm"].isin(ARMS)][COLUMNS].to_csv(args.out.with_suffix(".csv"), index=False, float_format="%.3f")
    text = report(rows, args, monitor)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
