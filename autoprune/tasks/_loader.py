from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from autoprune.errors import TaskError, did_you_mean, first_line

if TYPE_CHECKING:
    from autoprune.tasks._base import Task


def _fashion(data_dir: Path | None) -> Task:
    from autoprune.tasks.builtin import fashion_mnist

    return fashion_mnist(data_dir)


def _digits(data_dir: Path | None) -> Task:
    from autoprune.tasks.builtin import digits

    return digits()


def _fashion_seg(data_dir: Path | None) -> Task:
    from autoprune.tasks.builtin import fashion_mnist_seg

    return fashion_mnist_seg(data_dir)


BUILTIN_TASKS: dict[str, tuple[Callable[[Path | None], Task], str]] = {
    "fashion-mnist": (_fashion, "reference task: ResNet-14 (32/64/128) on Fashion-MNIST, 1x28x28"),
    "fashion-mnist-seg": (_fashion_seg, "segmentation: U-Net (32/64/128) labels Fashion-MNIST pixels, mIoU"),
    "digits": (_digits, "scikit-learn digits with a tiny CNN, 1x8x8: for fast tests"),
}


DATA_DIR_TASKS = ("fashion-mnist", "fashion-mnist-seg")  # the tasks --data-dir is for
IMAGEFOLDER = "imagefolder:"  # --task imagefolder:DIR (with --model, --weights, --input-size)

# Task objects given to ``autoprune.search(task=Task(...))`` in this process, by name: the
# search's finalize and export find them here (a later process needs a name or factory)
_GIVEN: dict[str, Task] = {}


def remember(task: Task) -> str:
    """Make a Task object loadable by its name in this process; return the name."""
    if task.name in BUILTIN_TASKS:
        raise TaskError(f"a Task object is named {task.name!r}, as a built-in task is; give it another name.")
    _GIVEN[task.name] = task
    return task.name


def check_task_spec(spec: str) -> None:
    """Refuse a task name that is neither built in nor ``package.module:factory`` (cheap)."""
    if spec in _GIVEN:
        return
    if spec not in BUILTIN_TASKS and (":" not in spec or not all(spec.partition(":")[::2])):
        raise TaskError(
            f"unknown task {spec!r}."
            + did_you_mean(spec, list(BUILTIN_TASKS))
            + " Or give your own as package.module:factory."
        )


def parse_task_args(pairs: list[str] | tuple[str, ...]) -> dict[str, object]:
    """``key=value`` strings (``--task-arg``) as keyword arguments; values are read as
    YAML scalars, so ``size=32`` is the int 32 and ``path=data/x`` stays a string."""
    import yaml

    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise TaskError(f"--task-arg {pair!r} must be key=value with a Python name as key, e.g. size=32.")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        out[key.strip()] = parsed if isinstance(parsed, (str, int, float, bool)) or parsed is None else value
    return out


def _import(module_name: str, spec: str):
    # a module in the working directory imports as it would in `python -c`
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except SyntaxError as exc:
        where = f"{Path(exc.filename).name}, line {exc.lineno}" if exc.filename else f"line {exc.lineno}"
        raise TaskError(f"task module {module_name!r} has a syntax error ({where}): {exc.msg}. "
                        "Fix it and run again.") from None
    except ImportError as exc:
        raise TaskError(
            f"cannot import {module_name!r} for task {spec!r}: {exc}. Run autoprune from the folder that "
            "holds the module, or install its package (its folder on PYTHONPATH works too)."
        ) from None
    except Exception as exc:  # noqa: BLE001 - the module's own code raised while importing
        raise TaskError(f"importing {module_name!r} for task {spec!r} raised {type(exc).__name__}: "
                        f"{first_line(exc)}") from None


def load_task(spec: str, data_dir: str | Path | None = None, args: dict[str, object] | None = None) -> Task:
    """Build a task from a built-in name or ``package.module:factory``.

    ``args`` are keyword arguments for the factory (``--task-arg key=value``).

    Raises:
        TaskError: unknown name, a factory that cannot be imported, raises, or does not
            return a Task, or (DataError) missing data.
    """
    data_path = Path(data_dir) if data_dir is not None else None
    check_task_spec(spec)
    if data_path is not None and spec not in DATA_DIR_TASKS:
        raise TaskError(f"--data-dir applies to the built-in {' and '.join(DATA_DIR_TASKS)} tasks, not to "
                        f"{spec!r}: give a task factory its folder as --task-arg, e.g. --task-arg root=DIR "
                        "(an image folder: --task imagefolder:DIR).")
    if spec in _GIVEN:
        return _GIVEN[spec]
    if spec.startswith(IMAGEFOLDER):
        from autoprune.tasks.imagefolder import imagefolder_task

        try:
            return without_aux_heads(imagefolder_task(spec[len(IMAGEFOLDER):], **(args or {})))
        except TypeError as exc:  # an argument imagefolder does not take
            raise TaskError(f"--task {spec}: {first_line(exc)}; it takes --model, --weights and --input-size.") from None
    if spec in BUILTIN_TASKS:
        if args:
            raise TaskError(f"the built-in task {spec!r} takes no --task-arg (got {', '.join(args)}).")
        return without_aux_heads(BUILTIN_TASKS[spec][0](data_path))
    module_name, _, attr = spec.partition(":")
    module = _import(module_name, spec)
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise TaskError(f"{module_name!r} has no callable {attr!r} for task {spec!r}.")
    try:
        task = factory(**(args or {}))
    except TaskError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the user's factory raises is its message to show
        raise TaskError(f"task factory {spec!r} raised {type(exc).__name__}: {first_line(exc)}") from None
    from autoprune.tasks._base import Task

    if not isinstance(task, Task):
        raise TaskError(
            f"task factory {spec!r} returned {type(task).__name__}; it must return "
            "autoprune.tasks.Task."
        )
    return without_aux_heads(task)


# torchvision classifiers whose training-mode forward also runs auxiliary heads:
# (class, the flag that returns them, the head attributes)
AUX_HEADS = {
    ("torchvision.models.googlenet", "GoogLeNet"): ("aux_logits", ("aux1", "aux2")),
    ("torchvision.models.inception", "Inception3"): ("aux_logits", ("AuxLogits",)),
}


def without_aux_heads(task: Task) -> Task:
    """The task with a copy of its model whose auxiliary heads are removed, if it has any.

    The heads run only in training mode, so tracing (in eval mode) never sees them:
    pruning the layers that feed them would leave them with stale input widths, and
    the fine-tune would fail on a channel mismatch. The exported model never runs them,
    so dropping them for the search loses nothing at deployment.
    """
    import copy
    import dataclasses

    key = (type(task.model).__module__, type(task.model).__name__)
    if key not in AUX_HEADS:
        return task
    flag, attrs = AUX_HEADS[key]
    present = [a for a in attrs if getattr(task.model, a, None) is not None]
    if not present:
        return task
    model = copy.deepcopy(task.model)
    setattr(model, flag, False)
    for a in present:
        setattr(model, a, None)
    ignored = tuple(n for n in task.ignored_layers if not any(n == a or n.startswith(a + ".") for a in present))
    note = (f"{key[1]}'s auxiliary heads ({', '.join(present)}) are dropped for the search: they run only in "
            "training, and the exported model never has them")
    return dataclasses.replace(task, model=model, ignored_layers=ignored, notes=(*task.notes, note))
