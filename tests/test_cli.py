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
