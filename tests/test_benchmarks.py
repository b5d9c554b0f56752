"""The benchmark scripts run end to end (tiny inputs, --quick) and write their reports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


def run_script(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run(  # noqa: PLW1510 - the return code is asserted with stderr shown
        [sys.executable, str(BENCH / name), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture
def compare_module():
    sys.path.insert(0, str(BENCH))
    try:
        import compare

        yield compare
    finally:
        sys.path.remove(str(BENCH))


def test_pareto_2d_keeps_only_undominated_points(compare_module):
    df = pd.DataFrame(
        {
            "latency_ms": [1.0, 2.0, 1.5, 0.5, 2.0],
            "accuracy": [90.0, 92.0, 89.0, 80.0, 91.0],
            "trial": range(5),
        }
    )
    front = compare_module.pareto_2d(df)
    assert list(front["trial"]) == [3, 0, 1]


def test_best_speedup_respects_the_accuracy_drop(compare_module):
    df = pd.DataFrame(
        {"latency_ms": [2.0, 1.0, 0.5], "accuracy": [92.0, 91.6, 90.0], "trial": range(3)}
    )
    assert compare_module.best_speedup(df, 92.0, 2.0, 0.5)["trial"] == 1
    assert compare_module.best_speedup(df, 92.0, 2.0, 0.1)["trial"] == 0
    assert compare_module.best_speedup(df, 95.0, 2.0, 0.5) is None


def test_a_search_run_past_the_wall_time_is_cut_to_the_trials_begun_within_it(compare_module):
    df = pd.DataFrame({"trial": [4, 0, 1, 2, 3, 5], "duration_s": [10.0, 10.0, 10.0, 10.0, None, 7000.0],
                       "state": "COMPLETE", "fail_stage": [None] * 5 + ["interrupted"]})
    # 40 s of trials in 44 s of wall time: each trial's 10 s count 11; trial 3 (no duration) counts 0, and so
    # does trial 5, interrupted (its duration spans the gap between two sittings)
    cut, wall = compare_module.cut_to_wall(df, spent=44.0, limit=25.0)
    assert sorted(cut["trial"]) == [0, 1, 2] and wall == pytest.approx(33.0)  # trial 2 began at 22 s
    same, wall = compare_module.cut_to_wall(df, spent=44.0, limit=50.0)  # it ran no longer than the limit
    assert len(same) == 6 and wall == 44.0


def test_compare_keeps_autoprune_rows_of_an_earlier_default_space_apart(compare_module, tmp_path):
    """A changed default space runs the autoprune and random search arms again: their
    earlier rows (those without a recorded space were made with retired/default-2.yaml)
    leave the main table for the ablation table, and the report says so."""
    import argparse

    from _machine import LoadMonitor

    c = compare_module
    args = argparse.Namespace(budget_ms=None, rows=tmp_path / "rows.jsonl", out=tmp_path / "compare.md",
                              device="x86-ort", trials=10)
    base = {"task": "fashion-mnist", "seed": 0, "wall_s": 100.0, "speedup_0_5": 5.0, "speedup_1": 6.0,
            "metric_at_4x": 92.0, "metric_at_8x": None, "metric_at_12x": None, "budget_ms": 1000.0}
    old, rand = {**base, "arm": "autoprune"}, {**base, "arm": "random"}
    new = {**base, "arm": "autoprune", "speedup_0_5": 9.0, "space_hash": c._space_hash(),
           "command": ".venv/bin/python benchmarks/compare.py --seeds 0"}
    assert c._space_hash() != c._space_hash(c.UNRECORDED_SPACE)
    new_rand = {**rand, "speedup_0_5": 7.0, "space_hash": c._space_hash()}
    assert not c._current(old, args) and c._current(new, args)
    assert not c._current(rand, args) and c._current(new_rand, args)  # random search runs again too
    assert c._searched_earlier(rand) and not c._searched_earlier(new_rand)

    rows = c.report_rows([old, new, rand], args)
    assert sorted(rows["arm"]) == sorted([c.EARLIER, "autoprune", c.RANDOM_EARLIER])
    text = c.report(rows, args, LoadMonitor())
    main, ablation = text.split("## Ablation")
    assert re.search(r"\| autoprune +\| +1 \| .*\| 9\.00 \[9\.00-9\.00\]", main)  # the new row alone
    assert "| random " not in main  # its only row searched the space before
    assert "Random search's rows of fashion-mnist seed 0 searched the default space before block removal" in main
    assert re.search(r"both, before block removal.*\| +5\.00 \|", ablation)
    assert re.search(r"random search before block removal.*\| +5\.00 \|", ablation)
    assert "- fashion-mnist seed 0: autoprune: `.venv/bin/python benchmarks/compare.py --seeds 0`" in main
    assert "- every other row: made before rows recorded their command" in main
    assert "Finalize times a member" not in text  # none of these rows' finalize re-timed a slow pair
    rows = c.report_rows([old, new, rand, {**new_rand, "final_retimes": 2}], args)
    text = c.report(rows, args, LoadMonitor())
    assert re.search(r"\| random +\| +1 \| .*\| 7\.00 \[7\.00-7\.00\]", text)
    assert re.search(r"again where either is over 15% slower .*: random on fashion-mnist seed 0\. The other", text)
    assert c._retimed({"date": "2026-12-07 01:00 UTC"}) and not c._retimed({"date": "2026-12-06 20:26 UTC"})
    assert c.report_rows([old, rand], args)["arm"].tolist() == [c.EARLIER, c.RANDOM_EARLIER]  # no current row
    # a budget where one seed's arm has no candidate: the median of the others, saying how many
    seed1 = {**new, "seed": 1, "metric_at_8x": 91.5}
    text = c.report(c.report_rows([new, seed1], args), args, LoadMonitor())
    assert re.search(r"\| autoprune +\| +2 \| .*\| 91\.50 \[91\.50-91\.50\] \(1 of 2 seeds\) +\| +\|", text)
    assert "92.00 [92.00-92.00] |" in text  # every seed has it: no count


def test_a_task_without_residual_blocks_searches_the_space_before_block_removal_alike(compare_module, tmp_path):
    """The default space before block removal differs from today's there and in its
    screen (two waves since 2026-12-07), so for random search (which screens nothing) on
    the segmentation task's U-Net (no residual block) its rows stand for today's; on the
    reference task's ResNet (blocks) they do not, nor do rows of an older space, nor
    autoprune's (it screens). Where a task has a row of each, the later one counts."""
    import argparse

    c = compare_module
    before = c._space_hash(c.UNRECORDED_SPACE)
    assert c._alike_on("fashion-mnist-seg", before, screens=False)
    assert not c._alike_on("fashion-mnist", before, screens=False)
    assert not c._alike_on("fashion-mnist-seg", c._space_hash("retired/default-1.yaml"), screens=False)  # per-group
    assert not c._alike_on("fashion-mnist-seg", before)  # autoprune's screen trained its choice in one wave then
    assert c._alike_on("fashion-mnist", c._space_hash())
    # the space before two waves differs from today's only in its screen: alike for random search alone
    one_wave = c._space_hash("retired/default-3.yaml")
    assert not c._alike_on("fashion-mnist", one_wave) and c._alike_on("fashion-mnist", one_wave, screens=False)
    assert c._alike_on("fashion-mnist-seg", c._space_hash("retired/default-3.yaml"), screens=False)
    args = argparse.Namespace(budget_ms=None)
    base = {"seed": 0, "wall_s": 100.0, "speedup_0_5": 5.0, "budget_ms": 1000.0}
    old = {**base, "task": "fashion-mnist-seg", "arm": "random"}  # no space recorded: retired/default-2
    assert c._current(old, args) and not c._current({**old, "task": "fashion-mnist"}, args)
    assert not c._current({**old, "arm": "autoprune", "space_hash": one_wave}, args)
    assert "stand for today's: fashion-mnist-seg seed 0 (random)." in c._alike_searches(c.report_rows([old], args))
    new = {**old, "speedup_0_5": 7.0, "space_hash": c._space_hash()}
    rows = c.report_rows([old, {**old, "arm": "autoprune"}, new], args)
    assert sorted(zip(rows["arm"], rows["speedup_0_5"])) == [(c.ONE_WAVE, 5.0), ("random", 7.0)]
    assert c._wall(args, [old, {**new, "wall_s": 120.0}], "fashion-mnist-seg", 0, "random") == 120.0
    # autoprune's rows of the space before two waves (or, on the U-Net, before block removal) are one-wave rows
    full = {**base, **dict.fromkeys(("speedup_1", "metric_at_4x", "metric_at_8x", "metric_at_12x"))}
    once = [{**full, "task": "fashion-mnist", "arm": "autoprune", "space_hash": one_wave},
            {**full, "task": "fashion-mnist-seg", "arm": "autoprune"},
            {**full, "task": "fashion-mnist", "arm": "autoprune"}]
    rows = c.report_rows(once, args)
    assert rows["arm"].tolist() == [c.ONE_WAVE, c.ONE_WAVE, c.EARLIER]
    assert "rows of fashion-mnist seed 0, fashion-mnist-seg seed 0 trained the screen's choice in one wave" \
        in c._earlier_searches(rows)
    assert "autoprune, the screen's choice trained in one wave" in c._ablation(rows)


