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

Each member's figures are written to ``trials/<n>/final/result.json`` and to the study's
storage (a study attribute per member; its trials are not changed) as soon as it is
done, so an interrupted finalize resumes where it stopped; ``final.csv`` gathers them.
Members are claimed through the storage, so a search and its workers finalize
different members side by side, each once (``autoprune.storage.claim_final``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from autoprune import accelerator
from autoprune._config import atomic_write_text
from autoprune.errors import ExportError, StudyError
from autoprune.measure import RETIME_OFF, RETIME_PAUSE_S, RETIMES, slower

POLL_S = 2.0  # how often a process waiting for members that others finalize looks again
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


def paired_timing(device, base_onnx, onnx, work_dir, tag: str, expected_ms: float | None = None,
                  expected_base_ms: float | None = None, pause_s: float = RETIME_PAUSE_S):
    """Time the baseline, then the candidate right after it. Where either median is more
    than ``RETIME_OFF`` slower than its search-time figure (``expected_ms``,
    ``expected_base_ms``: the same architectures timed during the search), time both
    again, up to ``RETIMES`` more rounds, ``pause_s`` apart, and keep each one's fastest
    round: a slow spell of the machine only adds time, and every round is a full
    measurement. A figure faster than the search's (a harder-tuned TVM build) stands.

    Returns (the baseline's median, the candidate's :class:`Measurement`, the rounds, the
    candidate's first median)."""

    bases, cands = [], []
    for round_ in range(1 + RETIMES):
        if round_:
            time.sleep(pause_s)
        bases.append(device.measure(base_onnx, work_dir, tag="baseline").measurement.median_ms)
        cands.append(device.measure(onnx, work_dir, tag=tag).measurement)
        best = min(cands, key=lambda m: m.median_ms)
        if not slower(best.median_ms, expected_ms) and not slower(min(bases), expected_base_ms):
            break
    return min(bases), best, len(cands), cands[0].median_ms


def finalize_member(model, plan, task, space, device, base_model, distill, steps: int, searched: int, *,
                    seed: int, out, tag: str, calibration_seed: int = 0, expected_ms: float | None = None,
                    expected_base_ms: float | None = None) -> dict:
    """Fine-tune one candidate (``searched`` steps so far) for ``steps`` more, score it on
    the whole validation set, export it to ``out`` (a :class:`TrialFiles`), and time it
    right after timing ``base_model`` again (:func:`paired_timing`, which times both
    again where a figure is far from its search-time one). Returns its final figures.

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
    base_ms, m, rounds, first_ms = paired_timing(device, base_onnx, onnx, out.dir, tag, expected_ms,
                                                 expected_base_ms)
    (out.dir / "baseline.onnx").unlink(missing_ok=True)
    return {
        "final_steps": steps, "final_batch_size": space.recovery.final_batch_size,
        "finetune_steps": steps + searched, "search_steps": searched,
        "eval_samples": len(task.val), "final_accuracy": acc, "final_latency_ms": m.median_ms,
        "final_latency_noisy": m.noisy, "final_latency_p90_ms": m.p90_ms,
        "final_latency_ci_low_ms": m.ci_low_ms, "final_latency_ci_high_ms": m.ci_high_ms,
        "final_latency_cv": m.cv, "final_latency_runs": m.runs, "final_latency_rounds": rounds,
        "final_latency_first_ms": first_ms, "baseline_latency_ms": base_ms,
        "paired_speedup": base_ms / m.median_ms, "seconds": round(time.perf_counter() - start, 1),
        "precision": precision, "final_float_accuracy": float_acc,
        **({"calibration": quantization.get("calibration"), "calibration_samples":
            quantization.get("calibration_samples")} if quantization else {}),
    }


def _may_still_claim(owner: str | None, states: dict[int, dict], started: float) -> bool:
    """Whether the process that ran a member (and alone holds its files) may still come
    to finalize it: alive on this host; on another host, finalizing another member now
    (it claims one at a time), or not yet GRACE_S after our start (it may not have come
    to finalize yet)."""
    from autoprune.storage import GRACE_S, claim_alive, owner_alive

    alive = owner_alive(owner)
    if alive is not None:
        return alive
    busy = any(s.get("owner") == owner and claim_alive(s) for s in states.values())
    return busy or time.monotonic() - started < GRACE_S


def _baseline(result, trial: int):
    """The unpruned model and the task. Its files may be in another process's results
    folder; it is the task's own model either way (the baseline is never fine-tuned)."""
    from autoprune.results import rebuild_model
    from autoprune.tasks import load_task
    from autoprune.trials import TrialFiles

    files = TrialFiles.of(result.study_dir, trial)
    if files.plan.is_file() and files.state.is_file():
        model, task, _ = rebuild_model(result, trial, final=False)
        return model, task
    task = load_task(result.identity["task"], result.identity.get("data_dir"), result.identity.get("task_args"))
    return task.model.eval(), task


def _figure(row, column: str) -> float | None:
    """``row[column]`` as a number, or None where it has none."""
    value = row.get(column) if row is not None else None
    return None if value is None or pd.isna(value) else float(value)


def _finalize_one(result, space, n: int, row, files, device, base_model, task, base_full: float, distill,
                  steps: int, log) -> str | None:
    """Finalize member ``n`` (claimed by this process) into ``files`` (its ``final/``
    folder); return None, or why it failed (that member's failure, not the command's:
    it keeps its search-time figures, marked, and the others go on)."""
    from autoprune.results import FAILED_FILE, rebuild_model
    from autoprune.trials import TrialFailure

    files.dir.mkdir(parents=True, exist_ok=True)
    done, failed = files.dir / "result.json", files.dir / FAILED_FILE
    # the member is not finalized until its new result is written: export must not
    # pair the old figures with the new weights (results.final_result)
    done.unlink(missing_ok=True)
    # the baseline's task: one training split, so the teacher's kept outputs serve every member
    model, _, plan = rebuild_model(result, n, final=False)
    record = result.record(n)
    searched = int(record.finetune_steps or 0) if record is not None else 0
    expected_base_ms = _figure(result.baseline, "latency_ms")
    try:
        figures = finalize_member(model, plan, task, space, device, base_model, distill, steps, searched,
                                  seed=n + steps, out=files, tag=f"trial {n}",
                                  calibration_seed=int(result.identity.get("seed", 0)),
                                  expected_ms=_figure(row, "latency_ms"), expected_base_ms=expected_base_ms)
    except TrialFailure as exc:
        atomic_write_text(failed, json.dumps({"trial": n, "reason": str(exc), "final_steps": steps}, indent=1))
        log(f"trial {n}: could not be finalized ({exc}); its search-time figures stand, marked. "
            f"`autoprune finalize {result.study_dir} --trials {n}` tries it again.")
        return str(exc)
    failed.unlink(missing_ok=True)
    sign = task.metric.sign
    acc, m_ms, base_ms = figures["final_accuracy"], figures["final_latency_ms"], figures["baseline_latency_ms"]
    figures = {"trial": n, "search_accuracy": row["accuracy"], "search_latency_ms": row["latency_ms"],
               **figures, "baseline_accuracy": base_full, "accuracy_drop": sign * (base_full - acc)}
    atomic_write_text(done, json.dumps(figures, indent=1))
    at = "" if figures["precision"] == "float32" else f" at {figures['precision']}"
    fmt = task.metric.fmt
    rounds = figures["final_latency_rounds"]
    first = figures["final_latency_first_ms"]
    again = "" if rounds == 1 else (f" (fastest of {rounds} paired timings: the first, {first:.3f} ms, or its "
                                    f"baseline's, was over {RETIME_OFF:.0%} slower than in the search)")
    log(f"trial {n}{at}: {task.metric.name} {fmt(row['accuracy'])} ({searched} steps, search subset) -> {fmt(acc)} "
        f"(+{figures['final_steps']} steps, all {len(task.val)} validation images); latency {m_ms:.3f} ms, "
        f"baseline again {base_ms:.3f} ms: {base_ms / m_ms:.2f}x{again}")
    return None


def finalize(results_dir: str | Path, steps: int | None = None, trials: list[int] | None = None,
             members: int | None = None, log=print, storage: str | None = None, retry_failed: bool = True,
             poll_s: float = POLL_S, artifacts: str | None = None, train_device: str | None = None,
             amp: str = "auto") -> pd.DataFrame:
    """Finalize the front of the study in ``results_dir``; return the final table.

    ``steps``: fine-tune steps per member on top of its search-time ones (default: the
    space's ``final_steps``).
    ``members``: at most this many front members (default: the space's ``final_members``).
    ``storage``: the study's storage URL when ``config.json`` cannot name it (a password).
    ``retry_failed``: finalize members whose last finalize failed again (``autoprune
    finalize`` does; the end of a search or a worker leaves them).
    ``artifacts``: an artifact store URL other than the one the search recorded.
    ``train_device``, ``amp``: where the fine-tunes run, as :func:`autoprune.search`'s
    (None: where this process was set to train, the CPU unless a search set it).

    Any number of processes (a search and its workers, on any machines) may finalize
    one study at once: each member is claimed through the storage
    (:func:`autoprune.storage.claim_final`), finalized by one of them, and its figures
    are written to the storage as well as to ``trials/<n>/final/``. A process finalizes
    the members whose trial files it holds (or fetches from the study's artifact store,
    :mod:`autoprune.artifacts`, where the search named one), then waits for the ones
    other processes finalize (taking them over when their process died), so each returns
    the whole table.
    """
    from autoprune import artifacts as artifacts_mod
    from autoprune import storage as storage_mod
    from autoprune.device import Device
    from autoprune.recover import Distill
    from autoprune.results import FINAL_TABLE, SearchResult, final_result, named, read_final
    from autoprune.space import space_of
    from autoprune.trials import TrialFiles

    if train_device is not None:  # a bad name stops here, before anything is claimed
        accelerator.use(accelerator.resolve(train_device, amp))
    result = SearchResult.load(results_dir, storage=storage, artifacts=artifacts)
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
    key = {"final_steps": steps, "final_batch_size": rec.final_batch_size}
    store, study = result.storage, result.study
    art = result.artifact_store(create=True)
    fetched: set[int] = set()
    opened = None  # the device, the baseline and the teacher: opened for the first member this process claims

    def open_once():
        nonlocal opened
        if opened is None:
            # a fresh measurement every time: the point is to time again, not to reuse; and a
            # TVM library tuned harder than the search's (the one that is deployed)
            device = Device.open(result.identity["device"], fresh=True, final=True)
            base_model, task = _baseline(result, int(base["trial"]))
            distill = (Distill(base_model, rec.distill_weight, rec.distill_temperature, outputs=task.distill)
                       if rec.distill_weight > 0 else None)
            opened = device, base_model, task, task.metric(base_model, task.val), distill
        return opened

    rows = {int(row["trial"]): row for _, row in chosen.iterrows()}
    pending = list(rows)
    started = time.monotonic()
    waiting_said: set[int] = set()
    failures = []
    while pending:
        for n in list(pending):
            row, trial_files = rows[n], TrialFiles.of(result.study_dir, n)
            files = trial_files.final
            previous = final_result(files)
            all_states = storage_mod.final_states(study)
            state = all_states.get(n)
            if previous is not None and all(previous.get(k) == v for k, v in key.items()) and \
                    (state is None or (state.get("state") == "running" and not storage_mod.claim_alive(state))):
                # finalized before figures went to the storage, or killed between its result and its record
                storage_mod.settle_final(study, n, result.study_dir, {"state": "done", **key, "figures": previous})
            same_key = state is not None and all(state.get(k) == v for k, v in key.items())
            here = trial_files.plan.is_file() and trial_files.state.is_file()
            finalized_already = same_key and storage_mod.finalized_elsewhere(state, n, result.study_dir,
                                                                          files_here=previous is not None)
            if not here and art is not None and n not in fetched and not finalized_already:
                fetched.add(n)
                try:
                    here = artifacts_mod.fetch(study, art, str(n), trial_files.dir)
                except ExportError as exc:
                    log(f"trial {n}: {exc}")
            if not here:
                # its files are in the results folder of the process that ran it
                if storage_mod.claim_alive(state):
                    if n not in waiting_said:
                        log(f"trial {n}: waiting for {state.get('owner')}, which finalizes it")
                        waiting_said.add(n)
                    continue
                settled = finalized_already or (same_key and state.get("state") == "failed")
                record = result.record(n)
                ran = record.owner if record else None
                if not settled and state is None and ran != storage_mod.OWNER and \
                        _may_still_claim(ran, all_states, started):
                    if n not in waiting_said:  # the process that ran it has not come to finalize yet
                        log(f"trial {n}: waiting for {ran}, which ran it and holds its files")
                        waiting_said.add(n)
                    continue
                if not settled:
                    log(f"trial {n}: its files are not in {result.study_dir} (it ran in {ran or '?'}): "
                        "finalize it there, or share the results folder")
                pending.remove(n)
                continue
            claim = storage_mod.claim_final(store, study, n, key, result.study_dir, files_here=previous is not None,
                                            retry_failed=retry_failed and n not in waiting_said)
            if claim == "taken":
                if n not in waiting_said:
                    log(f"trial {n}: waiting for {state.get('owner') if state else 'another process'}, "
                        "which finalizes it")
                    waiting_said.add(n)
                continue
            pending.remove(n)
            if claim == "done":
                log(f"trial {n}: already finalized ({steps} steps), kept")
                continue
            if claim == "failed":
                continue
            device, base_model, task, base_full, distill = open_once()
            with storage_mod.final_heartbeat(store, study, n):
                failure = _finalize_one(result, space, n, row, files, device, base_model, task, base_full,
                                        distill, steps, log)
            if failure is None:
                if art is not None:  # uploaded before it is settled: a process that sees it done can fetch them
                    artifacts_mod.publish_or_say(study, art, f"{n}/final", files.dir, artifacts_mod.FINAL_FILES, log)
                storage_mod.settle_final(study, n, result.study_dir,
                                         {"state": "done", **key, "figures": final_result(files)})
            else:
                storage_mod.settle_final(study, n, result.study_dir, {"state": "failed", **key, "reason": failure})
                failures.append(f"trial {n}: {failure}")
        if pending:
            time.sleep(poll_s)
    states = storage_mod.final_states(study)
    if all(states.get(n, {}).get("state") == "failed" for n in rows):  # nothing could be finalized
        reasons = failures or [f"trial {n}: {states[n].get('reason')}" for n in rows]
        raise StudyError(f"no member could be finalized ({'; '.join(reasons)}); their search-time figures stand. "
                         f"Run `autoprune finalize {result.study_dir}` to try again.")
    df = read_final(result.study_dir, study)
    if not df.empty:  # every row against the same, latest full-set baseline accuracy
        base_full = opened[3] if opened is not None else float(df["baseline_accuracy"].iloc[-1])
        sign = result.metric.sign
        df["baseline_accuracy"] = base_full
        df["accuracy_drop"] = sign * (base_full - df["final_accuracy"])
    atomic_write_text(result.study_dir / FINAL_TABLE, named(df, result.metric).to_csv(index=False))
    return df
