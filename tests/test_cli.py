"""The command line as a user meets it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json

import numpy as np
from conftest import run_cli


def test_devices_and_methods_list_what_exists():
    proc = run_cli("devices")
    assert proc.returncode == 0 and "x86-ort" in proc.stdout and "onnxruntime" in proc.stdout
    proc = run_cli("methods")
    assert proc.returncode == 0
    for name in ("none", "l1", "l2", "taylor", "random"):
        assert name in proc.stdout


def test_front_export_run_through_the_cli(digits_study, tmp_path):
    d = str(digits_study.study_dir)
    proc = run_cli("front", d)
    assert proc.returncode == 0 and "Pareto front" in proc.stdout
    proc = run_cli("front", d, "--format", "json")
    rows = json.loads(proc.stdout)
    assert rows and {"trial", "accuracy", "latency_ms", "size_mb"} <= set(rows[0])
    proc = run_cli("front", d, "--format", "csv")
    assert proc.stdout.splitlines()[0].startswith("trial,")
    member = str(rows[0]["trial"])
    out = tmp_path / "pkg"
    proc = run_cli("export", d, "--trial", member, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), dtype=np.float32))
    proc = run_cli("run", str(out), "--input", str(tmp_path / "x.npy"), "--save-output", str(tmp_path / "y.npy"))
    assert proc.returncode == 0, proc.stderr
    assert "checksums ok; output shape (1, 10)" in " ".join(proc.stdout.split())
    assert np.load(tmp_path / "y.npy").shape == (1, 10)


def test_trial_lines_stay_whole_in_a_log_file(tmp_path):
    """Issue 28: written to a file (rich's console is 80 columns wide there), a trial's line
    broke ("int8  640 steps" alone on the next line). Each is one line now."""
    proc = run_cli("search", "--no-finalize", "--task", "digits", "--device", "x86-ort", "--latency-budget-ms", "5",
                   "--trials", "3", "--precision", "float32,int8", "--results-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    trial_lines = [ln for ln in lines if ln.lstrip().startswith("trial ") and "latency" in ln]
    assert len(trial_lines) >= 3, proc.stderr
    for ln in trial_lines:
        assert "size" in ln and "budget" in ln, ln  # the line's end is on the line
    wrapped = [ln for ln in lines if ln.strip() and ln.strip().split()[0] in ("int8", "float32", "MB", "budget")]
    assert not wrapped, wrapped
