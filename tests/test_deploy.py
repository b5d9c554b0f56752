from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import autoprune
from autoprune.deploy import run_package, verify_package
from autoprune.errors import ExportError, PackageError


@pytest.fixture(scope="module")
def package(digits_study, tmp_path_factory):
    # a float32 member: its ONNX file must match the pruned PyTorch model to 1e-4 (an INT8 one cannot)
    done = digits_study.trials[digits_study.trials["state"] == "COMPLETE"]
    member = int(done[done["precision"].fillna("float32") == "float32"].sort_values("latency_ms").iloc[0]["trial"])
    out = tmp_path_factory.mktemp("deploy") / "pkg"
    autoprune.export_trial(digits_study, member, out)
    return out, member


def test_package_has_every_file_with_checksums(package):
    out, member = package
    manifest = verify_package(out)
    assert manifest["trial"] == member and manifest["schema"] == "autoprune.deploy/1"
    assert set(manifest["files"]) == {"model.onnx", "model.opt.onnx", "model.pt2", "check.npz"}
    for key in ("torch", "onnxruntime", "onnx", "optuna", "python"):
        assert key in manifest["versions"]
    assert manifest["device"]["name"] == "x86-ort" and len(manifest["device"]["hash"]) == 64
    assert manifest["metrics"]["latency_ms"] > 0 and "groups" in manifest["plan"]


def test_exported_onnx_matches_the_pruned_pytorch_model(package, digits_task):
    out, _ = package
    program = torch.export.load(out / "model.pt2")  # no autoprune code needed
    x = digits_task.val.x[:1]
    expected = program.module()(x).detach().numpy()
    np.save(out.parent / "x.npy", x.numpy())
    res = run_package(out, out.parent / "x.npy", runs=10)
    assert res["output_shape"] == [1, 10]
    assert np.abs(res["output"] - expected).max() < 1e-4
    assert res["latency_median_ms"] > 0


def test_tampered_package_is_refused(package, tmp_path):
    import shutil

    out, _ = package
    copy = tmp_path / "pkg"
    shutil.copytree(out, copy)
    data = bytearray((copy / "model.opt.onnx").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.opt.onnx").write_bytes(bytes(data))
    with pytest.raises(PackageError, match="does not match its sha256"):
        run_package(copy)


def test_export_refuses_missing_trial_failed_trial_and_nonempty_out(digits_study, tmp_path):
    with pytest.raises(ExportError, match=r"has no trial 999\. Complete trials: \[0, "):
        autoprune.export_trial(digits_study, 999, tmp_path / "a")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        autoprune.export_trial(digits_study, 0, full)
    assert (full / "keep.txt").read_text() == "mine"


def test_input_of_wrong_shape_is_a_clear_error(package, tmp_path):
    out, _ = package
    np.save(tmp_path / "bad.npy", np.zeros((2, 3), dtype=np.float32))
    from autoprune.errors import ConfigError

    with pytest.raises(ConfigError, match=r"has shape \[2, 3\]; the model takes \[1, 1, 8, 8\]"):
        run_package(out, tmp_path / "bad.npy")
    assert json.loads((out / "manifest.json").read_text())["input"]["shape"] == [1, 1, 8, 8]


def test_export_prints_the_digest_that_run_checks(digits_study, tmp_path):
    from conftest import run_cli

    out = tmp_path / "pkg"
    proc = run_cli("export", str(digits_study.study_dir), "--trial", "0", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    digest = next(w for w in proc.stdout.split() if w.startswith("sha256:"))
    from autoprune.deploy import package_digest

    assert digest == package_digest(out)
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), dtype=np.int64))
    ok = run_cli("run", str(out), "--expect-digest", digest, "--runs", "3", "--input", str(tmp_path / "x.npy"))
    assert ok.returncode == 0, ok.stderr
    assert "checksums ok" in ok.stdout and f"digest {digest} (as expected)" in ok.stdout
    assert "input converted from int64 to float32" in ok.stderr  # said, not silent
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["metrics"]["accuracy"] = 99.9  # every file still matches its sha256
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="not the expected"):
        run_package(out, expect_digest=digest)
