"""An image folder and a torchvision classifier as a task, without Python:
``--task imagefolder:DIR --model torchvision:NAME --weights FILE [--input-size 224]``.

DIR holds ``train/`` and ``val/`` in torchvision's ``ImageFolder`` layout (one folder
per class, the same class folders in both). Both splits are read batch by batch from
disk (``--workers`` processes), so memory does not grow with the folder. Every image
is resized to ``round(size * 256 / 224)`` on its short side, centre-cropped to
``size``, turned into a tensor and normalised with ImageNet's mean and standard
deviation (torchvision's evaluation transform); greyscale images are read as RGB.
Recovery adds horizontal flips. Training images get no random crop: the distillation
teacher's outputs are kept per image, which a random crop would make wrong. The
validation images are shuffled once (seed 0), so the search's validation subset holds
every class.
"""

from __future__ import annotations

from pathlib import Path

from autoprune.errors import TaskError, did_you_mean, first_line

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


def _folder(root: Path, part: str, size: int):
    from torchvision.datasets import ImageFolder

    where = root / part
    if not where.is_dir():
        raise TaskError(f"image folder {root} has no {part}/ folder; it needs train/ and val/, each with one "
                        "folder of images per class (torchvision's ImageFolder layout).")
    try:
        return ImageFolder(str(where), transform=transform(size))
    except (FileNotFoundError, RuntimeError) as exc:  # no class folders, or no images in them
        raise TaskError(f"image folder {where} holds no images torchvision can read ({first_line(exc)}); "
                        "put each class's .png/.jpg files in a folder named after the class.") from None


def _model(name: str, classes: int):
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise TaskError(f"unknown torchvision classification model {name!r}." + did_you_mean(name, known)
                        + " `python -c \"import torchvision; print(torchvision.models.list_models("
                          "module=torchvision.models))\"` lists them.")
    return torchvision.models.get_model(name, weights=None, num_classes=classes)


def _load_weights(model, path: Path, name: str) -> None:
    """Load a state_dict (or a whole saved model) into ``model``, naming the first
    tensor that does not fit."""
    import pickle

    import torch

    if not path.is_file():
        raise TaskError(f"weights file {path} does not exist.")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError):
        # a whole pickled model: loading it runs its pickle, which the user made (their own file)
        try:
            saved = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - whatever the file is, it is not weights
            raise TaskError(f"weights file {path} cannot be read by torch.load ({type(exc).__name__}: "
                            f"{first_line(exc)}); save it with torch.save(model.state_dict(), FILE).") from None
    except Exception as exc:  # noqa: BLE001
        raise TaskError(f"weights file {path} cannot be read by torch.load ({type(exc).__name__}: "
                        f"{first_line(exc)}); save it with torch.save(model.state_dict(), FILE).") from None
    if isinstance(saved, torch.nn.Module):
        saved = saved.state_dict()
    if isinstance(saved, dict) and "state_dict" in saved and isinstance(saved["state_dict"], dict):
        saved = saved["state_dict"]  # a training checkpoint
    if not isinstance(saved, dict):
        raise TaskError(f"weights file {path} holds a {type(saved).__name__}, not a state_dict or a model.")
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
    if size < 8:
        raise TaskError(f"--input-size must be at least 8 pixels, got {size}.")
    train, val = _folder(root, "train", size), _folder(root, "val", size)
    if train.classes != val.classes:
        only_train = sorted(set(train.classes) - set(val.classes))
        only_val = sorted(set(val.classes) - set(train.classes))
        raise TaskError(f"image folder {root}: train/ and val/ have different class folders (only in train/: "
                        f"{', '.join(only_train) or 'none'}; only in val/: {', '.join(only_val) or 'none'}). "
                        "Both need the same classes.")
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
