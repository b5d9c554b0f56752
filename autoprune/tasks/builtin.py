"""Built-in tasks and their base checkpoints.

A base checkpoint is looked up in order: the one shipped in ``tasks/checkpoints/``
(checked against the sha256 in its ``.json``), then the user cache
(``$AUTOPRUNE_CACHE``, default ``~/.cache/autoprune``), and is otherwise trained on
first use and cached. A damaged file is reported and rebuilt, never used.
``python -m autoprune.tasks.builtin fashion-mnist --ship`` reproduces the shipped one.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autoprune._config import atomic_write_bytes, atomic_write_text, cache_dir, sha256_file
from autoprune.errors import DataError
from autoprune.recover import TrainConfig, train
from autoprune.tasks._base import Split, Task
from autoprune.tasks.models import CifarResNet, TinyCNN, UNet

SHIPPED = Path(__file__).parent / "checkpoints"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530

# Base-model recipes. Changing one changes the checkpoint's expected recipe, so a
# stale cached checkpoint is retrained rather than silently reused.
RECIPES: dict[str, TrainConfig] = {
    "fashion-mnist": TrainConfig(steps=1500, batch_size=128, lr=0.1, hflip=True, seed=0),
    "digits": TrainConfig(steps=400, batch_size=64, lr=0.05, seed=0),
    "fashion-mnist-seg": TrainConfig(steps=1200, batch_size=64, lr=0.05, hflip=True, seed=0),
}
SEG_THRESHOLD = 64  # a pixel of at least this intensity (of 255) is the garment, else background


def seg_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Per-pixel cross-entropy; the labels are kept as uint8 (a quarter of int64's memory)."""
    x, y = batch
    return nn.functional.cross_entropy(model(x), y.long())


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_arrays(data_dir: Path | None = None) -> dict[str, np.ndarray]:
    """Read the four Fashion-MNIST idx files; a DataError says how to get them."""
    folder = Path(data_dir) if data_dir else FASHION_DIR
    names = {
        "train_x": "train-images-idx3-ubyte.gz",
        "train_y": "train-labels-idx1-ubyte.gz",
        "test_x": "t10k-images-idx3-ubyte.gz",
        "test_y": "t10k-labels-idx1-ubyte.gz",
    }
    missing = [n for n in names.values() if not (folder / n).is_file()]
    if missing:
        raise DataError(
            f"Fashion-MNIST not found in {folder} (missing {', '.join(missing)}). Install it "
            "with `sudo apt-get install dataset-fashion-mnist`, or pass --data-dir with a "
            "folder holding the four *-ubyte.gz files."
        )
    try:
        return {key: _read_idx(folder / n) for key, n in names.items()}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"Fashion-MNIST files in {folder} are unreadable: {exc}.") from None


def _fashion_splits(data_dir: Path | None, per_pixel: bool = False) -> tuple[Split, Split]:
    """Fashion-MNIST's training images, normalised, with their class labels; or with
    ``per_pixel`` each pixel labelled 0 (background) or 1 + the image's class where its
    intensity is at least SEG_THRESHOLD (11 classes per pixel, kept as uint8)."""
    arrays = load_fashion_arrays(data_dir)
    x = torch.from_numpy(arrays["train_x"].astype(np.float32) / 255.0)
    x = ((x - FASHION_MEAN) / FASHION_STD).unsqueeze(1)
    y = torch.from_numpy(arrays["train_y"].astype(np.int64))
    if per_pixel:
        raw = torch.from_numpy(arrays["train_x"].copy())
        y = torch.where(raw >= SEG_THRESHOLD, (y.to(torch.uint8) + 1)[:, None, None], torch.zeros((), dtype=torch.uint8))
    # 5,000 held-out training images are the validation split the search scores on;
    # the official test set stays untouched by the search.
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train_idx, val_idx = perm[:-5000], perm[-5000:]
    return Split(x[train_idx], y[train_idx]), Split(x[val_idx], y[val_idx])


def fashion_mnist_seg(data_dir: Path | None = None) -> Task:
    from autoprune.evaluate import MIOU

    train_split, val_split = _fashion_splits(data_dir, per_pixel=True)
    model, miou = base_checkpoint("fashion-mnist-seg", lambda: UNet(1, 11, (32, 64, 128)), train_split, val_split,
                                  metric=MIOU, loss=seg_loss)
    return Task(
        name="fashion-mnist-seg",
        model=model,
        input_shape=(1, 28, 28),
        train=train_split,
        val=val_split,
        ignored_layers=("head",),
        base_accuracy=miou,
        description="U-Net (32/64/128, concatenated skips) segmenting Fashion-MNIST garments, mIoU",
        hflip=True,
        metric=MIOU,
        loss=seg_loss,
    )


def fashion_mnist(data_dir: Path | None = None) -> Task:
    train_split, val_split = _fashion_splits(data_dir)
    model, acc = base_checkpoint(
        "fashion-mnist", lambda: CifarResNet(2, (32, 64, 128), 1, 10), train_split, val_split
    )
    return Task(
        name="fashion-mnist",
        model=model,
        input_shape=(1, 28, 28),
        train=train_split,
        val=val_split,
        ignored_layers=("fc",),
        base_accuracy=acc,
        description="ResNet-14 (32/64/128 channels) on Fashion-MNIST",
        hflip=True,
    )


