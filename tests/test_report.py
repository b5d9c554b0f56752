"""``autoprune report``: a self-contained HTML page for any results folder, and one
readable line (exit 2, no traceback) for anything that is not one."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli

from autoprune.pareto import hypervolume_2d

SECTIONS = ("Summary", "Accuracy against measured latency", "Pruning ratios of the front",
            "Hypervolume history", "Measured latency", "Methods chosen")
PLOTLY_BUNDLE = "* plotly.js v"  # the banner at the top of plotly.min.js


def _external_references(html: str) -> list[str]:
    """script/link/img/iframe tags that would fetch something over the network."""
    return re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//[^\"' >]*",
                      html, flags=re.IGNORECASE)


def _snapshot(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def failed_study(tmp_path_factory):
    """A real search in which every trial fails (the baseline too): no completed trial at all."""
    import autoprune

    os.environ["AUTOPRUNE_FAULT"] = "raise@prune"
    try:
        result = autoprune.search(finalize=False, task="digits", device="x86-ort", latency_budget_ms=1.0, n_trials=3,
                                  results_dir=tmp_path_factory.mktemp("failed"), progress=False)
    finally:
        del os.environ["AUTOPRUNE_FAULT"]
    assert set(result.trials["state"]) == {"FAIL"}
    return result


def test_report_of_a_real_study_is_self_contained(digits_study, tmp_path):
    out = tmp_path / "sub" / "digits.html"
    out.parent.mkdir()  # a report is one file: it does not make folders (see test_bad_input)
    proc = run_cli("report", str(digits_study.study_dir), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert str(out) in " ".join(proc.stdout.split())
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert html.count(PLOTLY_BUNDLE) == 1  # embedded inline, once, for all figures
    assert _external_references(html) == []
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in html
    base = digits_study.baseline
    assert f"trial {int(base['trial'])}: accuracy {base['accuracy']:.2f}% at {base['latency_ms']:.3f} ms" in html
    # The heat map has a column per prunable group of the digits CNN, a row per front member.
    plan = digits_study.record(int(digits_study.front.iloc[0]["trial"])).plan
    for group in plan["groups"]:
        assert f'"{group}"' in html
    assert "reference point: 0% accuracy" in html.lower()
    assert not (digits_study.study_dir / "report.html").exists()  # -o was honoured


def test_report_of_a_study_whose_trials_all_failed(failed_study):
    folder = failed_study.study_dir
    before = _snapshot(folder)
    proc = run_cli("report", str(folder))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    after = _snapshot(folder)
    assert set(after) - set(before) == {"report.html"}  # the only new file ...
    assert all(after[name] == digest for name, digest in before.items())  # ... and nothing else changed
    html = (folder / "report.html").read_text()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in html
    assert "none completed: speed-ups and accuracy drops cannot be computed" in html
    assert "3 FAIL" in html
    # The three failures are one row: same stage, same reason.
    row = r"<td>prune</td>\s*<td>RuntimeError: injected fault</td>\s*<td>3</td>\s*<td>0, 1, 2</td>"
    assert re.search(row, html), html.split("Failures")[1][:2000]
    assert "No completed trial has a measured accuracy and latency" in html
    assert _external_references(html) == []
    assert html.count(PLOTLY_BUNDLE) <= 1


def _case_missing(root, study):
    return root / "no-such-folder", "does not exist"


def _case_file(root, study):
    (root / "a.txt").write_text("x")
    return root / "a.txt", "is not a directory"


def _case_no_config(root, study):
    (root / "empty").mkdir()
    return root / "empty", "not an autoprune results directory"


def _case_no_database(root, study):
    folder = root / "nodb"
    folder.mkdir()
    shutil.copy(study.study_dir / "config.json", folder)
    return folder, "has no study.db"


def _case_damaged_database(root, study):
    folder = root / "garbage"
    folder.mkdir()
    shutil.copy(study.study_dir / "config.json", folder)
    (folder / "study.db").write_bytes(b"this is not a database" * 100)
    return folder, "file is not a database"


@pytest.mark.parametrize("case", [_case_missing, _case_file, _case_no_config, _case_no_database,
                                  _case_damaged_database])
def test_bad_input_is_one_line_and_exit_2(case, failed_study, tmp_path):
    folder, message = case(tmp_path, failed_study)
    before = _snapshot(tmp_path)
    proc = run_cli("report", str(folder))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("autoprune: error:") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert _snapshot(tmp_path) == before  # no report, and no empty study.db left behind


def test_report_never_overwrites_a_results_file(failed_study):
    trials_csv = failed_study.study_dir / "trials.csv"
    before = trials_csv.read_bytes()
    proc = run_cli("report", str(failed_study.study_dir), "-o", str(trials_csv))
    assert proc.returncode == 2 and "already exists in the results folder" in proc.stderr
    assert trials_csv.read_bytes() == before


def test_hypervolume_2d_is_the_dominated_area():
    points = pd.DataFrame({
        "latency_ms": [1.0, 2.0, 3.0, 5.0],
        "accuracy": [50.0, 80.0, 60.0, 99.0],  # (3, 60) is dominated; (5, 99) is past the reference
    })
    # [1, 2) at 50% plus [2, 4) at 80%
    assert hypervolume_2d(points, ref_latency_ms=4.0) == pytest.approx(1 * 50 + 2 * 80)
    assert hypervolume_2d(points.iloc[0:0], ref_latency_ms=4.0) == 0.0


def test_a_noisy_latency_is_marked_where_it_is_printed():
    """Issue 28: a final latency flagged noisy (CV 7.8) was printed and recommended bare."""
    import numpy as np
    import pandas as pd

    from autoprune.results import Recommendation, noisy_mark

    row = pd.Series({"trial": 3, "accuracy": 91.0, "accuracy_drop": 0.4, "latency_ms": 0.5, "speedup": 1.46,
                     "fidelity": "final: 640+800 steps, 10000 images", "latency_noisy": np.True_})
    quiet = row.copy()
    quiet["latency_noisy"] = None  # not recorded: not noisy
    assert noisy_mark(row) == " (noisy)" and noisy_mark(quiet) == ""
    lines = Recommendation(1.0, 1.0, row, quiet, True).lines(Path("results/x"))
    assert "0.500 ms (noisy), 1.46x" in lines[0] and "(noisy)" not in lines[2]


def test_a_pick_the_unpruned_model_beats_is_never_recommended(digits_study):
    """Issue 28: "fastest within 1 pt" named a 0.91x model and "most accurate within the
    budget" a model less accurate than the unpruned one, which fit the budget too. The
    unpruned model is a candidate: it is the pick then, said so, with its export command."""
    import copy

    result = copy.copy(digits_study)
    front = result.front.copy()
    base = result.baseline
    pruned = ~front["baseline"].astype(bool)
    # every pruned member slower than the unpruned model, and less accurate
    front.loc[pruned, "speedup"] = 0.91
    front.loc[pruned, "latency_ms"] = float(base["latency_ms"]) * 1.1
    front.loc[pruned, "accuracy"] = float(base["accuracy"]) - 0.4
    front.loc[pruned, "accuracy_drop"] = 0.4
    result.front = front
    result.identity = dict(result.identity, latency_budget_ms=float(base["latency_ms"]) * 2)
    pick = result.recommend(max_drop=1.0)
    assert bool(pick.fastest["baseline"]) and bool(pick.most_accurate["baseline"])
    text = "\n".join(pick.lines(result.study_dir))
    assert f"the unpruned model (trial {int(base['trial'])}): no pruned candidate is faster within the drop" in text
    assert "no pruned candidate scores as well within the budget" in text
    assert f"--trial {int(base['trial'])}" in text
    # a pruned model that is faster within the drop is still the pick
    front.loc[pruned, "speedup"] = 2.0
    front.loc[pruned, "latency_ms"] = float(base["latency_ms"]) / 2
    assert not bool(result.recommend(max_drop=1.0).fastest["baseline"])
