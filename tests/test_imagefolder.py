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
    proc = run_cli(*S, "--task", f"imagefolder:{folder}", "--model", "torchvision:resnet18", "--weights", weights,
                   "--input-size", "100000")
    _clear_error(proc, "--input-size must be between 8 and 2048 pixels, got 100000")
    proc = run_cli(*S, "--task", "digits", "--weights", weights)
    _clear_error(proc, "--model, --weights and --input-size go with --task imagefolder:DIR")


class _Payload:
    """A pickle that runs code when it is loaded (issue 27.1): it touches ``marker`` and
    then returns a real tensor, so only a loader that never unpickles objects notices."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (eval, (f"(__import__('pathlib').Path({self.marker!r}).touch(), __import__('torch').zeros(1))[1]",))


@pytest.mark.parametrize("form", ["inside-a-state-dict", "a-plain-pickle", "a-whole-model"])
def test_a_weights_file_that_needs_unpickling_is_refused_not_run(folder, tmp_path, form):
    import torch
    import torchvision

    marker = tmp_path / "payload-ran"
    path = tmp_path / "weights.pt"
    model = torchvision.models.get_model("resnet18", weights=None, num_classes=10)
    if form == "inside-a-state-dict":
        state = model.state_dict()
        state["fc.bias"] = _Payload(marker)
        torch.save(state, path)
    elif form == "a-plain-pickle":
        import pickle

        path.write_bytes(pickle.dumps({"fc.bias": _Payload(marker)}))
    else:
        model.payload = _Payload(marker)  # a whole pickled model (torch.save(model)) carrying it
        torch.save(model, path)
    proc = run_cli(*S, "--task", f"imagefolder:{folder}", "--model", "torchvision:resnet18", "--weights", str(path),
                   "--input-size", "32")
    assert not marker.exists(), "the weights file's pickle ran"
    _clear_error(proc, "is not a plain state_dict", "never unpickles", ".state_dict(), 'weights.pt')")


def test_sixteen_bit_greyscale_keeps_its_grey_levels(tmp_path):
    """Issue 28: a 16-bit PNG went through PIL's RGB conversion as two grey levels."""
    import numpy as np
    from PIL import Image

    from autoprune.tasks.imagefolder import load_image

    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")  # PIL reads it as 16-bit
    got = np.asarray(load_image(str(path)))
    assert got.shape == (8, 64, 3) and len(np.unique(got)) >= 60, np.unique(got)
    assert got[0, 0, 0] == 0 and got[0, -1, 0] == 255
    palette = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8), (8, 1)), "P")
    palette.putpalette([v for i in range(256) for v in (4 * i % 256, 4 * i % 256, 4 * i % 256)])
    palette.save(tmp_path / "palette.png")
    assert len(np.unique(np.asarray(load_image(str(tmp_path / "palette.png"))))) == 64  # its palette's greys


def test_unreadable_images_are_named_at_set_up(folder, tmp_path):
    """Issue 28: a zero-byte image among the first examples was a raw traceback, and a
    truncated one further in failed candidates at recovery without naming the file."""
    odd = tmp_path / "odd"
    shutil.copytree(folder, odd)
    first = sorted((odd / "train" / sorted(p.name for p in (odd / "train").iterdir())[0]).iterdir())[0]
    first.write_bytes(b"")
    late = sorted((odd / "val" / sorted(p.name for p in (odd / "val").iterdir())[-1]).iterdir())[-1]
    late.write_bytes(late.read_bytes()[: len(late.read_bytes()) // 2])
    weights = str(_weights(tmp_path, "resnet18"))
    proc = run_cli(*S, "--task", f"imagefolder:{odd}", "--model", "torchvision:resnet18", "--weights", weights,
                   "--input-size", "32")
    _clear_error(proc, "2 of 300 images cannot be read", str(first), str(late), "Remove or replace them")


def test_an_image_that_breaks_after_set_up_is_the_datas_error_not_the_candidates(folder, tmp_path):
    """Issue 28.4: an image unreadable during training failed candidates at recovery with a
    DataLoader traceback that never named the file. Now it stops the search naming it
    (the trial runs again on resume), also through a DataLoader worker."""
    import torch

    from autoprune.errors import DataError
    from autoprune.objective import _stage
    from autoprune.tasks.imagefolder import load_image

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=f"image {broken} cannot be read"):
        load_image(str(broken))

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            load_image(str(broken))

    loader = torch.utils.data.DataLoader(Images(), num_workers=1)
    with pytest.raises(DataError) as caught, _stage("recover", {}):
        next(iter(loader))
    assert str(caught.value).startswith(f"image {broken} cannot be read") and "Traceback" not in str(caught.value)
