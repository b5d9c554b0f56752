"""Tasks for ``benchmarks/zoo.py``: any torchvision classification model, random weights,
10 classes, on scikit-learn's digits scaled up to the model's input as 3-channel images.

``--task zoo_tasks:resnet18`` (with this folder on PYTHONPATH) names one; the factory
for every name is made on demand by the module's ``__getattr__``. Accuracy on random
weights means nothing here: the zoo asks whether every stage runs, not how well.
"""

from __future__ import annotations

import torch

from autoprune.tasks import Split, Task

# models that need a larger input than 64x64: Inception >= 75; MaxViT's four stages must
# each split into 7x7 windows (224 / 4 / 2**k)
SIZE = {"inception_v3": 96, "maxvit_t": 224, "vit_h_14": 56}  # ViT-H: patches of 14
DEFAULT_SIZE = 64


def input_size(name: str) -> int:
    return SIZE.get(name, DEFAULT_SIZE)


def build_model(name: str):
    """``name`` from ``torchvision.models.list_models()`` with random weights and 10 classes,
    at the input size of :func:`input_size` (transformers are told it)."""
    import torchvision

    size = input_size(name)
    kwargs = {"num_classes": 10, "weights": None}
    if name.startswith("vit_"):
        kwargs["image_size"] = size
    if name.startswith("maxvit"):
        kwargs["input_size"] = (size, size)
    if name in ("googlenet", "inception_v3"):
        kwargs["init_weights"] = False  # scipy's truncated normal: slow, and irrelevant here
    return torchvision.models.get_model(name, **kwargs)


def make_task(name: str, train: int = 384, val: int = 128) -> Task:
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    model = build_model(name).eval()
    size = input_size(name)
    digits = load_digits()
    x = torch.tensor(digits.images[: train + val], dtype=torch.float32).unsqueeze(1) / 16.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = ((x - 0.5) / 0.5).repeat(1, 3, 1, 1).contiguous()
    y = torch.tensor(digits.target[: train + val], dtype=torch.int64)
    return Task(name, model, (3, size, size), Split(x[:train], y[:train]), Split(x[train:], y[train:]),
                description=f"torchvision {name}, random weights, digits at {size}x{size}")


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    return lambda: make_task(name)
