"""How well a fitted latency model predicts measured latency, on finished studies.

For each results folder given: every completed trial is predicted from the trials
before it only (see ``autoprune/latency_model.py``), and the relative errors are
summarised. Run: ``.venv/bin/python benchmarks/latency_model.py results/NAME ...``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from autoprune.latency_model import features, online_errors
from autoprune.results import SearchResult

sys.path.insert(0, str(Path(__file__).parent))
from _machine import LoadMonitor, add_load_arguments, write_report  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/latency_model.md"))
    add_load_arguments(parser)
    args = parser.parse_args()
    monitor = LoadMonitor()
    rows = []
    for folder in args.results:
        result = SearchResult.load(folder)
        df = features(result.study)
        err = online_errors(df, args.warmup)
        if err.empty:
            print(f"{folder}: fewer than {args.warmup + 1} measured trials", file=sys.stderr)
            continue
        ape = err["rel_error"].abs()
        rows.append({"study": folder.name, "trials": len(df), "predicted": len(err),
                     "median_abs_error_%": 100 * ape.median(), "p90_abs_error_%": 100 * ape.quantile(0.9),
                     "max_abs_error_%": 100 * ape.max(), "bias_%": 100 * err["rel_error"].median()})
    table = pd.DataFrame(rows)
    text = ("# Latency model: online prediction error\n\nEach completed trial predicted from the earlier "
            f"trials only (ridge on per-group kept fractions, their squares, removed blocks and the MACs "
            f"ratio; first {args.warmup} trials are training only).\nCommand: `.venv/bin/python "
            f"benchmarks/latency_model.py {' '.join(str(r) for r in args.results)}`.\n\n"
            + table.to_markdown(index=False, floatfmt=".1f") + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(args.out, text, monitor, args.allow_noisy or getattr(args, "quick", False))
    print(text)


if __name__ == "__main__":
    main()
