"""Finalize: the front's best candidates fine-tuned to the full budget, scored on the
whole validation set, and timed again paired with the baseline.

``autoprune search`` ends with it (``--no-finalize`` skips it); ``autoprune finalize
results/<study>`` runs it on its own. During the search a candidate's accuracy comes
from a short recovery (its rung: 40, 160 or 640 steps) on a validation subset, and it
is timed once, minutes apart from the baseline. Here each chosen member (the
budget-feasible accuracy/latency front: see :func:`choose`) goes on
from its search-time weights for ``final_steps`` more fine-tune steps at batch
``final_batch_size`` (distilled from the unpruned model, batch-norm statistics
re-estimated after), is scored on every
validation example, exported, and timed right after the baseline is timed again, so
its speed-up is a paired figure.

Each member's figures are written to ``trials/<n>/final/result.json`` as soon as it is
done, so an interrupted finalize resumes where it stopped; ``final.csv`` gathers them.
The study itself is not changed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from autoprune._config import atomic_write_text
from autoprune.errors import StudyError

FINAL_SLACK = 3.0  # accuracy points a search-time figure may be below the pick's allowance and still be finalized


def choose(result, members: int, trials: list[int] | None = None) -> pd.DataFrame:
    """The rows to finalize: the named trials, or up to ``members`` of the budget-feasible
    metric/latency front that is shown: the fastest ones whose search-time figure is
    within ``max_drop`` + 3 points of the baseline (short recoveries understate the
    metric, most for the most pruned), and the best-scoring one."""
    if trials is not None:
        rows = result.trials[result.trials["trial"].isin(trials)]
        return rows[rows["state"] == "COMPLETE"]
    shown = result.shown(result.trials)
    rows = shown[shown["feasible"] & ~shown["baseline"].astype(bool)]
    base = result.baseline
    return choose_rows(rows, None if base is None else float(base["accuracy"]), result.max_drop, members,
                       sign=result.metric.sign)


def choose_rows(rows: pd.DataFrame, base_accuracy: float | None, max_drop: float, members: int,
                sign: float = 1.0) -> pd.DataFrame:
    """Of ``rows`` (candidates with ``accuracy`` and ``latency_ms``), the members to
    finalize: on their metric/latency front, the fastest within ``max_drop`` + 3
    points of ``base_accuracy``, plus the best-scoring; at most ``members``.
    ``sign``: +1 where higher is better, -1 where lower is."""
    from autoprune.pareto import two_d_front

    if rows.empty:
        return rows
    front = two_d_front(rows, sign)
    by_score = front.assign(_good=sign * front["accuracy"]).sort_values("_good", ascending=False).drop(columns="_good")
    best = by_score.head(1)
    near = front if base_accuracy is None else front[sign * (base_accuracy - front["accuracy"]) <= max_drop + FINAL_SLACK]
    fastest = near[~near["trial"].isin(best["trial"])].sort_values("latency_ms").head(members - 1)
    chosen = pd.concat([fastest, best])
    if len(chosen) < members:  # room left: the next best-scoring
        rest = by_score[~by_score["trial"].isin(chosen["trial"])]
        chosen = pd.concat([chosen, rest.head(members - len(chosen))])
    return chosen.sort_values("latency_ms")


def fine_tune(model, task, rec, steps: int, masks, distill, seed: int) -> None:
    """The final fine-tune of one member: ``steps`` more steps at the space's
    ``final_batch_size`` and ``final_lr``,
    then fresh batch-norm statistics (the fine-tune's running averages lag its last
    weights; MNASNet-like momenta make them useless)."""
    from autoprune.recover import TrainConfig, recalibrate_bn, train

    if steps <= 0:
        return
    cfg = TrainConfig(steps, rec.final_batch_size, rec.final_lr, hflip=task.hflip, seed=seed)
    train(model, task.train, cfg, masks=masks, distill=distill, loss_fn=task.loss_of)
    recalibrate_bn(model, task.train, rec.bn_batches, rec.batch_size)


def finalize_member(model, plan, task, space, device, base_model, distill, steps: int, searched: int, *,
                    seed: int, out, tag: str, calibration_seed: int = 0) -> dict:
    """Fine-tune one candidate (``searched`` steps so far) for ``steps`` more, score it on
    the whole validation set, export it to ``out`` (a :class:`TrialFiles`), and time it
    right after timing ``base_model`` again. Returns its final figures.

    Raises:
        TrialFailure: the candidate or the baseline could not be built or timed.
    """
    import torch

    from autoprune import pruning
    from autoprune.evaluate import OnnxModel
    from autoprune.export import to_onnx
    from autoprune.quantize import calibration_inputs, quantize

    start = time.perf_counter()
    if plan.is_identity:  # nothing was pruned (e.g. the unpruned model at INT8): the user's weights stand
        steps = 0
    else:
        masks = pruning.restore_masks(model, plan, task.example_input(1), task.ignored_layers)
        fine_tune(model, task, space.recovery, steps, masks, distill, seed=seed)
    acc = task.metric(model, task.val)
    example = task.example_input(device.profile.batch_size)
    precision = plan.precision
    float_path = out.onnx if precision == "float32" else out.float_onnx
    onnx = to_onnx(model, example, float_path, space.parity_atol, space.parity_rtol)
    quantization = None
    float_acc = None
    if precision != "float32":  # calibrated again for the fine-tuned weights, then scored as it ships
        pc = space.precision
        made = quantize(onnx, precision, out.onnx, calibration=calibration_inputs(task.train, pc.calibration_samples,
                                                                                   seed=calibration_seed),
                        method=pc.calibration, percentile=pc.percentile, int8=device.profile.precision.int8)
        onnx, quantization, float_acc = made.artifact, made.settings, acc
        acc = task.metric(OnnxModel(onnx.path), task.val)
    torch.save(model.state_dict(), out.state)
    base_onnx = to_onnx(base_model, example, out.dir / "baseline.onnx", space.parity_atol, space.parity_rtol)
    # paired: the baseline is timed again just before the candidate
    base_ms = device.measure(base_onnx, out.dir, tag="baseline").measurement.median_ms
    m = device.measure(onnx, out.dir, tag=tag).measurement
    (out.dir / "baseline.onnx").unlink(missing_ok=True)
    return {
        "final_steps": steps, "final_batch_size": space.recovery.final_batch_size,
        "finetune_steps": steps + searched, "search_steps": searched,
        "eval_samples": len(task.val), "final_accuracy": acc, "final_latency_ms": m.median_ms,
        "final_latency_noisy": m.noisy, "final_latency_p90_ms": m.p90_ms,
        "final_latency_ci_low_ms": m.ci_low_ms, "final_latency_ci_high_ms": m.ci_high_ms,
        "final_latency_cv": m.cv, "final_latency_runs": m.runs, "baseline_latency_ms": base_ms,
        "paired_speedup": base_ms / m.median_ms, "seconds": round(time.perf_counter() - start, 1),
        "precision": precision, "final_float_accuracy": float_acc,
        **({"calibration": quantization.get("calibration"), "calibration_samples":
            quantization.get("calibration_samples")} if quantization else {}),
    }


def finalize(results_dir: str | Path, steps: int | None = None, trials: list[int] | None = None,
             members: int | None = None, log=print) -> pd.DataFrame:
    """Finalize the front of the study in ``results_dir``; return the final table.

    ``steps``: fine-tune steps per member on top of its search-time ones (default: the
    space's ``final_steps``).
    ``members``: at most this many front members (default: the space's ``final_members``).
    """
    from autoprune.device import Device
    from autoprune.recover import Distill
    from autoprune.results import (
        FAILED_FILE,
        FINAL_TABLE,
        SearchResult,
        final_result,
        named,
        read_final,
        rebuild_model,
    )
    from autoprune.space import space_of
    from autoprune.trials import TrialFailure, TrialFiles

    result = SearchResult.load(results_dir)
    base = result.baseline
    if base is None:
        raise StudyError(f"{results_dir} has no completed baseline trial; finalize needs it to pair timings.")
    space = space_of(result.identity)
    rec = space.recovery
    steps = rec.final_steps if steps is None else steps
    chosen = choose(result, members or rec.final_members, trials)
    if chosen.empty:
        raise StudyError(f"{results_dir} has no feasible front member to finalize (run more trials, raise the "
                         "budget, or name --trials).")
    # a fresh measurement every time: the point is to time again, not to reuse; and a
    # TVM library tuned harder than the search's (the one that is deployed)
    device = Device.open(result.identity["device"], fresh=True, final=True)

    base_model, task, _ = rebuild_model(result, int(base["trial"]), final=False)
    base_full = task.metric(base_model, task.val)
    sign = task.metric.sign
    distill = (Distill(base_model, rec.distill_weight, rec.distill_temperature, outputs=task.distill)
               if rec.distill_weight > 0 else None)
    failures = []
    for _, row in chosen.iterrows():
        n = int(row["trial"])
        files = TrialFiles.of(result.study_dir, n).final
        done = files.dir / "result.json"
        previous = final_result(files)
        if previous is not None and \
                (previous.get("final_steps"), previous.get("final_batch_size")) == (steps, rec.final_batch_size):
            log(f"trial {n}: already finalized ({steps} steps), kept")
            continue
        files.dir.mkdir(parents=True, exist_ok=True)
        # the member is not finalized until its new result is written: export must not
        # pair the old figures with the new weights (results.final_result)
        done.unlink(missing_ok=True)
        # the baseline's task: one training split, so the teacher's kept outputs serve every member
        model, _, plan = rebuild_model(result, n, final=False)
        record = result.record(n)
        searched = int(record.finetune_steps or 0) if record is not None else 0
        failed = files.dir / FAILED_FILE
        try:
            figures = finalize_member(model, plan, task, space, device, base_model, distill, steps, searched,
                                      seed=n + steps, out=files, tag=f"trial {n}",
                                      calibration_seed=int(result.identity.get("seed", 0)))
        except TrialFailure as exc:
            # that member's failure, not the command's: the others are finalized, and this
            # one keeps its search-time figures, marked (results.SearchResult._with_final)
            atomic_write_text(failed, json.dumps({"trial": n, "reason": str(exc), "final_steps": steps}, indent=1))
            log(f"trial {n}: could not be finalized ({exc}); its search-time figures stand, marked. "
                f"`autoprune finalize {result.study_dir} --trials {n}` tries it again.")
            failures.append(f"trial {n}: {exc}")
            continue
        failed.unlink(missing_ok=True)
        acc, m_ms, base_ms = figures["final_accuracy"], figures["final_latency_ms"], figures["baseline_latency_ms"]
        figures = {"trial": n, "search_accuracy": row["accuracy"], "search_latency_ms": row["latency_ms"],
                   **figures, "baseline_accuracy": base_full,
                   "accuracy_drop": sign * (base_full - acc)}
        atomic_write_text(done, json.dumps(figures, indent=1))
        at = "" if figures["precision"] == "float32" else f" at {figures['precision']}"
        fmt = task.metric.fmt
        log(f"trial {n}{at}: {task.metric.name} {fmt(row['accuracy'])} ({searched} steps, search subset) -> {fmt(acc)} "
            f"(+{figures['final_steps']} steps, all {len(task.val)} validation images); latency {m_ms:.3f} ms, "
            f"baseline again {base_ms:.3f} ms: {base_ms / m_ms:.2f}x")
    if len(failures) == len(chosen):  # not one member's fault: nothing could be finalized
        raise StudyError(f"no member could be finalized ({'; '.join(failures)}); their search-time figures stand. "
                         f"Run `autoprune finalize {result.study_dir}` to try again.")
    df = read_final(result.study_dir)
    if not df.empty:  # every row against the same, latest full-set baseline accuracy
        df["baseline_accuracy"] = base_full
        df["accuracy_drop"] = sign * (base_full - df["final_accuracy"])
    atomic_write_text(result.study_dir / FINAL_TABLE, named(df, result.metric).to_csv(index=False))
    return df
