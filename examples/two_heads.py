"""A model with two outputs, its own loss and its own metric: a small digit "detector".

    autoprune search --task examples.two_heads:task --device x86-ort --latency-budget-ms 0.2 --trials 8

Each scikit-learn digit (8x8) gets a class and the box around its ink. The model returns
a dict, ``{"logits": (N, 10), "box": (N, 4)}``; the loss adds cross-entropy and a
smooth L1 box loss; the metric is the share of digits whose class is right and whose
box overlaps the true one by IoU >= 0.5. Distillation: KL on the class scores, mean
squared error on the boxes (``Task(distill=...)``; that is also the default, written
out here to show how to say it). The base model trains in a few seconds when the task
is loaded (nothing is downloaded).
"""

from __future__ import annotations

import torch
from torch import nn

from autoprune import Metric
from autoprune.recover import TrainConfig, train
from autoprune.tasks import Split, Task


class TwoHeads(nn.Module):
    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(width * 16, 64), nn.ReLU(),
        )
        self.classes = nn.Linear(64, 10)
        self.box = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(x)
        return {"logits": self.classes(h), "box": torch.sigmoid(self.box(h))}


def ink_boxes(images: torch.Tensor) -> torch.Tensor:
    """(x0, y0, x1, y1) of the pixels above a quarter of full ink, in 0-1 of the image."""
    boxes = []
    for image in images[:, 0]:
        ys, xs = torch.nonzero(image > 4.0, as_tuple=True)  # scikit-learn's digits run 0-16
        boxes.append([xs.min() / 8, ys.min() / 8, (xs.max() + 1) / 8, (ys.max() + 1) / 8])
    return torch.tensor(boxes, dtype=torch.float32)


def loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    out = model(x)
    return nn.functional.cross_entropy(out["logits"], y[:, 0].long()) + \
        5.0 * nn.functional.smooth_l1_loss(out["box"], y[:, 1:], beta=0.1)


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    w = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    h = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    area = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1) + (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    return w * h / (area - w * h).clamp(min=1e-6)


def detections(model, data) -> float:
    """Percent of digits with the right class and a box of IoU >= 0.5."""
    hits = seen = 0
    with torch.no_grad():
        for x, y in data.batches(256):
            out = model(x)
            right = (out["logits"].argmax(1) == y[:, 0].long()) & (iou(out["box"], y[:, 1:]) >= 0.5)
            hits += int(right.sum())
            seen += len(y)
    return 100.0 * hits / seen


def task(steps: int = 600) -> Task:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1)
    labels = torch.cat([torch.tensor(digits.target, dtype=torch.float32)[:, None], ink_boxes(images)], 1)
    x = (images / 16.0 - 0.3) / 0.4
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train_split, val_split = Split(x[order[:1437]], labels[order[:1437]]), Split(x[order[1437:]], labels[order[1437:]])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TwoHeads()
    train(model, train_split, TrainConfig(steps=int(steps), batch_size=64, lr=0.05),
          loss_fn=lambda m, xb, yb: loss(m, (xb, yb)))
    metric = Metric("detections", unit="%", higher_is_better=True, evaluate=detections)
    return Task("two-heads", model.eval(), (1, 8, 8), train_split, val_split,
                description="digits with their ink boxes: a dict of class scores and a box",
                metric=metric, loss=loss, distill={"logits": "kl", "box": "mse"},
                base_accuracy=metric(model.eval(), val_split))
