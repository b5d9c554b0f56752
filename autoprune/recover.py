"""Recovery after surgery: batch-norm recalibration, then a short fine-tune.

Pruning changes the activations that every BatchNorm layer normalises, so its running
statistics are stale; recalibrating them is nearly free and recovers much of the
accuracy. The fine-tune (a step budget from the search space) does the rest. The same
``train`` loop trains the built-in tasks' base models.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from autoprune import accelerator
from autoprune.outputs import distill_modes, flat, names
from autoprune.pruning import apply_masks

# _base, not the package: the package's loader builds the built-in tasks with ``train``
from autoprune.tasks._base import Split, default_loss


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Plain SGD with momentum and a cosine schedule over ``steps`` mini-batches."""

    steps: int
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    hflip: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(
                "`steps >= 0, batch_size >= 1, lr > 0` must hold, but got "
                f"(steps={self.steps}, batch_size={self.batch_size}, lr={self.lr})."
            )


@contextlib.contextmanager
def _seeded_rng(seed: int) -> Iterator[None]:
    """Seed torch's global CPU generator on a fork: layers that draw from it in train
    mode (dropout) get a reproducible stream, and the caller's stream is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def recalibrate_bn(model: nn.Module, data: Split, batches: int, batch_size: int = 128) -> None:
    """Re-estimate every BatchNorm's running mean/var from ``batches`` training batches."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or batches <= 0:
        return
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches below
    device = accelerator.current().device
    model.train()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad(), _seeded_rng(0), accelerator.placed(model, device):
        for _, x, _ in data.sample(batch_size, batches, gen):
            model(accelerator.to(x, device))
    for bn, momentum in zip(bns, saved):
        bn.momentum = momentum
    model.eval()


