"""Recovery that earns trust: distillation from the unpruned model, multi-fidelity rungs,
finalize at the end of every search, and a recommended pick on final figures."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shutil
import socket
import subprocess

import pandas as pd
import pytest
import torch
from conftest import run_cli
from torch import nn

from autoprune.device import Device
from autoprune.objective import Context, Stager, run_candidate
from autoprune.profiles import load_profile
from autoprune.pruning import GroupChoice, PruningPlan
from autoprune.recover import Distill, TrainConfig, train
from autoprune.space import load_space, resolve


def test_distillation_term_is_zero_when_the_student_matches_the_teacher():
    torch.manual_seed(0)
    teacher = nn.Conv2d(3, 5, 1)  # per-pixel logits (N, C, H, W): the class axis is 1
    x = torch.randn(4, 3, 6, 6)
    hard = torch.tensor(2.0)
    d = Distill(teacher, weight=0.25, temperature=3.0)
    with torch.no_grad():
        t = teacher(x)
    same = d.loss(t.clone(), [t], hard)
    assert same.item() == pytest.approx(0.75 * 2.0, abs=1e-5)  # only the label term is left
    other = d.loss(torch.randn(4, 5, 6, 6), [t], hard)
    assert other.item() > same.item() + 0.1


def test_teacher_outputs_are_kept_per_example_and_flip(digits_task, request):
    data = digits_task.train
    d = Distill(digits_task.model)
    calls = []
    hook = d.teacher.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    request.addfinalizer(hook.remove)  # the task's model is shared by the whole session
    idx = torch.tensor([3, 7, 3, 11])
    flip = torch.tensor([False, True, True, False])
    x = torch.where(flip[:, None, None, None], data.x[idx].flip(-1), data.x[idx])
    with torch.no_grad():
        expected = digits_task.model(x)
    [got] = d.teacher_out(data, idx, flip, x)  # one tensor per output
    assert torch.allclose(got, expected, atol=1e-5)
    calls.clear()
    [again] = d.teacher_out(data, idx, flip, x)  # every (example, flip) is known now
    assert calls == [] and torch.equal(again, got)
    d.teacher_out(data, torch.tensor([3, 5]), torch.tensor([False, False]), data.x[[3, 5]])
    assert calls == [1]  # only the unseen example 5 is run
    small = Distill(digits_task.model, cache_mb=1e-6)  # too big to keep: the teacher runs every time
    calls.clear()
    small.teacher_out(data, idx, flip, x)
    small.teacher_out(data, idx, flip, x)
    assert calls == [1, 4, 4]  # the size probe, then every batch in full


def test_distillation_changes_the_fine_tune_and_is_off_at_weight_zero(digits_task):
    def tuned(distill):
        model = copy.deepcopy(digits_task.model)
        with torch.no_grad():  # a damaged student, so the two losses pull apart
            for p in model.parameters():
                p.mul_(0.5)
        train(model, digits_task.train, TrainConfig(20, 32, 0.01, seed=0), distill=distill)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    plain = tuned(None)
    assert torch.equal(plain, tuned(Distill(digits_task.model, weight=0.0)))
    assert not torch.allclose(plain, tuned(Distill(digits_task.model, weight=0.5)))


def test_the_rung_judge_compares_equal_fidelities_only():
    s = Stager(budget_ms=1.0, promote_margin=1.0,
               rung_fronts={40: [(0.5, 90.0)], 160: [(0.5, 93.0)]})
    assert s.stop_at(40, 0.6, 89.5) is None  # within 1 pt of the faster trial at 40 steps
    why = s.stop_at(40, 0.6, 88.0)
    assert "not promoted past 40 steps" in why and "90.00%" in why
    assert s.stop_at(160, 0.6, 91.5) and s.stop_at(160, 0.6, 92.5) is None  # the 160-step front is 93
    assert s.stop_at(40, 0.4, 50.0) is None  # nothing as fast to lose against
    assert "over the 1 ms budget" in s.stop_at(40, 1.2, 99.0)
    # ASHA's share: only the better half of a rung (by distance behind its front) goes on
    rung = [(0.1, 90.0), (0.2, 89.0), (0.3, 88.5), (0.4, 88.0)]  # 0, 1, 1.5, 2 points behind
    half = Stager(budget_ms=1.0, promote_margin=5.0, promote_share=0.5, rung_fronts={40: rung})
    assert half.stop_at(40, 0.5, 89.8) is None  # 0.2 behind: only one is closer
    assert "3 of 5 candidates at this rung are closer" in half.stop_at(40, 0.5, 88.2)
    assert half.stop_at(40, 0.05, 70.0) is None  # the fastest yet is on the front: never cut


@pytest.fixture(scope="module")
def ctx(digits_task):
    space = load_space("default")
    rec = dataclasses.replace(space.recovery, finetune_steps=10, rungs=(30, 60), eval_samples=300)
    space = dataclasses.replace(space, recovery=rec)
    resolved = resolve(space, digits_task.model, digits_task.example_input(1), digits_task.ignored_layers)
    profile = load_profile("x86-ort")
    profile = dataclasses.replace(profile, measurement=dataclasses.replace(profile.measurement, sessions=1))
    return Context(digits_task, Device.of(profile), resolved, None)


def test_promising_candidates_climb_every_rung_and_others_stop(ctx, tmp_path):
    plan = PruningPlan({g.info.name: GroupChoice("l1", 0.5) for g in ctx.space.groups})
    climb = run_candidate(dataclasses.replace(ctx, stager=Stager(budget_ms=1e9)), plan, tmp_path / "a", seed=0)
    assert climb.finetune_steps == 60 and sorted(climb.rung_accuracy) == [10, 30, 60]
    assert climb.accuracy == climb.rung_accuracy[60] and climb.promotion is None
    rival = Stager(budget_ms=1e9, rung_fronts={10: [(0.0, 100.0)]}, promote_margin=0.5, skips=False)
    stop = run_candidate(dataclasses.replace(ctx, stager=rival), plan, tmp_path / "b", seed=0)
    assert stop.finetune_steps == 10 and list(stop.rung_accuracy) == [10]
    assert "not promoted past 10 steps" in stop.promotion
    assert stop.rung_accuracy[10] == pytest.approx(climb.rung_accuracy[10])  # same first rung either way
    assert stop.stage_s["recover"] < climb.stage_s["recover"]
    # a candidate's figures say their fidelity: no rung judge, no later rungs
    plain = run_candidate(ctx, plan, tmp_path / "c", seed=0)
    assert plain.finetune_steps == 10 and plain.eval_samples == 300


def test_batch_norm_statistics_fit_the_fine_tuned_weights(ctx):
    """Recalibrated after the fine-tune too: with a momentum like MNASNet's 3e-4 the
    running averages would still describe the weights before it."""
    from autoprune.objective import prune_and_recover
    from autoprune.recover import recalibrate_bn

    slow = copy.deepcopy(ctx.task.model)
    for m in slow.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 3e-4
    task = dataclasses.replace(ctx.task, model=slow)
    plan = PruningPlan({g.info.name: GroupChoice("l1", 0.5) for g in ctx.space.groups})
    model, _, _ = prune_and_recover(dataclasses.replace(ctx, task=task), plan, 0, {})
    again = copy.deepcopy(model)
    rec = ctx.space.space.recovery
    recalibrate_bn(again, task.train, rec.bn_batches, rec.batch_size)
    bns = [(a, b) for a, b in zip(model.modules(), again.modules(), strict=True)
           if isinstance(a, nn.modules.batchnorm._BatchNorm)]
    assert bns
    for a, b in bns:
        torch.testing.assert_close(a.running_mean, b.running_mean)
        torch.testing.assert_close(a.running_var, b.running_var)


@pytest.fixture(scope="module")
def finalized(tmp_path_factory):
    """A default CLI search (finalize on) on the digits task."""
    results = tmp_path_factory.mktemp("final")
    argv = ["search", "--task", "digits", "--device", "x86-ort", "--latency-budget-ms", "1", "--trials", "5",
            "--results-dir", str(results), "--max-drop", "2"]
    proc = run_cli(*argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results / "digits-x86-ort", proc, argv


def test_search_finalizes_by_default_and_recommends(finalized):
    folder, proc, _ = finalized
    final = pd.read_csv(folder / "final.csv")
    pruned = final[final["search_steps"] > 0]  # the unpruned model at INT8 has nothing to recover
    assert len(pruned) >= 1 and (pruned["final_steps"] == 800).all() and (final["final_batch_size"] == 128).all()
    assert (final[final["search_steps"] == 0]["final_steps"] == 0).all()
    assert (final["eval_samples"] == 360).all()  # the whole digits validation split
    assert "finalizing the front" in proc.stderr
    out = " ".join(proc.stdout.split())
    assert "recommended (final figures)" in out
    # a pruned pick is faster than the unpruned model, or the unpruned model is the pick and says why
    pick = re.search(r"fastest within 2 pt of the baseline: (?:trial \d+, .*? ms(?: \(noisy\))?, ([\d.]+)x|"
                     r"the unpruned model \(trial \d+\): no pruned candidate is faster)", out)
    assert pick is not None, out
    assert pick.group(1) is None or float(pick.group(1)) > 1.0, out
    assert "autoprune export" in out
    front = pd.read_csv(folder / "pareto.csv")
    finals = front[front["trial"].isin(final["trial"])]
    assert not finals.empty and finals["fidelity"].str.match(r"final: (\d+\+800|0\+0) steps, 360 images").all()
    others = front[~front["trial"].isin(final["trial"]) & ~front["baseline"]]
    assert others["fidelity"].str.startswith("search").all()
    for _, row in final.iterrows():  # the front shows the final figures of a finalized member
        shown = front[front["trial"] == row["trial"]].iloc[0]
        assert shown["accuracy"] == pytest.approx(row["final_accuracy"])
        assert shown["search_accuracy"] == pytest.approx(row["search_accuracy"])


def test_int8_members_are_finalized_at_int8(finalized):
    """A quantized member is calibrated again after its final fine-tune and scored as it ships."""
    from autoprune.evaluate import onnx_accuracy
    from autoprune.tasks import load_task

    folder, _, _ = finalized
    final = pd.read_csv(folder / "final.csv")
    int8 = final[final["precision"] == "int8"]
    assert not int8.empty, final[["trial", "precision"]]
    val = load_task("digits").val
    for _, row in int8.iterrows():
        out = folder / "trials" / str(int(row["trial"])) / "final"
        assert row["calibration"] == "minmax" and row["calibration_samples"] == 200
        assert (out / "model.float.onnx").is_file()
        assert row["final_accuracy"] == pytest.approx(onnx_accuracy(out / "model.onnx", val))
        assert row["final_float_accuracy"] == row["final_float_accuracy"]  # recorded


def test_an_interrupted_finalize_resumes(finalized, tmp_path):
    folder, _, argv = finalized
    copy_dir = tmp_path / "copy"
    shutil.copytree(folder.parent, copy_dir)
    study = copy_dir / folder.name
    final = pd.read_csv(study / "final.csv")
    kept, redo = int(final["trial"].iloc[0]), final["trial"].iloc[1:].astype(int).tolist()
    stamp = (study / "trials" / str(kept) / "final" / "state.pt").stat().st_mtime_ns
    # as if killed after the first member: the others' claims are held by a process now dead
    from autoprune.results import SearchResult
    from autoprune.storage import FINAL_ATTR

    gone = subprocess.Popen(["true"])
    gone.wait()
    stored = SearchResult.load(study).study
    for n in redo:
        shutil.rmtree(study / "trials" / str(n) / "final")
        claim = stored.user_attrs[f"{FINAL_ATTR}{n}"]
        stored.set_user_attr(f"{FINAL_ATTR}{n}", {**claim, "state": "running", "owner": f"{socket.gethostname()}:{gone.pid}"})
    argv = [a if a != str(folder.parent) else str(copy_dir) for a in argv]
    proc = run_cli(*argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"trial {kept}: already finalized" in " ".join(proc.stderr.split())
    assert (study / "trials" / str(kept) / "final" / "state.pt").stat().st_mtime_ns == stamp
    again = pd.read_csv(study / "final.csv")
    assert sorted(again["trial"]) == sorted(final["trial"])


def test_front_report_and_export_use_the_final_figures(finalized, tmp_path):
    folder, _, _ = finalized
    proc = run_cli("front", str(folder))
    assert proc.returncode == 0 and "recommended (final figures)" in " ".join(proc.stdout.split())
    out = tmp_path / "r.html"
    assert run_cli("report", str(folder), "-o", str(out)).returncode == 0
    html = out.read_text()
    assert html.index("<h2>Recommended</h2>") < html.index("<h2>Summary</h2>")
    assert "Finalized members" in html
    final = pd.read_csv(folder / "final.csv")
    n = int(final["trial"].iloc[0])
    proc = run_cli("export", str(folder), "--trial", str(n), "--out", str(tmp_path / "pkg"))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    assert manifest["metrics"]["accuracy"] == pytest.approx(final["final_accuracy"].iloc[0])


def test_candidates_far_below_the_baseline_leave_the_shown_front(digits_study):
    from autoprune.results import SearchResult

    result = SearchResult.load(digits_study.study_dir)
    base = float(result.baseline["accuracy"])
    assert result.metric_floor == pytest.approx(base - 10)
    strict = dataclasses.replace(result, min_metric=base + 1)
    shown = strict.shown(result.trials)
    assert shown["baseline"].all()  # the baseline is always shown; nothing else reaches base + 1
    assert len(result.trials) > len(shown)


def test_help_shows_finalize_and_max_drop():
    proc = run_cli("search", "--help")
    assert proc.returncode == 0
    assert "--no-finalize" in proc.stdout and "--max-drop" in proc.stdout and "--min-metric" in proc.stdout
