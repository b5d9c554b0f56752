"""Fashion-MNIST written as an image folder of PNG files (torchvision's ImageFolder
layout: train/<class>/<n>.png, val/<class>/<n>.png), for the image-folder tests and
benchmark. The images are the real ones, from Debian's dataset-fashion-mnist."""

from __future__ import annotations

from pathlib import Path

CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


def write_pngs(root: Path, n_train: int, n_val: int, classes: tuple[str, ...] = CLASSES) -> Path:
    """Write the first ``n_train`` training images and the first ``n_val`` test images
    into ``root`` (skipped if it is already complete); return ``root``."""
    from PIL import Image

    from autoprune.tasks.builtin import load_fashion_arrays

    done = root / ".complete"
    if done.is_file() and done.read_text() == f"{n_train} {n_val} {len(classes)}":
        return root
    arrays = load_fashion_arrays()
    for part, x, y, n in (("train", arrays["train_x"], arrays["train_y"], n_train),
                          ("val", arrays["test_x"], arrays["test_y"], n_val)):
        for c in classes:
            (root / part / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            label = int(y[i])
            if label < len(classes):
                Image.fromarray(x[i]).save(root / part / classes[label] / f"{i:05d}.png")
    done.write_text(f"{n_train} {n_val} {len(classes)}")
    return root
