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


def _rewrite(pkg, name: str, data: bytes) -> None:
    """Change a package as an attacker who can also edit its manifest would."""
    from autoprune._config import sha256_file

    (pkg / name).write_bytes(data)
    manifest = json.loads((pkg / "manifest.json").read_text())
    for f in manifest["files"]:
        manifest["files"][f]["sha256"] = sha256_file(pkg / f)
    (pkg / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("where", ["/etc/passwd", "../../manifest.json"])
def test_a_package_whose_weights_point_outside_is_one_error_line(package, tmp_path, where):
    """Issue 27.7: an artifact whose initializer reads external data from elsewhere is refused
    by ONNX Runtime; `run` says so in one line, with no traceback."""
    import shutil

    import onnx
    from conftest import run_cli

    pkg = tmp_path / "pkg"
    shutil.copytree(package[0], pkg)
    artifact = json.loads((pkg / "manifest.json").read_text())["runtime"]["artifact"]
    model = onnx.load(str(pkg / artifact))
    init = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", where), ("offset", "0"), ("length", "64")):
        entry = init.external_data.add()
        entry.key, entry.value = key, value
    _rewrite(pkg, artifact, model.SerializeToString())
    proc = run_cli("run", str(pkg), "--runs", "1")
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and proc.stderr.count("autoprune: error:") == 1, proc.stderr
    assert "refused the package's artifact" in " ".join(proc.stderr.split())


def test_a_package_without_its_float_check_says_so(package, tmp_path):
    """Issue 27.7: a manifest stripped of its check no longer drops the agreement line silently."""
    import shutil

    from conftest import run_cli

    pkg = tmp_path / "pkg"
    shutil.copytree(package[0], pkg)
    (pkg / "check.npz").unlink()

    manifest = json.loads((pkg / "manifest.json").read_text())
    del manifest["check"], manifest["files"]["check.npz"]  # every other file still matches
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    proc = run_cli("run", str(pkg), "--runs", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "check against the float model" not in proc.stdout
    assert "has no float check" in " ".join(proc.stderr.split()), proc.stderr


def test_the_pt2_program_takes_any_batch_size(package, digits_task):
    """Issue 28: model.pt2 took batch 1 only; it now takes any batch where the model allows."""
    out, _ = package
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pt2"]["batch"] == "dynamic"
    program = torch.export.load(str(out / "model.pt2")).module()
    for n in (1, 3, 16):
        x = digits_task.val.first(n)[0]
        assert tuple(program(x).shape) == (n, 10)
