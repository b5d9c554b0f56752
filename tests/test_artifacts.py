"""Files through an artifact store (issue 26.3): a study's trials and finalized members
uploaded through Optuna's artifact API, so finalize and export work from a folder that
holds none of them."""

from __future__ import annotations

import json
import shutil

import optuna
import pandas as pd
import pytest
from conftest import run_cli

pytestmark = pytest.mark.slow


def test_export_from_an_empty_folder_through_the_artifact_store(tmp_path):
    made, store = tmp_path / "made", tmp_path / "store"
    proc = run_cli("search", "--task", "digits", "--device", "x86-ort", "--latency-budget-ms", "1.0", "--trials", "4",
                   "--no-finalize", "--quiet", "--study", "art", "--results-dir", str(made), "--artifacts", str(store))
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = made / "art"
    url = f"sqlite:///{folder / 'study.db'}"
    study = optuna.load_study(study_name="art", storage=url)
    complete = [t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    indexed = {k: v for k, v in study.user_attrs.items() if k.startswith("autoprune_files:")}
    assert sorted(int(k.split(":")[1]) for k in indexed) == complete  # every trial's files, once each
    assert all({"plan.json", "state.pt", "model.onnx"} <= set(v) for v in indexed.values())
    assert study.user_attrs["autoprune_run"]["artifacts"] == str(store.resolve())

    member = max(complete)  # a pruned trial (the baseline and the warm starts come first)
    proc = run_cli("finalize", str(folder), "--steps", "10", "--trials", str(member))
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = pd.read_csv(folder / "final.csv").set_index("trial")
    study = optuna.load_study(study_name="art", storage=url)
    assert {"state.pt", "model.onnx", "result.json"} <= set(study.user_attrs[f"autoprune_files:{member}/final"])

    # another machine: no results folder, only the storage and the artifact store
    shutil.rmtree(folder / "trials")  # nothing of the trials is left anywhere but in the store
    empty = tmp_path / "elsewhere" / "art"
    proc = run_cli("export", str(empty), "--storage", url, "--study", "art", "--trial", str(member),
                   "--out", str(tmp_path / "pkg"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    assert manifest["files_from"] == "final"
    assert manifest["metrics"]["accuracy"] == pytest.approx(final.loc[member, "final_accuracy"])
    proc = run_cli("run", str(tmp_path / "pkg"), "--runs", "5")
    assert proc.returncode == 0, proc.stderr[-3000:]

    # a folder of another study is not overwritten; a bad store is one line, before anything is written
    proc = run_cli("export", str(folder), "--storage", url, "--study", "other", "--trial", str(member),
                   "--out", str(tmp_path / "pkg2"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "has no autoprune study 'other'" in proc.stderr
    proc = run_cli("search", "--task", "digits", "--device", "x86-ort", "--latency-budget-ms", "1.0", "--trials", "2",
                   "--results-dir", str(tmp_path / "bad"), "--artifacts", "ftp://example/x")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "unknown kind of store" in proc.stderr
    assert not (tmp_path / "bad").exists()
