"""Tilts against the uniform ladder, in final figures: are the screen's tilted plans
(``ResolvedSpace.tilted_params``) better models than the ladder plans around them?

For each named plan (a ladder ratio, untilted or tilted) this trains what a search and
its finalize would (the search's first rung, then the final fine-tune), scores it on the
whole validation set and measures its latency, float32. Rows go to a JSON-lines file and
a run resumes from it; the report sets each tilt against the straight line between the
two ladder plans around its latency.

Run: ``.venv/bin/python benchmarks/tilts.py [--plans 0.8:inner 0.7:early 0.7: 0.8:]``
(``RATIO:`` is the ladder plan, ``RATIO:TILT`` its tilt). Accuracy only: load changes
its duration and its latencies (measure them on a quiet machine), not its accuracies.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _machine import LoadMonitor, add_load_arguments, append_row, facts, read_rows, write_report  # noqa: E402
from fidelity import candidate, replay_context  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", default="fashion-mnist")
    parser.add_argument("--device", default="x86-ort")
    parser.add_argument("--plans", nargs="+", default=["0.8:inner", "0.7:early", "0.7:", "0.8:"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=Path, default=Path("results/benchmarks/tilts-rows.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/tilts.md"))
    add_load_arguments(parser)
    args = parser.parse_args()
    named = [_plan_name(parser, name) for name in args.plans]  # a bad name stops the run before any work

    import optuna

    monitor = LoadMonitor()
    task, space, resolved, ctx = replay_context(args.task, "default", args.device, args.seed)
    done = read_rows(args.rows)
    scratch = tempfile.TemporaryDirectory()
    for name, (ratio, tilt) in zip(args.plans, named):
        params = resolved.uniform_params(ratio, precision="float32")
        if tilt:
            params = resolved.tilted_params(params, tilt)
            if params is None:
                parser.error(f"--plans {name}: the {tilt!r} tilt moves every group of {args.task}'s model alike at "
                             "this ratio, or the ratio is 0: that is a ladder plan, name it as RATIO: instead")
        plan = resolved.suggest(optuna.trial.FixedTrial(params))
        if any(r["plan"] == plan.to_dict() and r["seed"] == args.seed for r in done):
            continue
        work = Path(scratch.name) / name.replace(":", "-")
        work.mkdir()
        row = {"seed": args.seed, "ratio": ratio, "tilt": tilt or "none",
               **candidate(ctx, plan, args.seed, work, rungs=False)}
        done.append(row)
        append_row(args.rows, row)
        print(json.dumps({k: v for k, v in row.items() if k != "plan"}), file=sys.stderr, flush=True)

    df = pd.DataFrame([r for r in done if r["seed"] == args.seed])[["ratio", "tilt", "latency_ms", "mmacs", "final"]]
    ladder = df[df["tilt"] == "none"].sort_values("latency_ms")

    def line_at(latency: float) -> float:
        below, above = ladder[ladder["latency_ms"] <= latency], ladder[ladder["latency_ms"] >= latency]
        if below.empty or above.empty:
            return float("nan")
        a, b = below.iloc[-1], above.iloc[0]
        if b["latency_ms"] == a["latency_ms"]:
            return float(a["final"])
        share = (latency - a["latency_ms"]) / (b["latency_ms"] - a["latency_ms"])
        return float(a["final"] + share * (b["final"] - a["final"]))

    df["ladder_line"] = [line_at(x) if t != "none" else float("nan") for x, t in zip(df["latency_ms"], df["tilt"])]
    df["above_line"] = df["final"] - df["ladder_line"]
    text = (
        "# Tilts against the uniform ladder (final figures)\n\n"
        f"{facts()}"
        f"- Rows in `{args.rows}` (the run resumes from them).\n"
        f"- Task `{args.task}`, default space, device `{args.device}`, float32. Each plan: the search's first rung "
        f"({space.recovery.finetune_steps} distilled steps), then the final fine-tune ({space.recovery.final_steps} "
        f"steps at batch {space.recovery.final_batch_size}), scored on all {len(task.val)} validation images "
        "(final fidelity). One seed: a fine-tune's spread is a few tenths of a point.\n"
        "- `ladder_line`: the final accuracy on the straight line between the two ladder plans around the tilt's "
        "latency; `above_line`: the tilt's final minus it.\n\n"
        + df.sort_values("latency_ms").to_markdown(index=False, floatfmt=".3f") + "\n"
    )
    write_report(args.out, text, monitor, args.allow_noisy)
    print(text)


def _plan_name(parser: argparse.ArgumentParser, name: str) -> tuple[float, str]:
    """``RATIO:TILT`` (``RATIO:`` for the ladder plan) as (ratio, tilt); a bad name stops
    the run with one line that says the form."""
    from autoprune.space import TILTS

    ratio, sep, tilt = name.partition(":")
    try:
        value = float(ratio)
    except ValueError:
        value = -1.0
    if not sep or not 0.0 <= value < 1.0 or (tilt and tilt not in TILTS):
        parser.error(f"--plans {name!r}: name a plan as RATIO: (the ladder plan, 0 <= RATIO < 1) or RATIO:TILT "
                     f"with TILT one of {', '.join(TILTS)}")
    return value, tilt


if __name__ == "__main__":
    main()
