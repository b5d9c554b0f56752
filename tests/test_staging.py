"""Staged evaluation: latency first, zero-shot screening, fine-tune only what can matter."""

from __future__ import annotations

import dataclasses
import re

import pandas as pd
import pytest

from autoprune.device import Device
from autoprune.objective import Context, Stager, run_candidate
from autoprune.profiles import load_profile
from autoprune.pruning import GroupChoice, PruningPlan
from autoprune.search_loop import staging_summary
from autoprune.space import load_space, resolve


@pytest.fixture(scope="module")
def ctx(digits_task):
    space = load_space("default")
    # no later rungs: these tests are about the first one (tests/test_recovery.py has the rungs)
    space = dataclasses.replace(space, recovery=dataclasses.replace(space.recovery, finetune_steps=30,
                                                                    eval_samples=300, rungs=()))
    resolved = resolve(space, digits_task.model, digits_task.example_input(1), digits_task.ignored_layers)
    profile = load_profile("x86-ort")
    profile = dataclasses.replace(profile, measurement=dataclasses.replace(profile.measurement, sessions=1))
    return Context(digits_task, Device.of(profile), resolved, None)


def _plan(ctx):
    return PruningPlan({g.info.name: GroupChoice("l1", 0.5) for g in ctx.space.groups})


def test_the_judge():
    s = Stager(budget_ms=1.0, front=[(0.5, 90.0), (0.9, 95.0)], gains=[3.0, 5.0, 4.0])
    assert s.skip_recovery(1.6) and "over 1.5x" in s.skip_recovery(1.6) and s.skip_recovery(1.4) is None
    assert s.skip_finetune(0.6, 80.0) is not None  # 80 + 5 + 1 < 90 of the 0.5 ms trial
    assert s.skip_finetune(0.6, 85.0) is None  # 85 + 6 reaches 90
    assert s.skip_finetune(0.4, 10.0) is None  # nothing faster to lose against
    assert Stager(1.0, front=[(0.5, 90.0)], gains=[1.0]).skip_finetune(0.6, 10.0) is None  # too few gains


def test_staged_candidates_skip_the_fine_tune_and_say_why(ctx, tmp_path):
    full = run_candidate(ctx, _plan(ctx), tmp_path / "full", seed=0)
    assert full.evaluation == "full" and full.zero_shot_accuracy is None
    over = dataclasses.replace(ctx, stager=Stager(budget_ms=full.latency.median_ms / 10))
    cand = run_candidate(over, _plan(ctx), tmp_path / "over", seed=0)
    assert cand.evaluation.startswith("zero-shot: latency") and "over 1.5x" in cand.evaluation
    assert cand.stage_s["recover"] < full.stage_s["recover"]
    assert cand.onnx.arch_hash == full.onnx.arch_hash  # the latency-first export is the final shape
    beaten = Stager(budget_ms=1e9, front=[(0.0, 100.0)], gains=[0.0, 0.0, 0.0], margin=0.5)
    dom = run_candidate(dataclasses.replace(ctx, stager=beaten), _plan(ctx), tmp_path / "dom", seed=0)
    assert dom.evaluation.startswith("zero-shot: zero-shot") and dom.accuracy == dom.zero_shot_accuracy
    kept = run_candidate(dataclasses.replace(ctx, stager=Stager(budget_ms=1e9)), _plan(ctx), tmp_path / "k", seed=0)
    assert kept.evaluation == "full" and kept.zero_shot_accuracy is not None
    assert kept.accuracy == pytest.approx(full.accuracy)  # screening does not change the result


def test_summary_line_counts_and_estimates():
    df = pd.DataFrame({
        "state": ["COMPLETE"] * 4, "baseline": [True, False, False, False],
        "evaluation": ["full", "full", "zero-shot: latency 3 ms is over 1.5x", "zero-shot: zero-shot 50%"],
        "recover_s": [0.0, 8.0, 0.5, 1.0], "screen_s": [None, 1.0, None, 1.0],
    })
    line = staging_summary(df)
    assert "2 of 3 pruned candidates" in line and "1 far over budget, 1 dominated" in line
    assert "saving about 14 s" in line  # (8 - 0.5) + (8 - 1 - 1)


