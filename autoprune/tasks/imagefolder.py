"""An image folder and a torchvision classifier as a task, without Python:
``--task imagefolder:DIR --model torchvision:NAME --weights FILE [--input-size 224]``.

DIR holds ``train/`` and ``val/`` in torchvision's ``ImageFolder`` layout (one folder
per class, the same class folders in both). Both splits are read batch by batch from
disk (``--workers`` processes), so memory does not grow with the folder. Every image
is resized to ``round(size * 256 / 224)`` on its short side, centre-cropped to
``size``, turned into a tensor and normalised with ImageNet's mean and standard
deviation (torchvision's evaluation transform); greyscale images are read as RGB
(16-bit ones scaled to 8 bits, not clipped).
Every image is decoded once at set-up: a file that cannot be (empty, truncated, not an
image) is refused by name before trial 0. Recovery adds horizontal flips. Training images get no random crop: the distillation
teacher's outputs are kept per image, which a random crop would make wrong. The
validation images are shuffled once (seed 0), so the search's validation subset holds
every class.
"""

from __future__ import annotations

from pathlib import Path

from autoprune.errors import DataError, TaskError, did_you_mean, first_line

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def transform(size: int):
    """torchvision's evaluation transform at ``size`` (see the module docstring)."""
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize(round(size * 256 / 224)),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def load_image(path: str):
    """An image file as an RGB PIL image (:func:`decode`). A file that cannot be read is
    the data's fault, whenever it is found: DataError naming it, which stops the search
    (the trial runs again on resume) instead of failing the candidate being trained."""
    try:
        return decode(path)
    except Exception as exc:  # noqa: BLE001 - any reason a file is not an image
        raise DataError(f"image {path} cannot be read ({type(exc).__name__}: {first_line(exc)}); it was "
                        "readable at set-up, so it changed since. Replace or remove it, then run the same "
                        "command again: the search resumes") from None


def decode(path: str):
    """An image file as an RGB PIL image, keeping what 16-bit greyscale holds (PIL's
    ``convert("RGB")``, torchvision's default loader, clips it to black and white:
    two grey levels); palette and other modes convert as PIL does."""
    import numpy as np
    from PIL import Image

    with open(path, "rb") as f:
        img = Image.open(f)
        img.load()
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):  # 16-bit (or wider) greyscale
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode != "F" else max(float(a.max()), 1e-12)
        img = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


