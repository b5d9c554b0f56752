"""Replay the screen's second wave on finished studies: which plans would another
weighing of the trained front have trained?

A study that trained the screen's choice in two waves records both (the study
attributes ``autoprune.screen_selected`` and ``autoprune.screen_second_wave``), every
screened plan's score and latency, and the first wave's trained metric. This script
rebuilds the inputs the second wave had, runs ``autoprune.screen.second_wave`` on them
as the search did (and checks that it picks what the study recorded; the first wave,
``select`` on the same pool, is checked too, so a study that today's code would have
searched otherwise is named), then with each
``--clip`` (the metric raised to at least the best trained minus CLIP points before
the stretches are weighed). It trains and times nothing, so it takes seconds and the
machine's load does not matter; a replayed plan that was not trained has only its
screen figures, so what it would have reached is unknown.

Each plan is shown as ``latency ms / screen score -> trained metric (search-time) ->
final metric`` (the last two where the study trained or finalized it; final figures
from ``<study>.final.jsonl`` beside the folder, as ``compare.py`` writes them).

Run: ``.venv/bin/python benchmarks/replay_waves.py results/compare/*/*/autoprune --clip 3``
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import optuna

from autoprune import storage
from autoprune.screen import second_wave, select
from autoprune.search_loop import SCREEN_ATTR, WAVE_ATTR, Screening
from autoprune.space import space_of


def replay(study_dir: Path, clips: list[float]) -> dict | None:
    """The first wave, the recorded second wave and each replayed one (screened trial
    numbers), with every plan's figures; None for a study without a second wave."""
    identity = json.loads((study_dir / "config.json").read_text())
    study = optuna.load_study(study_name=identity["study"], storage=storage.default_url(study_dir))
    if WAVE_ATTR not in study.user_attrs or not study.user_attrs[WAVE_ATTR]:
        return None
    sign = 1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1.0
    records = storage.records(study)
    second = list(study.user_attrs[WAVE_ATTR])
    first = [k for k in study.user_attrs[SCREEN_ATTR] if k not in second]
    screen = space_of(identity).screen
    budget_ms = float(identity.get("latency_budget_ms") or float("inf"))
    # the pool and the first wave's trained points as the search built them, by its own code
    screening = Screening(plans=screen.plans, budget_ms=budget_ms, near=screen.near, seed=0, sign=sign)
    pool = screening.pool(records)
    trained = screening.trained(records, first, pool)
    trained_metric = {r.screened_from: r.accuracy for r in records  # shown for the second wave's plans too
                      if r.screened_from is not None and r.state == "COMPLETE" and r.accuracy is not None}

    def pick(clip: float | None) -> list[int]:
        return second_wave(pool, trained, len(second), screening.budget_ms, screening.near, first, clip=clip)

    final = _final_metrics(study_dir, records)
    plans = {r.number: (r.screen_latency_ms, r.screen_score, trained_metric.get(r.number), final.get(r.number))
             for r in records if r.screen}
    return {"study": str(study_dir), "first": first, "first_replayed": select(pool, len(first), budget_ms, screen.near),
            "recorded": second, "replayed": pick(None),
            "clips": {clip: pick(clip) for clip in clips}, "plans": plans}


def _final_metrics(study_dir: Path, records) -> dict[int, float]:
    """Final metric by screened trial number, for the trained trials that were finalized."""
    path = study_dir.parent / f"{study_dir.name}.final.jsonl"
    if not path.exists():
        return {}
    screened_from = {r.number: r.screened_from for r in records if r.screened_from is not None}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {screened_from[row["trial"]]: row["final_accuracy"] for row in rows if row["trial"] in screened_from}


def describe(result: dict) -> str:
    def shown(keys: list[int]) -> str:
        cells = []
        for key in sorted(keys, key=lambda k: result["plans"][k][0]):
            ms, score, trained, final = result["plans"][key]
            cell = f"{ms:.3f} ms / {score:.1f}"
            cell += f" -> {trained:.1f}" if trained is not None else ""
            cell += f" -> {final:.2f} final" if final is not None else ""
            cells.append(cell)
        return "; ".join(cells) or "none"

    same = "the replay picks the same" if result["replayed"] == result["recorded"] else (
        f"the replay picks OTHER plans: {shown(result['replayed'])}")
    first = "the replay picks the same" if result["first_replayed"] == result["first"] else (
        f"the replay picks OTHER plans: {shown(result['first_replayed'])}; the second wave below follows the "
        "recorded first wave")
    lines = [f"## {result['study']}", "", f"- first wave (recorded; {first}): {shown(result['first'])}",
             f"- second wave (recorded; {same}): {shown(result['recorded'])}"]
    lines += [f"- clip {clip:g}: {shown(keys)}" for clip, keys in result["clips"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", nargs="+", type=Path, help="study folders (with config.json and study.db)")
    parser.add_argument("--clip", type=float, action="append", default=[],
                        help="points under the best trained metric to clip at (repeatable)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    missing = [str(p) for p in args.studies if not (p / "config.json").exists()]
    if missing:
        sys.exit(f"replay_waves: not a study folder (no config.json): {', '.join(missing)}")
    command = " ".join([".venv/bin/python benchmarks/replay_waves.py", *sys.argv[1:]])
    print(f"# The screen's second wave, replayed\n\n- Command: `{command}`\n"
          f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC (nothing trained or timed: load does not matter)\n"
          "- Each plan: latency ms / screen score -> trained metric (search-time) -> final metric\n")
    for study_dir in args.studies:
        try:
            result = replay(study_dir, args.clip)
        except (ValueError, KeyError) as e:  # a config.json that is not JSON or lacks a key; no such study
            sys.exit(f"replay_waves: cannot read the study in {study_dir}: {e}")
        print(describe(result) if result else f"## {study_dir}\n\nno second wave recorded\n")


if __name__ == "__main__":
    main()