def digits() -> Task:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - 0.3) / 0.4
    y = torch.tensor(data.target, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train_split = Split(x[perm[:1437]], y[perm[:1437]])
    val_split = Split(x[perm[1437:]], y[perm[1437:]])
    model, acc = base_checkpoint("digits", lambda: TinyCNN(10), train_split, val_split)
    return Task(
        name="digits",
        model=model,
        input_shape=(1, 8, 8),
        train=train_split,
        val=val_split,
        ignored_layers=("fc",),
        base_accuracy=acc,
        description="scikit-learn digits, tiny 3-layer CNN",
    )


def _recipe_id(name: str) -> dict:
    from dataclasses import asdict

    return {"task": name, **asdict(RECIPES[name])}


def _try_load(pt: Path, meta: Path, name: str, build: Callable[[], nn.Module]):
    """Load a checkpoint if it is intact and made by the current recipe, else None."""
    if not pt.is_file() or not meta.is_file():
        return None
    try:
        info = json.loads(meta.read_text())
        if info.get("recipe") != _recipe_id(name):
            return None
        if sha256_file(pt) != info["sha256"]:
            warnings.warn(f"checkpoint {pt} does not match its recorded sha256; rebuilding it.")
            return None
        model = _initial(build)
        model.load_state_dict(torch.load(pt, map_location="cpu", weights_only=True))
    except (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as exc:
        warnings.warn(f"checkpoint {pt} is unreadable ({exc}); rebuilding it.")
        return None
    model.eval()
    return model, float(info["val_accuracy"])


def base_checkpoint(
    name: str, build: Callable[[], nn.Module], train_split: Split, val_split: Split, *, metric=None, loss=None,
) -> tuple[nn.Module, float]:
    """Return the trained base model and its validation metric (top-1 accuracy unless
    ``metric``; see module docstring)."""
    for folder in (SHIPPED, cache_dir() / "checkpoints"):
        found = _try_load(folder / f"{name}.pt", folder / f"{name}.json", name, build)
        if found is not None:
            return found
    model, acc = train_base(name, build, train_split, val_split, metric=metric, loss=loss)
    save_checkpoint(model, acc, name, cache_dir() / "checkpoints")
    return model, acc


def _initial(build: Callable[[], nn.Module]) -> nn.Module:
    """The untrained model, initialised from seed 0 (a reproducible checkpoint) on a
    fork of torch's generator: loading a task leaves the caller's random stream alone."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(0)
        return build()


def train_base(name: str, build: Callable[[], nn.Module], train_split: Split, val_split: Split, *,
               metric=None, loss=None):
    from autoprune.evaluate import ACCURACY

    model = _initial(build)
    recipe = RECIPES[name]
    start = time.perf_counter()
    print(f"training the {name} base model once ({recipe.steps} steps); it is cached afterwards",
          file=sys.stderr, flush=True)

    def report(step: int, loss: float) -> None:
        if step % 100 == 0 or step == recipe.steps - 1:
            print(f"  step {step + 1}/{recipe.steps} loss {loss:.3f} "
                  f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)

    metric = metric or ACCURACY
    train(model, train_split, recipe, progress=report,
          loss_fn=None if loss is None else (lambda m, x, y: loss(m, (x, y))))
    acc = metric(model, val_split)
    print(f"  {name} base model: validation {metric.name} {metric.fmt(acc)}", file=sys.stderr, flush=True)
    return model, acc


def save_checkpoint(model: nn.Module, acc: float, name: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pt = folder / f"{name}.pt"
    data = io.BytesIO()
    torch.save(model.state_dict(), data)
    atomic_write_bytes(pt, data.getvalue())  # workers training it at once each write their own temporary file
    info = {
        "schema": "autoprune.checkpoint/1",
        "sha256": sha256_file(pt),
        "val_accuracy": acc,
        "recipe": _recipe_id(name),
        "torch": torch.__version__,
    }
    atomic_write_text(folder / f"{name}.json", json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":  # reproduce a shipped checkpoint
    import argparse

    parser = argparse.ArgumentParser(description="Train a built-in task's base model.")
    parser.add_argument("task", choices=sorted(RECIPES))
    parser.add_argument("--ship", action="store_true", help="write into tasks/checkpoints/")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    extra: dict = {}
    if args.task == "fashion-mnist":
        tr, va = _fashion_splits(None)
        builder = lambda: CifarResNet(2, (32, 64, 128), 1, 10)  # noqa: E731
    elif args.task == "fashion-mnist-seg":
        from autoprune.evaluate import MIOU

        tr, va = _fashion_splits(None, per_pixel=True)
        builder = lambda: UNet(1, 11, (32, 64, 128))  # noqa: E731
        extra = {"metric": MIOU, "loss": seg_loss}
    else:
        raise SystemExit("digits trains in seconds on first use; nothing to ship")
    m, a = train_base(args.task, builder, tr, va, **extra)
    save_checkpoint(m, a, args.task, SHIPPED if args.ship else cache_dir() / "checkpoints")