def test_compare_refuses_to_resume_a_study_folder_of_an_earlier_default_space(compare_module, tmp_path):
    """Studies resume in the space they recorded, so a left-over folder of an earlier
    default space would pass its old search off as today's: compare stops and says so,
    and leaves the folder as it was."""
    import argparse

    from autoprune.space import load_space, retired_space

    c = compare_module
    study = tmp_path / "random"
    study.mkdir()
    config = {"schema": "autoprune.study/1", "study": "random", "task": "fashion-mnist", "space": "default",
              "space_hash": c._space_hash(c.UNRECORDED_SPACE)}
    (study / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit, match=r"random was searched in an earlier default space .*move it aside"):
        c._refuse_an_earlier_space(study)
    assert json.loads((study / "config.json").read_text()) == config
    (study / "config.json").write_text(json.dumps({**config, "space_hash": c._space_hash()}))
    c._refuse_an_earlier_space(study)  # today's space: resumes
    no_screen = load_space("default").with_screen_plans(0).hash  # random search's study: its own screen_plans
    (study / "config.json").write_text(json.dumps({**config, "space_hash": no_screen, "screen_plans": 0}))
    c._refuse_an_earlier_space(study)
    # a study of the space before two waves: random search's resumes (it screens nothing), autoprune's does not
    one_wave = retired_space("default", c._space_hash("retired/default-3.yaml"))
    (study / "config.json").write_text(json.dumps({**config, "space_hash": one_wave.with_screen_plans(0).hash,
                                                   "screen_plans": 0}))
    c._refuse_an_earlier_space(study)
    (study / "config.json").write_text(json.dumps({**config, "space_hash": one_wave.hash}))
    with pytest.raises(SystemExit, match=r"searched in an earlier default space"):
        c._refuse_an_earlier_space(study)
    c._refuse_an_earlier_space(tmp_path / "autoprune")  # no folder yet: a fresh study
    with pytest.raises(SystemExit, match=r"--refinalize finalizes autoprune's search of fashion-mnist seed 0 again "
                                         r"from its study, and .*autoprune has none"):  # not a new search
        c.search_arm(argparse.Namespace(refinalize=True), "fashion-mnist", 0, "autoprune", tmp_path, None)


