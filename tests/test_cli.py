"""The command line as a user meets it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli


def _assert_user_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("autoprune: error:") or "usage:" in proc.stderr
    text = " ".join(proc.stderr.split())
    for needle in needles:
        assert needle in text, text


def test_devices_and_methods_list_what_exists():
    proc = run_cli("devices")
    assert proc.returncode == 0 and "x86-ort" in proc.stdout and "onnxruntime" in proc.stdout
    proc = run_cli("methods")
    assert proc.returncode == 0
    for name in ("none", "l1", "l2", "taylor", "random"):
        assert name in proc.stdout


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--task", "mnist-fashion"], ["unknown task 'mnist-fashion'", "Known: digits, fashion-mnist"]),
        (["--task", "nosuchpkg.mod:make"], ["cannot import 'nosuchpkg.mod'"]),
        (["--task", "user_tasks:not_a_task"], ["returned int", "autoprune.tasks.Task"]),
        (["--device", "x86-tvmm"], ["unknown device profile 'x86-tvmm'", "Known: x86-ort"]),
        (["--space", "nope"], ["unknown search space 'nope'", "Known: default"]),
        (["--latency-budget-ms", "-1"], ["latency budget must be a positive number"]),
        (["--latency-budget-ms", "0"], ["latency budget must be a positive number"]),
        (["--trials", "0"], ["--trials must be at least 1"]),
        (["--study", "../escape"], ["study name '../escape' must start with a letter"]),
        (["--latency-budget-ms", "fast"], ["argument --latency-budget-ms: invalid float value: 'fast'"]),
        (["--device", "/nonexistent/profile.yaml"], ["device profile file /nonexistent/profile.yaml does not exist"]),
    ],
)
def test_bad_search_input_gets_one_clear_message(tmp_path, args, needles):
    base = {"--task": "digits", "--device": "x86-ort", "--latency-budget-ms": "1", "--trials": "3"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    argv = ["search", "--results-dir", str(tmp_path / "results")]
    for flag, value in base.items():
        argv += [flag, value]
    proc = run_cli(*argv)
    _assert_user_error(proc, *needles)
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_malformed_space_file_names_file_and_line(tmp_path):
    bad = tmp_path / "space.yaml"
    bad.write_text("version: 1\ndefault:\n  methods: [l1, l2\n")
    proc = run_cli("search", "--task", "digits", "--device", "x86-ort", "--latency-budget-ms", "1",
                   "--space", str(bad), "--results-dir", str(tmp_path / "r"))
    _assert_user_error(proc, str(bad), "malformed YAML")


def test_missing_dataset_says_how_to_install(tmp_path):
    proc = run_cli("search", "--task", "fashion-mnist", "--device", "x86-ort", "--latency-budget-ms", "1",
                   "--data-dir", str(tmp_path), "--results-dir", str(tmp_path / "r"))
    _assert_user_error(proc, "Fashion-MNIST not found", "apt-get install dataset-fashion-mnist", "--data-dir")


def test_unwritable_results_dir(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    proc = run_cli("search", "--task", "digits", "--device", "x86-ort", "--latency-budget-ms", "1",
                   "--results-dir", str(blocker / "results"))
    _assert_user_error(proc, "is not writable", "a-file")
    assert blocker.read_text() == "mine"


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


def test_bad_follow_up_commands(digits_study, tmp_path):
    d = str(digits_study.study_dir)
    _assert_user_error(run_cli("export", d, "--trial", "99", "--out", str(tmp_path / "x")), "has no trial 99")
    _assert_user_error(run_cli("front", str(tmp_path)), "not an autoprune results directory")
    _assert_user_error(run_cli("run", str(tmp_path)), "not a deploy package")
    _assert_user_error(run_cli("search", "--task", "digits", "--device", "x86-ort", "--latency-budget-ms", "5",
                               "--results-dir", str(digits_study.study_dir.parent)),
                       "holds a different study")