@dataclass
class Distill:
    """Knowledge distillation from the unpruned model (Hinton et al., 2015).

    The loss is ``(1 - weight) * task loss + weight * T^2 * KL(teacher_T || student_T)``
    on the outputs softened by temperature ``T``; the T^2 keeps the soft term's gradient
    on the scale of the hard one's. The teacher sees the same (augmented) batch.

    A model with several outputs (a tuple, list or dict) is distilled per output, as
    ``outputs`` (``Task.distill``: output key or position -> ``"kl"``, ``"mse"`` or
    ``"none"``) says; by default KL for the first output and mean squared error for the
    others (a detector's class scores and boxes). The soft term is their sum.

    The teacher is fixed and in eval mode, so its output for a training example (and its
    flip) never changes: outputs are kept per example, and a search's later fine-tunes
    pay nothing for the teacher. Without the cache its forward pass costs more than a
    heavily pruned student's forward and backward together. Outputs larger than
    ``cache_mb`` for a whole split (per-pixel maps of big data) are not kept.
    """

    teacher: nn.Module
    weight: float = 0.5
    temperature: float = 4.0
    cache_mb: float = 256.0
    outputs: Mapping | None = None
    _cache: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary, repr=False)
    _modes: list[str] | None = field(default=None, repr=False)
    _placed: dict = field(default_factory=dict, repr=False)  # device -> a copy of the teacher there

    def on(self, device: str) -> nn.Module:
        """The teacher on ``device``: the teacher itself on the CPU, a copy made once
        elsewhere (the teacher is also the baseline that export and timing read on the CPU)."""
        if device == "cpu":
            return self.teacher
        if device not in self._placed:
            import copy

            self._placed[device] = copy.deepcopy(self.teacher).to(device).eval()
        return self._placed[device]

    def _teacher(self, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return flat(self.on(str(x.device))(x))

    def teacher_out(self, data: Split, idx: torch.Tensor | None, flip: torch.Tensor | None,
                    x: torch.Tensor) -> list[torch.Tensor]:
        """The teacher's outputs (a list, one tensor per output) for the batch ``x``,
        examples ``idx`` of ``data`` (flipped where ``flip``); ``idx`` None (a stream
        without indices): computed, not kept."""
        if idx is None:
            return self._teacher(x)
        entry = self._cache.get(data)
        if entry is None:
            one = self._teacher(x[:1])
            mb = 2 * len(data) * sum(o[0].numel() * o.element_size() for o in one) / 2**20
            # kept where the teacher runs: a batch's outputs never cross the bus again
            entry = ([torch.empty((2, len(data), *o.shape[1:]), dtype=o.dtype, device=o.device) for o in one],
                     torch.zeros((2, len(data)), dtype=torch.bool, device=x.device)) if mb <= self.cache_mb else False
            self._cache[data] = entry
        if entry is False:
            return self._teacher(x)
        kept, known = entry
        idx = idx.to(known.device)
        flip = flip.to(known.device) if flip is not None else None
        side = flip.long() if flip is not None else torch.zeros_like(idx)
        miss = ~known[side, idx]
        if miss.any():
            for out, got in zip(kept, self._teacher(x[miss]), strict=True):
                out[side[miss], idx[miss]] = got
            known[side[miss], idx[miss]] = True
        return [out[side, idx] for out in kept]

    def loss(self, student_out, teacher_out: list[torch.Tensor], hard: torch.Tensor) -> torch.Tensor:
        student = flat(student_out)
        if self._modes is None:
            self._modes = distill_modes(names(student_out), self.outputs)
        soft = hard.new_zeros(())
        for mode, s, t in zip(self._modes, student, teacher_out, strict=True):
            if mode == "kl":
                soft = soft + self._kl(s, t)
            elif mode == "mse":
                soft = soft + nn.functional.mse_loss(s, t)
        return (1.0 - self.weight) * hard + self.weight * soft

    def _kl(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        return class_kl(student, teacher, t).mean() * (t * t)


def class_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) of the softmaxes at ``temperature``, summed over the class
    axis (dim 1, so per-pixel outputs (N, C, H, W) work too): one value per example (per
    pixel)."""
    return nn.functional.kl_div(
        nn.functional.log_softmax(student / temperature, dim=1),
        nn.functional.log_softmax(teacher / temperature, dim=1),
        reduction="none", log_target=True,
    ).sum(1)


def train(model: nn.Module, data: Split, config: TrainConfig, masks: Mapping[str, torch.Tensor] | None = None,
          progress: Callable[[int, float], None] | None = None, distill: Distill | None = None,
          loss_fn: LossFn | None = None) -> float:
    """Train ``model`` in place for ``config.steps`` steps; return the last loss.

    ``masks`` (``PruneReport.masks``) are re-applied after every optimiser step, so
    pruned weights stay zero. ``progress`` (optional) is called as
    ``progress(step, loss)`` every 20 steps. ``distill``: learn from the unpruned
    model's outputs as well as the labels. ``loss_fn(model, x, y)``: the task's loss
    (``Task.loss_of``); cross-entropy of ``model(x)`` by default. Horizontal flips
    (``config.hflip``) flip per-pixel labels with their images.
    """
    if config.steps == 0:
        return float("nan")
    where = accelerator.current()
    with accelerator.placed(model, where.device):
        return _train(model, data, config, masks, progress, distill, loss_fn, where)


def _train(model: nn.Module, data: Split, config: TrainConfig, masks: Mapping[str, torch.Tensor] | None,
           progress: Callable[[int, float], None] | None, distill: Distill | None, loss_fn: LossFn | None,
           where: accelerator.TrainDevice) -> float:
    """:func:`train` with ``model`` already on the train device ``where``."""
    device = where.device
    if masks and device != "cpu":
        masks = {k: m.to(device) for k, m in masks.items()}
    scaler = where.scaler()
    loss = torch.tensor(float("nan"))
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=True,
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=config.steps, pct_start=0.15
    )
    loss_fn = loss_fn or default_loss
    model.train()
    distilling = distill is not None and distill.weight > 0
    if distill is not None:
        distill.teacher.eval()  # its BN statistics and dropout stay those of the trained model
    outputs: list[torch.Tensor] = []
    # the task's loss calls the model itself; the hook keeps what it returned, to distil
    hook = model.register_forward_hook(lambda _m, _i, out: outputs.append(out)) if distilling else None
    try:
        with _seeded_rng(config.seed):
            for step, (idx, x, y) in enumerate(data.sample(config.batch_size, config.steps, gen)):
                flip = None
                if config.hflip:
                    flip = torch.rand(len(x), generator=gen) < 0.5
                    x = torch.where(flip.view(-1, *[1] * (x.dim() - 1)), x.flip(-1), x)
                    if y.dim() >= 2 and y.shape[-1] == x.shape[-1]:  # per-pixel labels follow their image
                        y = torch.where(flip.view(-1, *[1] * (y.dim() - 1)), y.flip(-1), y)
                x, y = accelerator.to(x, device), accelerator.to(y, device)
                opt.zero_grad(set_to_none=True)
                outputs.clear()
                with where.autocast():
                    loss = loss_fn(model, x, y)
                    if distilling and outputs:
                        assert distill is not None
                        loss = distill.loss(outputs[-1], distill.teacher_out(data, idx, flip, x), loss)
                if scaler is None:
                    loss.backward()
                    opt.step()
                else:  # float16: gradients scaled up, and a step with an overflow skipped
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                if masks:
                    apply_masks(model, masks)  # unstructured/N:M zeros stay zero through the fine-tune
                sched.step()
                if progress is not None and (step % 20 == 0 or step == config.steps - 1):
                    progress(step, loss.item())
    finally:
        if hook is not None:
            hook.remove()
    model.eval()
    return loss.item()