@pytest.mark.slow
def test_compare_quick_runs_every_arm_finalizes_and_resumes(tmp_path):
    """benchmarks/compare.py --quick: five arms on digits, one row each, and a second
    run finds every row done."""
    rows, out = tmp_path / "rows.jsonl", tmp_path / "compare.md"
    args = ("compare.py", "--quick", "--results-dir", str(tmp_path / "runs"), "--rows", str(rows), "--out", str(out))
    run_script(*args, timeout=1500)
    table = pd.read_csv(out.with_suffix(".csv"))
    assert list(table.columns) == ["task", "seed", "arm", "wall_s", "speedup_0_5", "speedup_1", "metric_at_4x",
                                   "metric_at_8x", "metric_at_12x"]
    assert set(table["arm"]) == {"autoprune", "random", "uniform", "uniform-int8", "tp-global-int8"}
    assert (table["speedup_1"] >= 1.0).all()  # the unpruned model is always a candidate
    # each row names its host, so a report never takes a median across unlike machines unseen
    recorded = [json.loads(line) for line in rows.read_text().splitlines()]
    assert all(r["cpu"] and isinstance(r["cpu_flags"], list) and r["base_ms"] > 0 for r in recorded)
    assert "the baseline's final latency" in out.read_text()
    run_script(*args, timeout=600)
    assert len(rows.read_text().splitlines()) == 5
    # autoprune's row as if finalized before slow pairs were timed again: --refinalize
    # finalizes its members again from its search (not run again) and supersedes the row
    older = [{k: v for k, v in r.items() if k != "final_retimes"} | ({"date": "2026-12-06 20:00 UTC"}
             if r["arm"] == "autoprune" else {}) for r in recorded]
    rows.write_text("".join(json.dumps(r) + "\n" for r in older))
    finals = tmp_path / "runs" / "digits" / "0" / "autoprune.final.jsonl"
    members = [json.loads(line) for line in finals.read_text().splitlines()]
    finals.write_text("".join(json.dumps({k: v for k, v in m.items() if k != "final_latency_rounds"}) + "\n"
                              for m in members))
    run_script(*args, "--refinalize", "--arms", "autoprune", timeout=600)
    after = [json.loads(line) for line in rows.read_text().splitlines()]
    ours = [r for r in after if r["arm"] == "autoprune"]
    assert len(after) == 6 and len(ours) == 2 and "superseded" in ours[0] and ours[1]["final_retimes"] >= 1
    assert ours[1]["wall_s"] == pytest.approx(ours[0]["wall_s"], abs=30)  # its search did not run again
    again = [json.loads(line) for line in finals.read_text().splitlines()]
    assert len(again) == 2 * len(members) and all("final_latency_rounds" in m for m in again[len(members):])
    assert (pd.read_csv(out.with_suffix(".csv"))["arm"] == "autoprune").sum() == 1  # the new row alone
    # --redo runs an arm again: its row stays, marked superseded, and its files move aside
    run_script(*args, "--redo", "--arms", "uniform-int8", timeout=600)
    redone = [json.loads(line) for line in rows.read_text().splitlines()]
    ladders = [r for r in redone if r["arm"] == "uniform-int8"]
    assert len(redone) == 7 and len(ladders) == 2 and "--redo" in ladders[0]["superseded"]
    assert "superseded" not in ladders[1] and "--redo" in ladders[1]["command"]
    aside = list((tmp_path / "runs-superseded" / "digits" / "0").glob("*/uniform-int8/candidates.jsonl"))
    assert len(aside) == 1 and (tmp_path / "runs" / "digits" / "0" / "uniform-int8" / "candidates.jsonl").is_file()
    assert (pd.read_csv(out.with_suffix(".csv"))["arm"] == "uniform-int8").sum() == 1
    run_script(*args, timeout=600)  # nothing left to run, nothing moved again
    assert len(rows.read_text().splitlines()) == 7
    assert len(list((tmp_path / "runs-superseded" / "digits" / "0").iterdir())) == 1
    # autoprune searched again in half random search's wall time: --equal-wall cuts random search's study
    # to its trials begun within it (not run again) and supersedes its row
    before = [json.loads(line) for line in rows.read_text().splitlines()]
    old = next(r for r in before if r["arm"] == "random" and "superseded" not in r)
    for r in before:
        if r["arm"] == "autoprune" and "superseded" not in r:
            r["wall_s"] = old["wall_s"] / 2
    rows.write_text("".join(json.dumps(r) + "\n" for r in before))
    run_script(*args, "--equal-wall", "--arms", "random", timeout=600)
    cut = [json.loads(line) for line in rows.read_text().splitlines()]
    randoms = [r for r in cut if r["arm"] == "random"]
    assert len(cut) == 8 and "superseded" in randoms[0] and "superseded" not in randoms[1]
    assert randoms[1]["candidates"] < old["candidates"] and randoms[1]["wall_s"] < 0.75 * old["wall_s"]
    run_script(*args, "--equal-wall", "--arms", "random", timeout=600)  # within 10% now: nothing to do
    assert len(rows.read_text().splitlines()) == 8