def test_finalize_fine_tunes_and_times_the_front_again(digits_study, tmp_path):
    import shutil

    from conftest import run_cli

    folder = tmp_path / "copy"
    shutil.copytree(digits_study.study_dir, folder)
    proc = run_cli("finalize", str(folder), "--steps", "30", "--members", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    final = pd.read_csv(folder / "final.csv")
    assert 1 <= len(final) <= 2 and (final["final_steps"] == 30).all()
    assert (final["finetune_steps"] == final["search_steps"] + 30).all()  # on top of the search's
    assert (final["final_latency_ms"] > 0).all() and (final["paired_speedup"] > 0).all()
    for n in final["trial"]:
        assert (folder / "trials" / str(n) / "final" / "state.pt").is_file()
    # export packages the finalized weights
    pkg = tmp_path / "pkg"
    proc = run_cli("export", str(folder), "--trial", str(int(final["trial"].iloc[0])), "--out", str(pkg))
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_cli("finalize", str(tmp_path / "nothing"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    # finalized before figures went to the storage (its files only): kept, and recorded there
    from autoprune.results import SearchResult
    from autoprune.storage import FINAL_ATTR

    study = SearchResult.load(folder).study
    for n in final["trial"]:
        study.set_user_attr(f"{FINAL_ATTR}{int(n)}", None)
    assert SearchResult.load(folder).final["trial"].tolist() == final["trial"].tolist()  # from the files
    proc = run_cli("finalize", str(folder), "--steps", "30", "--members", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for n in final["trial"]:
        assert f"trial {int(n)}: already finalized" in " ".join(proc.stderr.split())
        assert study.user_attrs[f"{FINAL_ATTR}{int(n)}"]["state"] == "done"


def test_export_during_an_interrupted_finalize_packages_one_consistent_set(digits_study, tmp_path):
    """Issue 27.6: a member whose final files are written but whose result is not (finalize
    killed in between) is packaged from its search-time files, all of them; once its result
    is written, from its final files, all of them. Either way the package's ONNX file
    computes what its check file says the float model does."""
    import json
    import shutil

    import numpy as np
    import onnxruntime as ort
    from conftest import run_cli

    folder = tmp_path / "copy"
    shutil.copytree(digits_study.study_dir, folder)
    done = digits_study.trials[(digits_study.trials["state"] == "COMPLETE") & ~digits_study.trials["baseline"]]
    member = int(done[done["precision"].fillna("float32") == "float32"].sort_values("latency_ms").iloc[0]["trial"])
    proc = run_cli("finalize", str(folder), "--steps", "60", "--trials", str(member))
    assert proc.returncode == 0, proc.stderr[-2000:]
    final_dir = folder / "trials" / str(member) / "final"
    result = final_dir / "result.json"
    kept = result.read_text()

    def package(name: str) -> dict:
        out = tmp_path / name
        proc = run_cli("export", str(folder), "--trial", str(member), "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-2000:]
        manifest = json.loads((out / "manifest.json").read_text())
        check = np.load(out / "check.npz")
        session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        batch = manifest["input"]["shape"][0]
        got = np.concatenate([session.run(None, {session.get_inputs()[0].name: check["inputs"][i:i + batch]})[0]
                              for i in range(0, len(check["inputs"]), batch)])
        assert np.max(np.abs(got - check["float_outputs"])) < 1e-3, "model.onnx and model.pt2 came from different weights"
        return manifest

    # killed after the member's weights and ONNX file, before its result and final.csv
    result.unlink()
    (folder / "final.csv").unlink()
    interrupted = package("interrupted")
    assert interrupted["files_from"] == "search" and interrupted["finalized"] is None
    assert (tmp_path / "interrupted" / "model.onnx").read_bytes() == (folder / "trials" / str(member) / "model.onnx").read_bytes()
    # its result written, final.csv not yet: the final files, with the final figures
    result.write_text(kept)
    whole = package("whole")
    assert whole["files_from"] == "final" and whole["finalized"]["final_steps"] == 60
    assert (tmp_path / "whole" / "model.onnx").read_bytes() == (final_dir / "model.onnx").read_bytes()
    assert whole["metrics"]["accuracy"] == pytest.approx(json.loads(kept)["final_accuracy"])


def test_one_members_failure_at_finalize_is_that_members(digits_study, tmp_path, monkeypatch):
    """Issue 29: a member that cannot be timed again (here its timing process dies of a real
    SIGSEGV) keeps its search-time figures, marked, and finalize completes with the others."""
    import shutil

    from autoprune.errors import StudyError
    from autoprune.finalize import finalize
    from autoprune.results import SearchResult

    folder = tmp_path / "copy"
    shutil.copytree(digits_study.study_dir, folder)
    front = digits_study.front[~digits_study.front["baseline"].astype(bool)]
    done = digits_study.trials[(digits_study.trials["state"] == "COMPLETE") & ~digits_study.trials["baseline"]]
    a = int(front.iloc[0]["trial"])
    b = int(done[done["trial"] != a].iloc[0]["trial"])
    said: list[str] = []
    monkeypatch.setenv("AUTOPRUNE_FAULT", f"segv@device#{a}")
    df = finalize(folder, steps=10, trials=[a, b], log=said.append)
    assert list(df["trial"]) == [b]
    assert any(f"trial {a}: could not be finalized" in m and "SIGSEGV" in m for m in said), said
    marked = SearchResult.load(folder).front.set_index("trial")
    assert marked.loc[a, "fidelity"].endswith("; finalize failed")
    assert marked.loc[a, "accuracy"] == front.iloc[0]["accuracy"]  # its search-time figures stand
    with pytest.raises(StudyError, match="no member could be finalized"):  # every member failing is the command's
        finalize(folder, steps=10, trials=[a], log=said.append)
    monkeypatch.delenv("AUTOPRUNE_FAULT")
    df = finalize(folder, steps=10, trials=[a], log=said.append)  # tried again: finalized, the mark gone
    assert set(df["trial"]) == {a, b}
    assert not (folder / "trials" / str(a) / "final" / "failed.json").exists()
    assert SearchResult.load(folder).front.set_index("trial").loc[a, "fidelity"].startswith("final")


@pytest.mark.slow
def test_processes_finalizing_one_study_share_its_members_and_take_over_a_dead_ones(digits_study, tmp_path):
    """Issue 26.2: members are claimed through the study's storage. A second process skips
    the member the first holds (alive), finalizes the others, and takes that member over
    once the first is killed (-9) mid-member; each member is finalized once, none lost."""
    import os
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import time

    from conftest import REPO

    from autoprune.results import SearchResult
    from autoprune.storage import FINAL_ATTR

    folder = tmp_path / "copy"
    shutil.copytree(digits_study.study_dir, folder)
    done = digits_study.trials[(digits_study.trials["state"] == "COMPLETE") & ~digits_study.trials["baseline"]]
    members = sorted(int(n) for n in done["trial"].head(3))
    first = members[0]  # the first of them each process comes to
    study = SearchResult.load(folder).study
    host = socket.gethostname()

    def finalizer(fault: str | None = None) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        env.pop("AUTOPRUNE_FAULT", None)
        if fault:
            env["AUTOPRUNE_FAULT"] = fault
        return subprocess.Popen([sys.executable, "-m", "autoprune", "finalize", str(folder), "--steps", "10",
                                 "--trials", ",".join(map(str, members))], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def state(n: int) -> dict:
        return study.user_attrs.get(f"{FINAL_ATTR}{n}") or {}

    def wait_until(check, what: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, what
            time.sleep(0.3)

    holder = finalizer(f"hang@device#{first}")  # its timing of that member hangs: it holds the claim
    wait_until(lambda: state(first).get("owner") == f"{host}:{holder.pid}" and state(first)["state"] == "running",
               "the first process never claimed its first member")
    other = finalizer()
    wait_until(lambda: state(members[1]).get("owner") == f"{host}:{other.pid}",
               "the second process never went past the member the first holds")
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate()
    out, err = other.communicate(timeout=600)
    assert other.returncode == 0, err[-3000:]
    said = " ".join(err.split())
    assert f"trial {first}: waiting for {host}:{holder.pid}" in said
    for n in members:
        assert state(n)["state"] == "done" and state(n)["owner"] == f"{host}:{other.pid}", state(n)
        assert len(re.findall(rf"trial {n}(?: at \w+)?: accuracy .*?-> ", said)) == 1, said  # once
    final = pd.read_csv(folder / "final.csv")
    # (the unpruned model at INT8 among them is not fine-tuned: 0 steps)
    assert sorted(final["trial"]) == members and set(final["final_steps"]) <= {0, 10}


def test_a_trained_plans_timing_much_slower_than_its_screen_figure_is_taken_again(ctx, tmp_path):
    """measure_against: once where the figure agrees with the screen's, is faster, or has
    none to agree with, or where the cache answers; again (up to RETIMES more rounds) where
    it is over RETIME_OFF slower, keeping the fastest round, which the cache then holds.
    Real ONNX Runtime timings."""
    import copy

    from autoprune.export import to_onnx
    from autoprune.measure import RETIMES, MeasurementCache
    from autoprune.objective import measure_against

    onnx = to_onnx(ctx.task.model.eval(), ctx.task.example_input(1), tmp_path / "m.onnx", 1e-4, 1e-4)

    def fresh(name: str):
        local = copy.copy(ctx)
        local.cache = MeasurementCache(tmp_path / f"{name}.json")
        return local

    m, cached, _, rounds = measure_against(fresh("none"), onnx, tmp_path, {}, 1, None, pause_s=0)
    assert not cached and rounds == []  # nothing to agree with: once
    rounds = measure_against(fresh("faster"), onnx, tmp_path, {}, 1, m.median_ms * 10, pause_s=0)[3]
    assert rounds == []  # faster than the screen's figure: it stands
    local = fresh("slow")
    m, cached, _, rounds = measure_against(local, onnx, tmp_path, {}, 1, m.median_ms / 10, pause_s=0)
    assert not cached and len(rounds) == 1 + RETIMES  # still slow after every round: all were taken
    assert m.median_ms == min(rounds)  # the fastest round is kept
    if not m.noisy:  # (a noisy figure is never cached)
        assert local.cache.get(local.device.cache_key(onnx)).median_ms == m.median_ms
        again, cached, _, more = measure_against(local, onnx, tmp_path, {}, 1, m.median_ms / 10, pause_s=0)
        assert cached and again.median_ms == m.median_ms and more == []  # the cache answers: not timed


def test_a_final_timing_much_slower_than_the_search_one_is_taken_again(ctx, tmp_path):
    """Finalize's paired timing: once where its figures agree with the search's (or are
    faster), again (up to RETIMES more rounds) where the candidate's or the baseline's is
    over RETIME_OFF slower, keeping each one's fastest round. Real ONNX Runtime timings."""
    from autoprune.export import to_onnx
    from autoprune.finalize import RETIMES, paired_timing

    onnx = to_onnx(ctx.task.model.eval(), ctx.task.example_input(1), tmp_path / "m.onnx", 1e-4, 1e-4)
    base_ms, m, rounds, first = paired_timing(ctx.device, onnx, onnx, tmp_path, "t", pause_s=0)
    assert rounds == 1 and m.median_ms == first and base_ms > 0  # no search-time figures: once
    faster = paired_timing(ctx.device, onnx, onnx, tmp_path, "t", expected_ms=m.median_ms * 10,
                           expected_base_ms=base_ms * 10, pause_s=0)
    assert faster[2] == 1  # faster than in the search (a harder-tuned build): it stands
    for expected in ({"expected_ms": m.median_ms / 10}, {"expected_base_ms": base_ms / 10}):
        base_again, m_again, rounds, first = paired_timing(ctx.device, onnx, onnx, tmp_path, "t", pause_s=0,
                                                           **expected)
        assert rounds == 1 + RETIMES  # still slow after every round: all were taken
        assert m_again.median_ms <= first and base_again > 0  # the fastest round is kept
