"""The bad-input catalogue: every user mistake gets one clear line, exit code 2, no
traceback, and nothing already in the results folder changes."""

from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np
import optuna
import pytest
from conftest import run_cli


def _snapshot(root):
    """sha256 of every file under root (what 'nothing lost or overwritten' means)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            out[path] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory, digits_study):
    """A results folder with a finished study (one failed trial), a package, odd files."""
    import autoprune

    root = tmp_path_factory.mktemp("world")
    results = root / "results"
    os.environ["AUTOPRUNE_FAULT"] = "raise@export#1"
    try:
        study = autoprune.search(finalize=False, task="digits", device="x86-ort", latency_budget_ms=5.0, n_trials=3,
                                 results_dir=results, progress=False)
    finally:
        del os.environ["AUTOPRUNE_FAULT"]
    assert study.trials.set_index("trial").loc[1, "state"] == "FAIL"
    pkg = root / "pkg"
    autoprune.export_trial(study, 0, pkg)
    tampered = root / "tampered"
    shutil.copytree(pkg, tampered)
    (tampered / "model.onnx").write_bytes((tampered / "model.onnx").read_bytes() + b"\0")
    (root / "notastudy").mkdir()
    (root / "notastudy" / "mine.txt").write_text("keep me")
    damaged = root / "damaged" / "s"
    damaged.mkdir(parents=True)
    (damaged / "config.json").write_text("{truncated")
    (root / "garbage.db").write_bytes(b"this is not a database" * 100)
    foreign = optuna.create_study(study_name="digits-x86-ort", storage=f"sqlite:///{root / 'foreign.db'}")
    foreign.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    np.save(root / "x_wrong.npy", np.zeros((3, 3), dtype=np.float32))
    (root / "space_bad_yaml.yaml").write_text("version: 1\ndefault:\n  methods: [l1, l2\n")
    (root / "space_unknown_key.yaml").write_text("version: 1\ndefault: {methods: [l1], ratios: {}}\n")
    (root / "space_ratio.yaml").write_text("version: 1\ndefault: {ratio: {low: 0.1, high: 1.5}}\n")
    (root / "space_types.yaml").write_text("version: 1\nround_to: eight\n")
    (root / "profile_type.yaml").write_text("description: d\nbackend: onnxruntime\nbatch_size: one\n")
    (root / "afile").write_text("not a folder")
    _hostile_files(root, pkg)
    return root


def _hostile_files(root, pkg):
    """What a hostile user (issue 18) tried: odd config files, tampered packages, odd inputs."""
    import json

    (root / "profile_latin1.yaml").write_bytes("description: caf\xe9\nbackend: onnxruntime\n".encode("latin-1"))
    (root / "space_latin1.yaml").write_bytes("version: 1\n# caf\xe9\n".encode("latin-1"))
    (root / "space_deep.yaml").write_text("version: 1\nx: " + "[" * 20000 + "]" * 20000 + "\n")
    bomb, prev = "description: x\nbackend: tvm\ntvm:\n  target:\n    kind: llvm\n    a0: &a0 [1,1,1,1,1,1,1,1,1,1]\n", "a0"
    for i in range(1, 9):
        bomb += f"    a{i}: &a{i} [{', '.join(['*' + prev] * 10)}]\n"
        prev = f"a{i}"
    (root / "profile_bomb.yaml").write_text(bomb)
    (root / "profile_nan.yaml").write_text("description: d\nbackend: onnxruntime\nmeasurement: {timeout_s: .nan}\n")
    damaged = root / "dbdamaged" / "s"
    damaged.mkdir(parents=True)
    shutil.copy(root / "results" / "digits-x86-ort" / "config.json", damaged)
    (damaged / "study.db").write_bytes(b"this is not a database" * 100)

    manifest = json.loads((pkg / "manifest.json").read_text())

    def package(name, edit=None, extra=None):
        folder = root / name
        shutil.copytree(pkg, folder)
        if edit is not None:
            text = edit(json.loads(json.dumps(manifest)))
            (folder / "manifest.json").write_text(text if isinstance(text, str) else json.dumps(text))
        if extra is not None:
            extra(folder)

    package("pkg_files_list", lambda m: dict(m, files=list(m["files"])))
    package("pkg_entry_string", lambda m: dict(m, files={k: "abc" for k in m["files"]}))
    package("pkg_no_runtime", lambda m: {k: v for k, v in m.items() if k != "runtime"})
    package("pkg_array", lambda m: "[1, 2, 3]")
    package("pkg_huge_input", lambda m: dict(m, input=dict(m["input"], shape=[100000, 100000, 100, 100])))
    package("pkg_artifact_outside", lambda m: dict(m, runtime=dict(m["runtime"], artifact="../pkg/model.opt.onnx")))
    package("pkg_edited_metrics", lambda m: dict(m, metrics=dict(m["metrics"], accuracy=99.9, latency_ms=0.001)))
    package("pkg_planted", extra=lambda f: (f / "libplanted.so").write_bytes(b"\x7fELF not really"))

    def symlinked(folder):
        (folder / "model.onnx").unlink()
        (folder / "model.onnx").symlink_to(pkg / "model.onnx")

    package("pkg_symlink", extra=symlinked)
    np.save(root / "x_strings.npy", np.array([["a"] * 8] * 8).reshape(1, 1, 8, 8))
    np.save(root / "x_struct.npy", np.zeros((1, 1, 8, 8), dtype=[("a", "f4"), ("b", "i4")]))
    np.save(root / "x_complex.npy", np.zeros((1, 1, 8, 8), dtype=np.complex64))
    np.save(root / "x_huge_values.npy", np.full((1, 1, 8, 8), 1e300))
    np.savez(root / "x_archive.npz", a=np.zeros((1, 1, 8, 8), dtype=np.float32))
    shutil.move(root / "x_archive.npz", root / "x_archive.npy")
    with open(root / "x_claims_tib.npy", "wb") as fh:  # a header claiming 2.8 TiB, 8 bytes of data
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (1, 1, 8, 88_000_000_000)})
        fh.write(b"\0" * 8)


S = ["search", "--no-finalize", "--task", "digits", "--device", "x86-ort", "--latency-budget-ms", "5", "--trials", "3"]


def _with(args, **changes):
    args = list(args)
    for flag, value in changes.items():
        flag = "--" + flag.replace("_", "-")
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    return args


def _without(args, flag):
    args = list(args)
    at = args.index("--" + flag.replace("_", "-"))
    return args[:at] + args[at + 2:]


CATALOGUE = [
    ("unknown task", _with(S, task="mnist-fashion"), ["unknown task 'mnist-fashion'", "Known: digits, fashion-mnist"]),
    ("task module missing", _with(S, task="nosuchpkg.mod:make"), ["cannot import 'nosuchpkg.mod'"]),
    ("task factory missing", _with(S, task="user_tasks:nothing"), ["has no callable 'nothing'"]),
    ("factory returns no Task", _with(S, task="user_tasks:not_a_task"), ["returned int"]),
    # issue 15: a task that is wrong stops before trial 0, with what and how
    ("factory raises RuntimeError", _with(S, task="user_tasks:raises_runtime_error"),
     ["task factory 'user_tasks:raises_runtime_error' raised RuntimeError: the data server is down"]),
    ("factory raises FileNotFoundError", _with(S, task="user_tasks:raises_file_not_found"),
     ["raised FileNotFoundError", "/data/train"]),
    ("task module with a syntax error", _with(S, task="syntax_error_task:make"),
     ["task module 'syntax_error_task' has a syntax error (syntax_error_task.py, line 4)"]),
    ("forward fails on the example input", _with(S, task="user_tasks:forward_fails"),
     ["the model's forward fails on an input of shape 2x1x6x6", "input_shape (1, 6, 6)"]),
    ("metric returns NaN", _with(S, task="user_tasks:metric_nan"), ["metric 'score' returned nan"]),
    ("metric returns a string", _with(S, task="user_tasks:metric_not_a_number"),
     ["metric 'score' returned str", "it must return one number"]),
    ("labels outside the classes", _with(S, task="user_tasks:labels_out_of_range"),
     ["the val split has labels from 11 to 12, but the model scores 2 classes (0..1)"]),
    ("float labels", _with(S, task="user_tasks:float_labels"), ["labels are torch.float32", "y.long()"]),
    ("validation inputs of another shape", _with(S, task="user_tasks:val_shape_differs"),
     ["the val split's inputs are (1, 8, 8) per example, but the task declares input_shape (1, 6, 6)"]),
    ("uint8 inputs", _with(S, task="user_tasks:uint8_inputs"), ["the train split's inputs are torch.uint8"]),
    ("an empty dataset", _with(S, task="user_tasks:empty_dataset"), ["the TensorDataset is empty"]),
    ("--data-dir for a task that reads none", _with(S, data_dir="{root}"),
     ["--data-dir applies to the built-in fashion-mnist and fashion-mnist-seg tasks, not to 'digits'"]),
    ("task argument the factory does not take", _with(S, task="user_tasks:sized") + ["--task-arg", "depth=3"],
     ["unexpected keyword argument 'depth'"]),
    ("task argument without a value", _with(S, task="user_tasks:sized") + ["--task-arg", "width"],
     ["--task-arg 'width' must be key=value"]),
    ("unknown device", _with(S, device="x86-tvmm"), ["unknown device profile 'x86-tvmm'", "Did you mean 'x86-tvm'", "x86-ort"]),
    ("device file missing", _with(S, device="{root}/nope.yaml"), ["nope.yaml does not exist"]),
    ("profile wrongly typed", _with(S, device="{root}/profile_type.yaml"), ["batch_size: expected a whole number"]),
    ("unknown space", _with(S, space="nope"), ["unknown search space 'nope'"]),
    ("space malformed YAML", _with(S, space="{root}/space_bad_yaml.yaml"), ["space_bad_yaml.yaml", "malformed YAML"]),
    ("space unknown key", _with(S, space="{root}/space_unknown_key.yaml"), ["default: unknown key(s) ratios"]),
    ("space ratio out of range", _with(S, space="{root}/space_ratio.yaml"), ["0 <= low <= high < 1"]),
    ("space wrongly typed", _with(S, space="{root}/space_types.yaml"), ["round_to: expected a list"]),
    ("negative budget", _with(S, latency_budget_ms="-1"), ["latency budget must be a positive number"]),
    ("zero budget", _with(S, latency_budget_ms="0"), ["latency budget must be a positive number"]),
    ("budget not a number", _with(S, latency_budget_ms="fast"), ["invalid float value: 'fast'"]),
    ("unreachable budget", _with(S, latency_budget_ms="0.000001", results_dir="{root}/fresh"),
     ["below what any candidate can reach", "unpruned model takes"]),
    ("no budget", _without(S, "latency_budget_ms"), ["give a latency budget: --latency-budget-ms MS", "--speedup X"]),
    ("a budget and a speed-up", _with(S, speedup="4"), ["--latency-budget-ms MS or --speedup X, not both"]),
    ("speed-up below 1", _with(_without(S, "latency_budget_ms"), speedup="0.5"), ["--speedup must be a number >= 1"]),
    ("unreachable speed-up", _with(_without(S, "latency_budget_ms"), speedup="100000", results_dir="{root}/fresh"),
     ["below what any candidate can reach", "Lower --speedup to at most"]),
    ("zero trials", _with(S, trials="0"), ["--trials must be at least 1"]),
    ("a percentage floor above 100", _with(S, min_metric="200", results_dir="{root}/fresh"),
     ["--min-metric 200 is outside 0-100: accuracy is a percentage"]),
    ("bad study name", _with(S, study="../escape"), ["study name '../escape' must start"]),
    ("missing dataset", ["search", "--task", "fashion-mnist", "--device", "x86-ort", "--latency-budget-ms", "1",
                         "--data-dir", "{root}/notastudy", "--results-dir", "{root}/fresh"],
     ["Fashion-MNIST not found", "apt-get install dataset-fashion-mnist"]),
    ("unwritable results dir", _with(S, results_dir="{root}/afile/results"), ["is not writable"]),
    ("results dir of another study", _with(S, latency_budget_ms="7", results_dir="{root}/results"),
     ["holds a different study", "latency_budget_ms: 5.0 there, 7.0 now"]),
    ("results dir not a study", _with(S, study="notastudy", results_dir="{root}"), ["is not an autoprune study"]),
    ("damaged storage file", _with(S, storage="sqlite:///{root}/garbage.db", results_dir="{root}/fresh"),
     ["cannot open storage"]),
    ("malformed storage URL", _with(S, storage="nonsense://x", results_dir="{root}/fresh"), ["cannot open storage 'nonsense://x'"]),
    ("storage holds someone else's study", _with(S, storage="sqlite:///{root}/foreign.db", results_dir="{root}/fresh"),
     ["already has trials that autoprune did not create"]),
    ("front of a non-study", ["front", "{root}/notastudy"], ["not an autoprune results directory"]),
    ("front of a damaged study", ["front", "{root}/damaged/s"], ["config.json is damaged"]),
    ("front format unknown", ["front", "{root}/results/digits-x86-ort", "--format", "xml"], ["invalid choice: 'xml'"]),
    ("export missing trial", ["export", "{root}/results/digits-x86-ort", "--trial", "42", "--out", "{root}/o1"],
     ["has no trial 42", "Complete trials: [0, 2]"]),
    ("export failed trial", ["export", "{root}/results/digits-x86-ort", "--trial", "1", "--out", "{root}/o2"],
     ["trial 1 did not complete", "failed at export", "injected fault"]),
    ("export into non-empty folder", ["export", "{root}/results/digits-x86-ort", "--trial", "0", "--out",
                                      "{root}/notastudy"], ["exists and is not empty"]),
    ("run a non-package", ["run", "{root}/notastudy"], ["not a deploy package"]),
    ("run a tampered package", ["run", "{root}/tampered"], ["model.onnx does not match its sha256", "Refusing"]),
    ("run with a missing input", ["run", "{root}/pkg", "--input", "{root}/none.npy"], ["cannot read input"]),
    # issue 28: rich turned ":abc:" into an emoji; user text is printed as it is
    ("a digest that reads as an emoji code", ["run", "{root}/pkg", "--expect-digest", "abc"],
     ["not the expected sha256:abc: its manifest"]),
    ("run with a wrong-shape input", ["run", "{root}/pkg", "--input", "{root}/x_wrong.npy"],
     ["has shape [3, 3]; the model takes [1, 1, 8, 8]"]),
    ("groups of an unknown task", ["groups", "--task", "nope"], ["unknown task 'nope'"]),
    # issue 18: what a hostile probe found
    ("profile not UTF-8", _with(S, device="{root}/profile_latin1.yaml"), ["is not UTF-8 text", "save it as UTF-8"]),
    ("space not UTF-8", _with(S, space="{root}/space_latin1.yaml"), ["is not UTF-8 text"]),
    ("space nested 20,000 deep", _with(S, space="{root}/space_deep.yaml"), ["nested too deeply"]),
    ("profile YAML alias bomb", _with(S, device="{root}/profile_bomb.yaml"), ["expands to more than 100,000 values"]),
    ("profile NaN timeout", _with(S, device="{root}/profile_nan.yaml"), ["timeout_s: expected a finite number"]),
    ("infinite budget", _with(S, latency_budget_ms="inf"), ["latency budget must be a positive number"]),
    ("study folder is a file", _with(S, study="afile", results_dir="{root}"), ["afile exists and is a file"]),
    ("front of a damaged study.db", ["front", "{root}/dbdamaged/s"], ["cannot open storage"]),
    ("manifest files is a list", ["run", "{root}/pkg_files_list"], ["`files` must map each file name"]),
    ("manifest file entry is text", ["run", "{root}/pkg_entry_string"], ["has no sha256"]),
    ("manifest without runtime", ["run", "{root}/pkg_no_runtime"], ["`runtime` must name the backend"]),
    ("manifest is a JSON array", ["run", "{root}/pkg_array"], ["is not a JSON object"]),
    ("manifest input of 1e14 values", ["run", "{root}/pkg_huge_input"], ["`input.shape` must be a list"]),
    ("artifact outside the package", ["run", "{root}/pkg_artifact_outside"], ["`runtime` must name the backend"]),
    ("a file planted in a package", ["run", "{root}/pkg_planted"], ["does not list (libplanted.so)"]),
    ("a symlink in a package", ["run", "{root}/pkg_symlink"], ["model.onnx is a symbolic link"]),
    ("an edited manifest, digest expected", ["run", "{root}/pkg_edited_metrics", "--expect-digest", "{digest}"],
     ["not the expected sha256:", "Refusing"]),
    ("input of strings", ["run", "{root}/pkg", "--input", "{root}/x_strings.npy"], ["holds <U1 data"]),
    ("input of records", ["run", "{root}/pkg", "--input", "{root}/x_struct.npy"], ["the model takes real numbers"]),
    ("complex input", ["run", "{root}/pkg", "--input", "{root}/x_complex.npy"], ["holds complex64 data"]),
    ("input beyond float32", ["run", "{root}/pkg", "--input", "{root}/x_huge_values.npy"],
     ["values that float32 cannot hold"]),
    ("an .npz named .npy", ["run", "{root}/pkg", "--input", "{root}/x_archive.npy"], ["is an .npz archive"]),
    ("input header claims 2.8 TiB", ["run", "{root}/pkg", "--input", "{root}/x_claims_tib.npy"], ["cannot read input"]),
    ("run zero times", ["run", "{root}/pkg", "--runs", "0"], ["--runs: must be at least 1, got 0"]),
    ("run -5 times", ["run", "{root}/pkg", "--runs", "-5"], ["--runs: must be at least 1, got -5"]),
    ("save output into a missing folder", ["run", "{root}/pkg", "--save-output", "{root}/nowhere/out.npy"],
     ["the folder", "nowhere does not exist"]),
    ("finalize -1 steps", ["finalize", "{root}/results/digits-x86-ort", "--steps", "-1"],
     ["--steps: must be at least 0, got -1"]),
    ("report into a missing folder", ["report", "{root}/results/digits-x86-ort", "-o", "{root}/made/up/r.html"],
     ["made/up does not exist"]),
]


@pytest.mark.parametrize("label, argv, needles", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_bad_input(world, label, argv, needles):
    before = _snapshot(world)
    from autoprune.deploy import package_digest

    digest = package_digest(world / "pkg")  # the original's: the edited copy must not pass it
    proc = run_cli(*[a.format(root=world, digest=digest) for a in argv])
    assert proc.returncode == 2, (label, proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    text = " ".join(proc.stderr.split())
    # one message, last; progress lines may precede an error found only by measuring
    last = proc.stderr.strip().split("autoprune: error:")[-1]
    assert text.count("autoprune: error:") == 1 or ("usage:" in text and "error:" in text), text
    assert "\nautoprune:" not in last, text
    for needle in needles:
        assert needle in text, (label, text)
    assert _snapshot(world) == before, f"{label}: files in the results folder changed"
    assert not (world / "fresh").exists() or not any((world / "fresh").iterdir())
    assert not (world / "made").exists() and not (world / "nowhere").exists()  # no folder made either


def test_catalogue_is_long_enough():
    assert len(CATALOGUE) >= 20


def test_malicious_weights_file_is_refused_not_run(world, tmp_path):
    """A trial's state.pt replaced by a pickle that runs code: weights_only refuses it."""
    import pickle

    study = world / "results" / "digits-x86-ort"
    copy = tmp_path / "results" / "digits-x86-ort"
    shutil.copytree(study, copy)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (copy / "trials" / "0" / "state.pt").write_bytes(pickle.dumps(Evil()))
    proc = run_cli("export", str(copy), "--trial", "0", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "cannot be loaded" in proc.stderr, proc.stderr
    assert not marker.exists()