def test_roofline_gemm_quick(tmp_path):
    out = tmp_path / "roofline.md"
    run_script("roofline.py", "--quick", "--gemm-only", "--out", str(out))
    text = out.read_text()
    assert "GFLOP/s on 1 thread" in text and "Load average" in text and "Command:" in text


@pytest.mark.slow
def test_roofline_quick_with_models(tmp_path):
    out = tmp_path / "roofline.md"
    run_script("roofline.py", "--quick", "--out", str(out))
    assert "digits" in out.read_text()


@pytest.mark.slow
def test_realization_quick(tmp_path):
    out = tmp_path / "realization.md"
    run_script("realization.py", "--quick", "--out", str(out))
    text = out.read_text()
    assert "median realization" in text and "round_to" in text
    assert out.with_suffix(".png").stat().st_size > 1000


@pytest.mark.slow
def test_int8_quick(tmp_path):
    out = tmp_path / "int8.md"
    run_script("int8.py", "--quick", "--no-tvm", "--allow-noisy", "--out", str(out))
    text = out.read_text()
    assert "## Latency by format" in text and "int8 QDQ u8s8 per-channel minmax" in text
    assert "## INT8 convolution latency against channel count" in text


@pytest.mark.slow
def test_precision_quick(tmp_path):
    out = tmp_path / "precision.md"
    run_script("precision.py", "--quick", "--out", str(out))
    assert "Spearman" in out.read_text()


