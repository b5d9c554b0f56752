"""Numeric precision as a searched choice: real ONNX Runtime quantization of real
models, scored on real data, chosen by the search and carried into deploy packages."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import run_cli

from autoprune.evaluate import accuracy, onnx_accuracy
from autoprune.export import to_onnx
from autoprune.quantize import CALIBRATIONS, calibration_inputs, quantize


def _ops(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


@pytest.fixture(scope="module")
def float_digits(digits_task, tmp_path_factory):
    folder = tmp_path_factory.mktemp("quant")
    return to_onnx(digits_task.model, digits_task.example_input(1), folder / "model.float.onnx", 1e-3), folder


def test_float_export_scores_like_pytorch(digits_task, float_digits):
    art, _ = float_digits
    # the ONNX scorer sees the same validation examples as the PyTorch one, one batch of 1 at a time
    assert onnx_accuracy(art.path, digits_task.val, 200) == pytest.approx(accuracy(digits_task.model,
                                                                                   digits_task.val, 200))


@pytest.mark.parametrize("method", CALIBRATIONS)
def test_static_int8_is_qdq_and_keeps_accuracy(digits_task, float_digits, method):
    art, folder = float_digits
    calib = calibration_inputs(digits_task.train, 64)
    q = quantize(art, "int8", folder / f"int8-{method}.onnx", calibration=calib, method=method)
    onnx.checker.check_model(q.artifact.path)
    ops = _ops(q.artifact.path)
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert q.settings == {"precision": "int8", "format": "QDQ", "activation_type": "uint8", "weight_type": "int8",
                          "per_channel": True, "calibration": method, "calibration_samples": 64,
                          **({"percentile": 99.999} if method == "percentile" else {})}
    # its own file and hashes; the float model's counts
    assert q.artifact.path != art.path and q.artifact.sha256 != art.sha256 and q.artifact.arch_hash != art.arch_hash
    assert (q.artifact.macs, q.artifact.params) == (art.macs, art.params)
    assert q.artifact.bytes < art.bytes  # int8 weights
    float_acc = onnx_accuracy(art.path, digits_task.val)
    int8_acc = onnx_accuracy(q.artifact.path, digits_task.val)
    assert int8_acc != float_acc or not np.array_equal(*_outputs(art.path, q.artifact.path, digits_task))
    assert abs(int8_acc - float_acc) < 5.0, (method, float_acc, int8_acc)


def _outputs(a, b, task):
    import onnxruntime as ort

    x = task.val.x[:1].numpy()
    return [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
            for p in (a, b)]


def test_dynamic_int8_quantizes_only_linear_layers(digits_task, float_digits):
    art, folder = float_digits
    q = quantize(art, "int8-dynamic", folder / "dyn.onnx")
    ops = _ops(q.artifact.path)
    assert "DynamicQuantizeLinear" in ops and ("MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops)
    assert "Conv" in ops and "ConvInteger" not in ops  # convolutions stay float (ConvInteger is slow on CPUs)
    assert abs(onnx_accuracy(q.artifact.path, digits_task.val) - onnx_accuracy(art.path, digits_task.val)) < 3


def test_float16_casts_weights_and_keeps_float32_io(float_digits):
    art, folder = float_digits
    q = quantize(art, "float16", folder / "half.onnx")
    model = onnx.load(q.artifact.path)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)


def test_bad_precision_settings_are_refused(float_digits):
    art, folder = float_digits
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        quantize(art, "int4", folder / "x.onnx")
    with pytest.raises(ValueError, match="calibration inputs"):
        quantize(art, "int8", folder / "x.onnx")
    with pytest.raises(ValueError, match="unknown calibration method"):
        quantize(art, "int8", folder / "x.onnx", calibration=np.zeros((2, 1, 8, 8), np.float32), method="kl")


# -- the space and the profile --------------------------------------------------------


def test_offered_precisions_are_the_spaces_that_the_device_runs(digits_task):
    from autoprune.profiles import load_profile
    from autoprune.space import load_space, resolve

    space = load_space("default")
    assert space.precision.choices == ("float32", "int8")
    resolved = resolve(space, digits_task.model, digits_task.example_input(1))
    x86 = resolved.offer(load_profile("x86-ort"))
    assert x86.precisions == ("float32", "int8") and x86.precision_round_to["int8"] == 4
    assert resolved.offer(load_profile("x86-tvm")).precisions == ("float32",)  # TVM: no integer kernels
    assert resolved.offer(load_profile("gpu-cuda-ort"), ("float16",)).precisions == ("float32", "float16")
    with pytest.raises(ValueError, match="does not run precision int8; it supports float32"):
        resolved.offer(load_profile("x86-tvm"), ("int8",))


def test_int8_candidates_keep_channel_counts_the_int8_kernels_like(digits_task, tmp_path):
    import optuna

    from autoprune.profiles import load_profile
    from autoprune.space import load_space, resolve

    (tmp_path / "space.yaml").write_text("version: 1\nround_to: [1, 8]\nprecision: {choices: [float32, int8]}\n")
    resolved = resolve(load_space(tmp_path / "space.yaml"), digits_task.model, digits_task.example_input(1)).offer(
        load_profile("x86-ort"))
    params = resolved.uniform_params(0.3)
    params["round_to"] = 1
    for precision, expected in (("float32", 1), ("int8", 4)):
        plan = resolved.suggest(optuna.trial.FixedTrial({**params, "precision": precision}))
        assert plan.precision == precision and plan.round_to == expected
    assert resolved.baseline_params()["precision"] == "float32"  # trial 0 is the model as it is
    assert resolved.smallest_plan().precision == "int8"  # what the budget check times


def test_an_unknown_precision_in_a_space_file_names_the_key(tmp_path):
    from autoprune.errors import ConfigError
    from autoprune.space import load_space

    path = tmp_path / "s.yaml"
    path.write_text("version: 1\nprecision:\n  choices: [float32, int4]\n")
    with pytest.raises(ConfigError, match=r"precision.*int4"):
        load_space(path)


@pytest.mark.parametrize(("argv", "said"), [
    (["--device", "x86-tvm", "--precision", "int8"], "does not run precision int8; it supports float32"),
    (["--device", "x86-ort", "--precision", "int4"], "--precision takes a comma-separated list"),
])
def test_precision_flag_mistakes_are_one_line(tmp_path, argv, said):
    proc = run_cli("search", "--no-finalize", "--task", "digits", "--latency-budget-ms", "5", "--trials", "3",
                   "--results-dir", str(tmp_path / "r"), *argv)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert said in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr
    assert lines[-1].startswith("autoprune: error:")
    assert not (tmp_path / "r" / "digits-x86-ort").exists() or not any((tmp_path / "r").rglob("trials"))


def test_help_and_device_list_show_the_precision_choice():
    proc = run_cli("search", "--help")
    assert proc.returncode == 0 and "--precision" in proc.stdout and "int8" in proc.stdout
    proc = run_cli("devices")
    assert proc.returncode == 0
    row = next(line for line in proc.stdout.splitlines() if line.startswith("│ x86-ort "))
    assert "float32, int8" in row
    assert "int8" not in next(line for line in proc.stdout.splitlines() if line.startswith("│ x86-tvm "))


# -- in a search -----------------------------------------------------------------------


def test_search_chooses_int8_and_scores_the_quantized_model(digits_study):
    from autoprune.results import SearchResult
    from autoprune.trials import TrialFiles

    result = SearchResult.load(digits_study.study_dir)
    df = result.trials
    assert {"precision", "float_accuracy", "calibration"} <= set(df.columns)
    int8 = df[(df["precision"] == "int8") & (df["state"] == "COMPLETE")]
    assert len(int8) >= 2  # the unpruned model at INT8 and a uniform plan at INT8 start every search
    assert (df[df["baseline"]]["precision"] == "float32").all()
    for _, row in int8.iterrows():
        n = int(row["trial"])
        record = result.record(n)
        assert record.quantization["calibration"] == "minmax" and record.quantization["format"] == "QDQ"
        files = TrialFiles.of(result.study_dir, n)
        assert files.float_onnx.is_file() and "QuantizeLinear" in _ops(files.onnx)
        # the recorded accuracy is the quantized model's own, on the search's validation subset
        assert row["accuracy"] == pytest.approx(onnx_accuracy(files.onnx, digits_study_task().val,
                                                               int(row["eval_samples"])))
        assert row["float_accuracy"] == row["float_accuracy"]  # recorded (not NaN)
    csv = (result.study_dir / "trials.csv").read_text().splitlines()[0]
    assert "precision" in csv.split(",")
    proc = run_cli("front", str(result.study_dir))
    assert proc.returncode == 0 and "precision" in proc.stdout


def digits_study_task():
    from autoprune.tasks import load_task

    return load_task("digits")


def test_an_int8_package_checks_itself_against_the_float_model(digits_study, tmp_path):
    from autoprune.results import SearchResult

    df = SearchResult.load(digits_study.study_dir).trials
    n = int(df[(df["precision"] == "int8") & (df["state"] == "COMPLETE")]["trial"].iloc[0])
    pkg = tmp_path / "pkg"
    assert run_cli("export", str(digits_study.study_dir), "--trial", str(n), "--out", str(pkg)).returncode == 0
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["precision"]["precision"] == "int8" and manifest["precision"]["calibration"] == "minmax"
    assert manifest["precision"]["calibration_samples"] == 200
    assert manifest["check"]["file"] == "check.npz" and "check.npz" in manifest["files"]
    assert manifest["check"]["agreement_at_export"]["top1_agreement"] >= 0.75
    proc = run_cli("run", str(pkg))
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stdout.split())
    assert "check against the float model (int8 package) on 8 validation inputs: same top class on" in said
    # the float baseline's package follows its float model exactly
    base = tmp_path / "base"
    assert run_cli("export", str(digits_study.study_dir), "--trial", "0", "--out", str(base)).returncode == 0
    agreement = json.loads((base / "manifest.json").read_text())["check"]["agreement_at_export"]
    assert agreement["top1_agreement"] == 1.0 and agreement["max_abs_diff"] < 1e-3
