"""Issue 15: `--task imagefolder:DIR --model torchvision:NAME --weights FILE`: an image
folder of real Fashion-MNIST PNGs searched without Python, and its clear refusals."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, run_cli

sys.path.insert(0, str(REPO / "benchmarks"))
from _pngs import write_pngs  # noqa: E402

SHORT = ("version: 1\ndefault: {methods: [none, l1], ratio: {low: 0.3, high: 0.5, step: 0.1}}\nround_to: [8]\n"
         "recovery: {finetune_steps: 4, rungs: [], eval_samples: 64, bn_batches: 2, batch_size: 16, "
         "final_steps: 4, final_members: 1, final_batch_size: 16}\nprecision: {choices: [float32]}\n")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_pngs(tmp_path_factory.mktemp("pngs") / "fashion", n_train=200, n_val=100)


def _weights(tmp_path, name: str, classes: int = 10) -> Path:
    import torch
    import torchvision

    torch.manual_seed(0)
    path = tmp_path / f"{name}-{classes}.pt"
    torch.save(torchvision.models.get_model(name, weights=None, num_classes=classes).state_dict(), path)
    return path


def _clear_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    text = " ".join(proc.stderr.split())
    assert text.count("autoprune: error:") == 1, text
    for needle in needles:
        assert needle in text, text


@pytest.mark.slow  # about 3 min: two torchvision models searched, finalized and exported from PNG files
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_an_image_folder_with_a_torchvision_model_is_searched_without_python(folder, name, tmp_path):
    space = tmp_path / "short.yaml"
    space.write_text(SHORT)
    proc = run_cli("search", "--task", f"imagefolder:{folder}", "--model", f"torchvision:{name}",
                   "--weights", str(_weights(tmp_path, name)), "--input-size", "32", "--workers", "1",
                   "--device", "x86-ort", "--latency-budget-ms", "100", "--trials", "3", "--space", str(space),
                   "--results-dir", str(tmp_path / "r"), timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = next((tmp_path / "r").iterdir())
    trials = pd.read_csv(study / "trials.csv")
    assert (trials["state"] == "COMPLETE").sum() >= 2, trials[["state", "fail_reason"]]
    assert (study / "final.csv").is_file()
    exported = run_cli("export", str(study), "--trial", "0", "--out", str(tmp_path / "pkg"))
    assert exported.returncode == 0, exported.stderr
    import json

    manifest = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    assert manifest["input"]["shape"][1:] == [3, 32, 32]


S = ["search", "--no-finalize", "--device", "x86-ort", "--latency-budget-ms", "5", "--trials", "3"]


def test_an_image_folder_without_weights_is_refused(folder, tmp_path):
    proc = run_cli(*S, "--task", f"imagefolder:{folder}", "--model", "torchvision:resnet18",
                   "--results-dir", str(tmp_path / "r"))
    _clear_error(proc, "a pruning search needs a trained model: pass --weights FILE")
    assert not (tmp_path / "r").exists()


def test_weights_that_do_not_fit_name_the_first_tensor(folder, tmp_path):
    proc = run_cli(*S, "--task", f"imagefolder:{folder}", "--model", "torchvision:resnet18",
                   "--weights", str(_weights(tmp_path, "resnet18", classes=5)), "--input-size", "32")
    _clear_error(proc, "does not fit torchvision's resnet18: tensor 'fc.weight' is (5, 512) in the file and (10, 512)")


def test_mismatched_class_folders_and_empty_folders_are_refused(folder, tmp_path):
    odd = tmp_path / "odd"
    shutil.copytree(folder, odd)
    shutil.rmtree(odd / "val" / "bag")
    (odd / "val" / "socks").mkdir()
    (odd / "val" / "socks" / "0.png").write_bytes((next((odd / "val" / "boot").iterdir())).read_bytes())
    weights = str(_weights(tmp_path, "resnet18"))
    proc = run_cli(*S, "--task", f"imagefolder:{odd}", "--model", "torchvision:resnet18", "--weights", weights)
    _clear_error(proc, "train/ and val/ have different class folders (only in train/: bag; only in val/: socks)")
    empty = tmp_path / "empty"
    (empty / "train" / "a").mkdir(parents=True)
    (empty / "val" / "a").mkdir(parents=True)
    proc = run_cli(*S, "--task", f"imagefolder:{empty}", "--model", "torchvision:resnet18", "--weights", weights)
    _clear_error(proc, f"image folder {empty / 'train'} holds no images torchvision can read")
    proc = run_cli(*S, "--task", f"imagefolder:{folder}", "--model", "torchvision:resnet81", "--weights", weights)
    _clear_error(proc, "unknown torchvision classification model 'resnet81'", "resnet18")
    proc = run_cli(*S, "--task", "digits", "--weights", weights)
    _clear_error(proc, "--model, --weights and --input-size go with --task imagefolder:DIR")