@pytest.mark.slow
def test_imagefolder_quick(tmp_path):
    out = tmp_path / "imagefolder.md"
    run_script("imagefolder.py", "--quick", "--allow-noisy", "--out", str(out), "--data", str(tmp_path / "pngs"))
    text = out.read_text()
    assert "Peak RSS ratio, larger folder to smaller:" in text and "recovery images/s" in text
    assert len((tmp_path / "pngs" / "fashion-600" / "val" / "bag").iterdir().__next__().read_bytes()) > 0


def test_a_report_timed_on_a_busy_machine_is_refused_or_stamped(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        from _machine import LoadMonitor, write_report
    finally:
        sys.path.remove(str(BENCH))
    busy = LoadMonitor(every_s=60)
    busy.stop()
    busy.samples = [busy.before, 3.0 * os.cpu_count(), 3.0 * os.cpu_count()]  # as a loaded run records it
    out = tmp_path / "r.md"
    with pytest.raises(SystemExit, match="median 1-minute load during the run was"):
        write_report(out, "figures\n", busy, allow_noisy=False)
    assert not out.exists()
    write_report(out, "figures\n", busy, allow_noisy=True)
    text = out.read_text()
    assert text.startswith("> **Timed on a busy machine**") and "figures" in text
    assert "1-min load average: before" in text and f"{os.cpu_count()} cores" in text
    quiet = LoadMonitor(every_s=60)
    quiet.stop()
    quiet.samples = [0.1, 0.2, 0.3]
    write_report(tmp_path / "q.md", "figures\n", quiet, allow_noisy=False)
    assert "Noisy" not in (tmp_path / "q.md").read_text()


def test_fidelity_ranks_every_screen_and_rung_against_final_and_resumes(tmp_path):
    """benchmarks/fidelity.py scores plans of the space by every screening method and
    rung, fine-tunes them in full, and writes Kendall's tau per method (and its CSV)."""
    out, rows = tmp_path / "fidelity.md", tmp_path / "rows.jsonl"
    args = ("fidelity.py", "--task", "digits", "--candidates", "3", "--rows", str(rows), "--out", str(out))
    run_script(*args)
    table = pd.read_csv(out.with_suffix(".csv"))
    assert list(table.columns[:4]) == ["method", "tau", "seconds_per_candidate", "deciding"]
    assert table["deciding"].sum() == 1 and "adaptive BN" in set(table["method"])
    assert {"rung 40 steps", "rung 640 steps"} <= set(table["method"])
    kl = "adaptive BN + 20 steps, teacher KL"  # the loss-based figures: minus a divergence
    assert kl in set(table["method"]) and not table.set_index("method").loc[kl, "deciding"]
    assert "Kendall's tau against the final accuracy" in out.read_text()
    assert len(rows.read_text().splitlines()) == 3
    run_script(*args)  # every candidate is in the rows file: nothing runs again
    assert len(rows.read_text().splitlines()) == 3
    before = [json.loads(line) for line in rows.read_text().splitlines()]
    assert all(r[kl] <= 0 and r["adaptive BN, teacher KL"] < 0 for r in before)
    # a row from before the loss-based figures: --retime gives it them, the report leaves them out till then
    older = [{k: v for k, v in r.items() if "teacher KL" not in k} if i == 0 else r for i, r in enumerate(before)]
    rows.write_text("".join(json.dumps(r) + "\n" for r in older))
    run_script(*args, "--report-only")
    assert kl not in set(pd.read_csv(out.with_suffix(".csv"))["method"])
    run_script(*args, "--retime")  # the timings again, the figures kept
    after = [json.loads(line) for line in rows.read_text().splitlines()]
    assert [r["final"] for r in after] == [r["final"] for r in before]  # figures kept
    assert kl in set(pd.read_csv(out.with_suffix(".csv"))["method"]) and all(r[kl] <= 0 for r in after)
    # untrained scores come out exactly again; a trained one may not (CPU training is not
    # bit-reproducible here): the difference is kept, both figures
    assert all(r[k] == b[k] for r, b in zip(after, before) for k in ("zero-shot", "adaptive BN", "adaptive BN, teacher KL"))
    assert all(r["retimed"] and all(old == b[k] and new is not None for k, (old, new) in r["retime_differs"].items())
               for r, b in zip(after, before))
    assert all(r["rung 40 steps s"] > 0 and r["rung 40 steps s"] != b["rung 40 steps s"] for r, b in zip(after, before))
    exact = sum(not r["retime_differs"] for r in after)
    assert f"{exact} of 3 candidates gave every screen figure again exactly" in out.read_text()
    # two seeds: the second seed's plans run, the first's resume; one ranking pools both, each seed's beside
    run_script(*args, "--seed", "0,1", "--no-rungs")
    both = pd.read_csv(out.with_suffix(".csv")).set_index("method")
    assert len(rows.read_text().splitlines()) == 9  # 3 (seed 0, rungs) + 3 + 3 (seeds 0 and 1, first rung only)
    assert {"tau_seed_0", "tau_seed_1", "tau_5", "tau_95"} <= set(both.columns)
    interval = both[["tau_5", "tau_95"]].dropna()  # (a figure alike for every plan has no tau)
    assert not interval.empty and (interval["tau_5"] <= interval["tau_95"]).all() and both["deciding"].sum() == 1
    text = out.read_text()
    assert "6 of 6 plans drawn from the space (3 a seed, seeds 0, 1" in text and "tau_seed_N" in text
    # --refinal: each candidate trained to final once more under another seed; the first final ranked by it
    run_script(*args, "--seed", "0,1", "--no-rungs", "--refinal")
    again = [json.loads(line) for line in rows.read_text().splitlines()][3:]
    assert len(again) == 6 and all(0 <= r["final again"] <= 100 for r in again)
    ceiling = pd.read_csv(out.with_suffix(".csv")).set_index("method").loc["final again (noise ceiling)"]
    assert -1 <= ceiling["tau"] <= 1 and not ceiling["deciding"]
    assert "6 of 6 candidates trained once more to final under another seed" in out.read_text()


def test_tilts_sets_each_tilt_against_the_ladder_resumes_and_refuses_a_bad_plan_in_one_line(tmp_path):
    """benchmarks/tilts.py trains ladder plans and a tilt of one to final figures, resumes
    from its rows, and refuses a plan it cannot build before any work, in one line."""
    out, rows = tmp_path / "tilts.md", tmp_path / "rows.jsonl"
    args = ("tilts.py", "--task", "digits", "--rows", str(rows), "--out", str(out), "--allow-noisy", "--plans")
    run_script(*args, "0.3:", "0.3:early", "0.6:")
    written = [json.loads(line) for line in rows.read_text().splitlines()]
    assert [(r["ratio"], r["tilt"]) for r in written] == [(0.3, "none"), (0.3, "early"), (0.6, "none")]
    assert all(0 <= r["final"] <= 100 and r["latency_ms"] > 0 for r in written)
    ladder, tilted = ({g["ratio"] for g in r["plan"]["groups"].values()} for r in written[:2])
    assert ladder == {0.3} and len(tilted) > 1 and min(tilted) < 0.3 < max(tilted)  # one step each way
    table = out.read_text()
    assert "above_line" in table and "| early" in table
    run_script(*args, "0.3:", "0.6:")  # both in the rows file: nothing trains again
    assert len(rows.read_text().splitlines()) == 3

    env = dict(os.environ, PYTHONPATH=str(REPO))
    for plan, says in [("0.3", "RATIO:TILT"), ("0.3:sideways", "early, late, inner, shared"),
                       ("0.3:inner", "moves every group of digits's model alike")]:
        proc = subprocess.run([sys.executable, str(BENCH / "tilts.py"), *args[1:], plan], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len(rows.read_text().splitlines()) == 3


def test_process_modes_times_one_model_in_separate_processes_and_over_time_and_refuses_bad_input(tmp_path):
    """benchmarks/process_modes.py times a real ONNX file in several timing processes
    (ONNX Runtime, the device's runner) and reports each process's median, then traces
    it in one session window by window."""
    import torch

    from autoprune.export import to_onnx

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(4))
    model(torch.zeros(1, 1, 12, 12))
    (tmp_path / "trial").mkdir()
    to_onnx(model.eval(), torch.zeros(1, 1, 12, 12), tmp_path / "trial" / "model.onnx", 1e-4)
    out = tmp_path / "modes.md"
    run_script("process_modes.py", str(tmp_path / "trial"), "--processes", "2", "--trace", "0.3", "--window-ms", "50",
               "--out", str(out), "--allow-noisy")
    text = out.read_text()
    per_process_table, trace_table = text.split("## One session over time")
    row = next(line for line in per_process_table.splitlines() if "model.onnx" in line)
    per_process = [float(x) for x in row.split("|")[-2].split()]
    assert len(per_process) == 2 and all(m > 0 for m in per_process)
    # the trace: 0.3 s in 50 ms windows (fewer if a run stalls past a whole window); the slowest at least the fastest
    trace_row = next(line for line in trace_table.splitlines() if "model.onnx" in line)
    cells = [c.strip() for c in trace_row.split("|")[1:-1]]
    seconds, windows, fastest, _, slowest, within, switches, _ = map(float, cells[1:])
    assert seconds == 0.3 and 2 <= windows <= 6 and 0 < fastest <= slowest
    assert 1 <= within <= windows and 0 <= switches < windows
    trial = str(tmp_path / "trial")
    for bad, says in (([str(tmp_path / "none.onnx")], "no ONNX file at"),
                      ([trial, "--trace", "0.05"], "--trace must be 0 or at least two"),
                      ([trial, "--trace", "1", "--device", "rpi4-ort"],
                       "times with onnxruntime through its rpc runner")):
        proc = subprocess.run([sys.executable, str(BENCH / "process_modes.py"), *bad, "--out", str(out)], cwd=REPO,
                              capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr


def test_zoo_on_a_model_that_searches_and_one_that_fails_clearly(tmp_path):
    out = tmp_path / "zoo.md"
    run_script("zoo.py", "--only", "squeezenet1_1", "shufflenet_v2_x0_5", "--out", str(out), "--allow-noisy")
    text = out.read_text()
    assert "searched: 1" in text and "failed clearly: 1" in text
    row = next(line for line in text.splitlines() if line.startswith("| squeezenet1_1"))
    assert "ok (2 of 2 pruned trials timed)" in row
    assert re.search(r"\*\*shufflenet_v2_x0_5\*\*: FAIL cannot prepare model .*ZeroDivisionError", text)


def test_replay_waves_says_a_one_wave_study_has_no_second_wave_and_refuses_a_non_study(tmp_path):
    # the two-wave replay itself is checked in tests/test_screen.py, on a search it runs
    study = tmp_path / "one-wave-screened"
    shutil.copytree(REPO / "tests" / "fixtures" / "studies" / "one-wave-screened", study)
    out = run_script("replay_waves.py", str(study), "--clip", "3").stdout
    assert f"## {study}\n\nno second wave recorded" in out and "Command:" in out
    refused = subprocess.run([sys.executable, str(BENCH / "replay_waves.py"), str(tmp_path / "nothing")], cwd=REPO,
                             env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip() == f"replay_waves: not a study folder (no config.json): {tmp_path / 'nothing'}"