def unreadable(paths: list[str]) -> list[tuple[str, str]]:
    """The images that cannot be decoded whole (zero bytes, truncated, not an image), with
    why: each is read once before trial 0, so a bad file is the data's fault, said at
    set-up, not a candidate's failure at recovery (issue 28)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    def check(path: str) -> tuple[str, str] | None:
        try:
            decode(path)  # a full decode: PIL raises on a truncated file
        except Exception as exc:  # noqa: BLE001 - any reason a file is not an image
            return path, f"{type(exc).__name__}: {first_line(exc)}"
        return None

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes outside the GIL
        return [bad for bad in pool.map(check, paths, chunksize=64) if bad is not None]


def _folder(root: Path, part: str, size: int):
    from torchvision.datasets import ImageFolder

    where = root / part
    if not where.is_dir():
        raise TaskError(f"image folder {root} has no {part}/ folder; it needs train/ and val/, each with one "
                        "folder of images per class (torchvision's ImageFolder layout).")
    try:
        return ImageFolder(str(where), transform=transform(size), loader=load_image)
    except (FileNotFoundError, RuntimeError) as exc:  # no class folders, or no images in them
        raise TaskError(f"image folder {where} holds no images torchvision can read ({first_line(exc)}); "
                        "put each class's .png/.jpg files in a folder named after the class.") from None


MAX_INPUT_SIZE = 2048  # a float batch of 32 at 2048 px is 1.6 GB; beyond, set-up fails with a MemoryError


def _model(name: str, classes: int):
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise TaskError(f"unknown torchvision classification model {name!r}." + did_you_mean(name, known)
                        + " `python -c \"import torchvision; print(torchvision.models.list_models("
                          "module=torchvision.models))\"` lists them.")
    return torchvision.models.get_model(name, weights=None, num_classes=classes)


def _unpickler_reason(exc: BaseException) -> str:
    """The line of torch's long refusal that names what the file needed (its first line
    advises ``weights_only=False``, which is the advice autoprune must not pass on)."""
    for line in str(exc).splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip()
    return first_line(exc)


def _load_weights(model, path: Path, name: str) -> None:
    """Load a state_dict (or a training checkpoint holding one) into ``model``, naming the
    first tensor that does not fit.

    Only ``torch.load(weights_only=True)``: a file that needs more (a whole pickled model,
    or anything with objects of its own) could run code when it is unpickled, so it is
    refused with the way to convert it, never loaded another way.
    """
    import pickle

    import torch

    if not path.is_file():
        raise TaskError(f"weights file {path} does not exist.")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise TaskError(
            f"weights file {path} is not a plain state_dict (torch.load(weights_only=True) refused it: "
            f"{_unpickler_reason(exc)}). autoprune never unpickles objects, which could run code. In an environment "
            "you trust, load it and save its state_dict: `torch.save(torch.load(FILE, weights_only=False)"
            ".state_dict(), 'weights.pt')` (a whole model) and pass that file.") from None
    except Exception as exc:  # noqa: BLE001 - whatever the file is, it is not weights
        raise TaskError(f"weights file {path} cannot be read by torch.load ({type(exc).__name__}: "
                        f"{first_line(exc)}); save it with torch.save(model.state_dict(), FILE).") from None
    if isinstance(saved, dict) and "state_dict" in saved and isinstance(saved["state_dict"], dict):
        saved = saved["state_dict"]  # a training checkpoint
    if not isinstance(saved, dict):
        raise TaskError(f"weights file {path} holds a {type(saved).__name__}, not a state_dict.")
    saved = {k.removeprefix("module."): v for k, v in saved.items()}  # saved from DataParallel
    own = model.state_dict()
    for key, value in own.items():
        if key not in saved:
            raise TaskError(f"weights file {path} does not fit torchvision's {name}: it has no tensor {key!r} "
                            f"(shape {tuple(value.shape)}).")
        got = saved[key]
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(value.shape):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise TaskError(f"weights file {path} does not fit torchvision's {name}: tensor {key!r} is {shape} "
                            f"in the file and {tuple(value.shape)} in the model (trained for another number of "
                            "classes than the folder has, or another model?).")
    extra = sorted(set(saved) - set(own))
    if extra:
        raise TaskError(f"weights file {path} does not fit torchvision's {name}: it has tensors the model "
                        f"lacks, first {extra[0]!r}. Is it another model's?")
    model.load_state_dict(saved)


def imagefolder_task(folder: str, model: str | None = None, weights: str | None = None, input_size: int = 224):
    """The task of ``folder`` (``train/`` and ``val/``) with torchvision's ``model``
    (``torchvision:NAME``) loaded from ``weights``."""
    import torch
    from torch.utils.data import Subset

    from autoprune.tasks._base import Task

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise TaskError(f"image folder {root} does not exist (from --task imagefolder:{folder}).")
    if not model:
        raise TaskError("--task imagefolder:DIR needs --model torchvision:NAME (e.g. torchvision:resnet18).")
    source, _, name = str(model).partition(":")
    if source != "torchvision" or not name:
        raise TaskError(f"--model {model!r}: give torchvision:NAME, e.g. torchvision:resnet18 (for another model, "
                        "write a task factory: see the README's 'Your own model and data').")
    if not weights:
        raise TaskError("a pruning search needs a trained model: pass --weights FILE (a state_dict saved with "
                        f"torch.save(model.state_dict(), FILE) of torchvision's {name} with this folder's classes).")
    size = int(input_size)
    if not 8 <= size <= MAX_INPUT_SIZE:
        raise TaskError(f"--input-size must be between 8 and {MAX_INPUT_SIZE} pixels, got {size} (a batch of "
                        f"{size}x{size} images must fit in memory; classifiers take 224-512).")
    train, val = _folder(root, "train", size), _folder(root, "val", size)
    if train.classes != val.classes:
        only_train = sorted(set(train.classes) - set(val.classes))
        only_val = sorted(set(val.classes) - set(train.classes))
        raise TaskError(f"image folder {root}: train/ and val/ have different class folders (only in train/: "
                        f"{', '.join(only_train) or 'none'}; only in val/: {', '.join(only_val) or 'none'}). "
                        "Both need the same classes.")
    bad = unreadable([path for path, _ in train.samples + val.samples])
    if bad:
        named = "; ".join(f"{path} ({why})" for path, why in bad[:5]) + ("; ..." if len(bad) > 5 else "")
        raise TaskError(f"image folder {root}: {len(bad)} of {len(train.samples) + len(val.samples)} images cannot "
                        f"be read: {named}. Remove or replace them, then run the command again.")
    net = _model(name, len(train.classes))
    _load_weights(net, Path(weights).expanduser(), name)
    order = torch.randperm(len(val), generator=torch.Generator().manual_seed(0)).tolist()
    return Task(
        name=f"imagefolder-{root.name}-{name}",
        model=net.eval(),
        input_shape=(3, size, size),
        train=train,
        val=Subset(val, order),
        description=f"torchvision {name} on {root} ({len(train.classes)} classes, {size}x{size})",
        hflip=True,
    )
