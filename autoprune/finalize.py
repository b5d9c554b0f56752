"""``autoprune finalize results/<study>``: a longer fine-tune and a fresh, paired
re-measurement of the front, after the search.

During the search every candidate gets a short fine-tune and is timed once, minutes
apart from the baseline. Here each front member (non-dominated in accuracy and latency,
within the budget) is fine-tuned for ``steps`` more steps, scored on the whole
validation set, exported, and timed again right after the baseline is timed again, so
its speedup is a paired figure. Results go to ``final.csv`` and ``trials/<n>/final/``;
``autoprune export`` then packages the finalized weights. The study itself is not
changed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from autoprune._config import atomic_write_text
from autoprune.errors import StudyError


def finalize(results_dir: str | Path, steps: int | None = None, trials: list[int] | None = None,
             log=print) -> pd.DataFrame:
    """Finalize the front of the study in ``results_dir``; return the final table."""
    import torch

    from autoprune import pruning
    from autoprune.deploy import rebuild_model
    from autoprune.device import Device
    from autoprune.evaluate import accuracy
    from autoprune.export import to_onnx
    from autoprune.pareto import two_d_front
    from autoprune.recover import TrainConfig, train
    from autoprune.results import SearchResult
    from autoprune.space import load_space
    from autoprune.trials import TrialFailure, TrialFiles

    result = SearchResult.load(results_dir)
    base = result.baseline
    if base is None:
        raise StudyError(f"{results_dir} has no completed baseline trial; finalize needs it to pair timings.")
    chosen = two_d_front(result.front) if trials is None else result.trials[result.trials["trial"].isin(trials)]
    chosen = chosen[chosen["state"] == "COMPLETE"] if "state" in chosen else chosen
    if chosen.empty:
        raise StudyError(f"{results_dir} has no front member to finalize (run more trials, or name --trials).")
    space = load_space(result.identity["space"])
    # a fresh measurement every time: the point is to time again, not to reuse
    device = Device.open(result.identity["device"], fresh=True)
    profile = device.profile
    steps = steps if steps is not None else 10 * space.recovery.finetune_steps

    base_model, task, _ = rebuild_model(result, int(base["trial"]), final=False)
    rows = []
    for _, row in chosen.iterrows():
        n = int(row["trial"])
        out = TrialFiles.of(result.study_dir, n).final.dir
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        model, task, plan = rebuild_model(result, n, final=False)
        masks = pruning.restore_masks(model, plan, task.example_input(1), task.ignored_layers)
        if steps and not plan.is_identity:
            cfg = TrainConfig(steps, space.recovery.batch_size, space.recovery.lr, hflip=task.hflip, seed=n)
            train(model, task.train, cfg, masks=masks)
        acc = accuracy(model, task.val, None)
        onnx = to_onnx(model, task.example_input(profile.batch_size), out / "model.onnx", space.parity_atol)
        torch.save(model.state_dict(), out / "state.pt")
        base_onnx = to_onnx(base_model, task.example_input(profile.batch_size), out / "baseline.onnx",
                            space.parity_atol)
        try:  # paired: the baseline is timed again just before the candidate
            base_ms = device.measure(base_onnx, out, tag="baseline").measurement.median_ms
            m = device.measure(onnx, out, tag=f"trial {n}").measurement
        except TrialFailure as exc:
            raise StudyError(f"trial {n} could not be timed again: {exc}") from None
        (out / "baseline.onnx").unlink(missing_ok=True)
        rows.append({
            "trial": n, "finetune_steps": steps,
            "search_accuracy": row["accuracy"], "final_accuracy": acc,
            "search_latency_ms": row["latency_ms"], "final_latency_ms": m.median_ms,
            "final_latency_noisy": m.noisy, "baseline_latency_ms": base_ms,
            "paired_speedup": base_ms / m.median_ms, "seconds": round(time.perf_counter() - start, 1),
        })
        log(f"trial {n}: accuracy {row['accuracy']:.2f}% -> {acc:.2f}% (all {len(task.val)} validation "
            f"images), latency {m.median_ms:.3f} ms, baseline again {base_ms:.3f} ms: "
            f"{base_ms / m.median_ms:.2f}x")
    base_full = accuracy(base_model, task.val, None)
    df = pd.DataFrame(rows)
    df["baseline_accuracy"] = base_full
    df["accuracy_drop"] = base_full - df["final_accuracy"]
    atomic_write_text(result.study_dir / "final.csv", df.to_csv(index=False))
    return df
