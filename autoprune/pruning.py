"""Physical pruning: a PruningPlan applied to a copy of the model.

Three roles are kept apart, as in Torch-Pruning: *what is coupled* comes from its
DependencyGraph (a group is every layer whose channels must go together, e.g. all
convolutions feeding one residual add); *what to cut* comes from a method's score;
*how to cut* is Torch-Pruning's per-layer surgery. Torch-Pruning lacks three things
this module adds by hand, each small:

- **unstructured and N:M sparsity** on the layers of a group: masks folded into the
  weights (zeros), returned in ``PruneReport.masks`` and passed to the fine-tune, which
  keeps those weights at zero;
- **depth**: whole residual blocks replaced by ``nn.Identity`` where shapes allow;
- **attention heads**: a group that runs through ``nn.MultiheadAttention`` loses
  whole heads, and ``num_heads`` / ``head_dim`` (and torchvision ViT's
  ``hidden_dim``) are updated so the module stays consistent;
- **protected widths**: a group whose channels reach the model's output (a classifier,
  also when the task does not name it) or meet a tensor that no layer makes (the
  model's input added into a residual stream) is never offered: cutting it changes the
  model's interface.

Grouped convolutions (ResNeXt, RegNet) and GroupNorm are cut as Torch-Pruning's own
pruner cuts them: the same channels in every group, so the groups stay equal.

Example:
    >>> plan = PruningPlan({"features.0": GroupChoice("l1", 0.5)}, round_to=1)
    >>> pruned, report = apply(model, plan, example_input)   # model is not changed
    >>> report.widths
    {'features.0': (16, 8)}
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from autoprune import accelerator

if TYPE_CHECKING:  # torch is imported where it is used: loading a space stays fast
    import torch
    from torch import nn

Kind = Literal["keep", "structured", "unstructured", "semi-structured", "depth"]

# -- plan records -------------------------------------------------------------------


@dataclass(frozen=True)
class GroupChoice:
    """What to do to one group: a registered method, the fraction to cut, and
    optionally the group's own channel multiple (else the plan's ``round_to``)."""

    method: str
    ratio: float
    round_to: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown pruning method {self.method!r}; known: {sorted(METHODS)}.")
        if METHODS[self.method].kind == "depth":
            raise ValueError(f"{self.method!r} removes blocks, not channels: list blocks in the plan's drop_blocks.")
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"`0 <= ratio < 1` must hold, but got ratio={self.ratio}.")
        if self.round_to is not None and self.round_to < 1:
            raise ValueError(f"`round_to >= 1` must hold, but got {self.round_to}.")

    @property
    def active(self) -> bool:
        return self.method != "none" and self.ratio > 0


@dataclass(frozen=True)
class PruningPlan:
    """Per-group choices keyed by the group's root module name, the channel multiple,
    and the residual blocks to remove.

    Groups not named are left alone. ``round_to`` makes every pruned group keep a
    multiple of that many channels (vector units like multiples of 8 or 16).
    """

    groups: Mapping[str, GroupChoice] = field(default_factory=dict)
    round_to: int = 1
    drop_blocks: tuple[str, ...] = ()
    precision: str = "float32"  # numeric precision of the exported candidate (autoprune.quantize)

    def __post_init__(self) -> None:
        if self.round_to < 1:
            raise ValueError(f"`round_to >= 1` must hold, but got {self.round_to}.")

    @property
    def is_identity(self) -> bool:
        return not self.drop_blocks and not any(c.active for c in self.groups.values())

    def to_dict(self) -> dict[str, Any]:
        groups = {}
        for k, c in self.groups.items():
            groups[k] = {"method": c.method, "ratio": c.ratio}
            if c.round_to is not None:
                groups[k]["round_to"] = c.round_to
        out = {"round_to": self.round_to, "drop_blocks": list(self.drop_blocks), "groups": groups}
        if self.precision != "float32":  # plans written before precisions existed read back the same
            out["precision"] = self.precision
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PruningPlan:
        groups = {
            k: GroupChoice(v["method"], float(v["ratio"]), v.get("round_to"))
            for k, v in data["groups"].items()
        }
        return cls(groups, int(data.get("round_to", 1)), tuple(data.get("drop_blocks", ())),
                   str(data.get("precision", "float32")))

    def shape_only(self) -> PruningPlan:
        """The plan that gives the same layer shapes without needing scores or data:
        structured cuts by L1, sparse methods dropped (they change no shape). Loading a
        trial's saved weights into this plan's model rebuilds the trial exactly."""
        groups = {}
        for k, c in self.groups.items():
            kind = METHODS[c.method].kind
            groups[k] = GroupChoice("l1", c.ratio, c.round_to) if kind == "structured" else GroupChoice("none", 0.0)
        return PruningPlan(groups, self.round_to, self.drop_blocks, self.precision)


# -- method registry ----------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """A pruning method. Structured methods give Torch-Pruning a group importance;
    unstructured ones score single weights (``score(weight, grad)``); N:M keeps the
    ``n`` largest of every ``m`` consecutive input weights."""

    name: str
    kind: Kind
    description: str
    importance: Callable[[], Any] | None = None  # structured: a tp importance factory
    score: Callable[[Any, Any], Any] | None = None  # unstructured: per-weight score
    nm: tuple[int, int] | None = None  # semi-structured: (n kept, of m)
    needs_gradients: bool = False


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def _tp():
    import torch_pruning as tp

    return tp


def _random_score(w, g):
    import torch

    # the CPU generator, whatever w's device: ``apply`` seeds and forks that one only
    return torch.rand(w.shape).to(w.device)


register_method(Method("none", "keep", "leave the group unpruned"))
for _name, _desc, _imp, _grad in [
    ("l1", "remove the channels with the smallest group L1 norm",
     lambda: _tp().importance.GroupMagnitudeImportance(p=1), False),
    ("l2", "remove the channels with the smallest group L2 norm",
     lambda: _tp().importance.GroupMagnitudeImportance(p=2), False),
    ("taylor", "first-order Taylor |w * dL/dw| on a few labelled batches",
     lambda: _tp().importance.GroupTaylorImportance(), True),
    ("fpgm", "filters closest to the geometric median of their layer (FPGM, He et al. 2019)",
     lambda: _tp().importance.FPGMImportance(), False),
    ("lamp", "layer-adaptive magnitude score (LAMP, Lee et al. 2021)",
     lambda: _tp().importance.LAMPImportance(), False),
    ("random", "remove randomly chosen channels (a baseline)",
     lambda: _tp().importance.RandomImportance(), False),
]:
    register_method(Method(_name, "structured", _desc, importance=_imp, needs_gradients=_grad))
register_method(Method("sparse_magnitude", "unstructured", "zero the smallest |w| of each layer in the group",
                       score=lambda w, g: w.abs()))
register_method(Method("sparse_gradient", "unstructured", "zero the smallest |w * dL/dw| on labelled batches",
                       score=lambda w, g: (w * g).abs(), needs_gradients=True))
register_method(Method("sparse_random", "unstructured", "zero randomly chosen weights (a baseline)",
                       score=_random_score))
register_method(Method("nm_2_4", "semi-structured", "2:4 sparsity: keep the 2 largest of every 4 input weights",
                       nm=(2, 4)))
register_method(Method("nm_1_4", "semi-structured", "1:4 sparsity: keep the largest of every 4 input weights",
                       nm=(1, 4)))
# Listed by `autoprune methods`; chosen through the space's `depth` section, not per group.
register_method(Method("drop_block", "depth", "replace a whole residual block by identity (depth pruning)"))

# -- surgery ------------------------------------------------------------------------


class PruningError(RuntimeError):
    """The plan cannot be applied to this model (becomes a failed trial)."""


@dataclass(frozen=True)
class GroupInfo:
    """A prunable group found by the dependency graph."""

    name: str  # root module name: the key of PruningPlan.groups
    root_type: str
    channels: int
    members: tuple[str, ...]  # layers whose output channels go with the root's
    heads: int = 0  # attention heads the group runs through (cut in whole heads)
    channel_groups: int = 1  # equal groups of a grouped conv / GroupNorm (cut alike in each)


@dataclass
class PruneReport:
    """What ``apply`` did: channel widths, sparsity and removed blocks, per group."""

    widths: dict[str, tuple[int, int]] = field(default_factory=dict)  # (before, after)
    sparsity: dict[str, float] = field(default_factory=dict)  # zero fraction of its layers
    heads: dict[str, tuple[int, int]] = field(default_factory=dict)  # (before, after)
    dropped_blocks: tuple[str, ...] = ()
    skipped: dict[str, str] = field(default_factory=dict)  # group -> why it was left alone
    warnings: tuple[str, ...] = ()  # what Torch-Pruning warned while tracing (first lines)
    # "<layer>.weight" -> bool mask (True = kept) of every sparsified layer: the fine-tune
    # re-applies them, and the next iterative step extends them
    masks: dict[str, torch.Tensor] = field(default_factory=dict)


def channels_to_keep(channels: int, ratio: float, round_to: int) -> int:
    """Channels left after cutting ``ratio`` of them, rounded up to a multiple of round_to."""
    keep = channels - int(round(channels * ratio))
    keep = max(round_to, math.ceil(keep / round_to) * round_to)
    return max(1, min(channels, keep))


def _graph(model: nn.Module, example_input: torch.Tensor):
    """Torch-Pruning's dependency graph, and the first line of each warning it gave.

    Its warnings (e.g. "Unwrapped parameters detected ... will prune the last
    non-singleton dimension") are pages long and repeat on every trial; callers report
    them once instead.
    """
    import warnings

    tp = _tp()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
    said = tuple(dict.fromkeys(" ".join(str(w.message).split())[:300] for w in caught))
    return graph, said


# binary ops whose second operand, if no layer makes it, ties the group's width to it
_BINARY = ("AddBackward", "SubBackward", "MulBackward", "DivBackward", "CatBackward")


def _protected(graph, group) -> str | None:
    """Why cutting ``group`` would change the model's interface, or None.

    - Its channels reach the model's output: some node the cut reaches has no consumer.
    - Its channels meet a tensor that no traced layer makes, e.g. the model's input added
      into a residual stream (``x + block(x)``): that operand cannot shrink with them.
    """
    for dep, _ in group:
        node = dep.target
        if not graph.is_out_channel_pruning_fn(dep.handler):
            continue
        if not node.outputs:
            return "its channels are the model's output"
        fn = getattr(node, "grad_fn", None)
        if fn is not None and type(fn).__name__.startswith(_BINARY) and \
                any(f is None for f, _ in fn.next_functions) and len(node.inputs) < len(fn.next_functions):
            return "its channels meet a tensor no layer makes (the model's input?)"
    return None


def _channel_groups(graph, group) -> int:
    """The equal channel groups the cut must respect: grouped convolutions and GroupNorm
    (depthwise convolutions excepted, whose channels are each their own group), as
    Torch-Pruning's MetaPruner counts them."""
    from torch import nn

    found = [1]
    for dep, _ in group:
        module = dep.target.module
        if not isinstance(module, nn.Module) or isinstance(module, nn.MultiheadAttention):
            continue
        if isinstance(module, nn.modules.conv._ConvNd) and module.groups == module.out_channels:
            continue
        pruner = graph.get_pruner_of_module(module)
        if pruner is None:
            continue
        count = pruner.get_out_channel_groups(module) if graph.is_out_channel_pruning_fn(dep.handler) \
            else pruner.get_in_channel_groups(module)
        found.append(int(count or 1))
    return max(found)


def _all_groups(graph, ignored: list, root_types: tuple, failed: dict):
    """Torch-Pruning's ``DependencyGraph.get_all_groups``, one root at a time.

    Written out (it is that method's loop) because the library's stops at the first group
    it cannot follow: a GRU fed by a linear layer raised IndexError in its index mapping
    and ended the trace of the whole model (issue 28). Here such a root goes to
    ``failed`` (root module -> exception) and the other groups are offered.
    """
    ignored = list(ignored) + list(getattr(graph, "IGNORED_LAYERS_IN_TRACING", []))
    visited: set[int] = set()
    for module in list(graph.module2node):
        if not isinstance(module, root_types) or any(module is i for i in ignored) or id(module) in visited:
            continue
        pruner = graph.get_pruner_of_module(module)
        if pruner is None or pruner.get_out_channels(module) is None:
            continue
        try:
            group = graph.get_pruning_group(module, pruner.prune_out_channels,
                                            list(range(pruner.get_out_channels(module))))
        except Exception as exc:  # noqa: BLE001 - Torch-Pruning's own failure for this root only
            failed[module] = exc
            continue
        prunable = True
        for dep, _ in group:
            if graph.is_out_channel_pruning_fn(dep.handler):
                visited.add(id(dep.target.module))
                prunable = prunable and not any(dep.target.module is i for i in ignored)
        if prunable:
            yield group


def _recurrent_reached(graph, root, owners: dict[int, str], limit: int = 64) -> list[str]:
    """The recurrent layers that ``root``'s output reaches in the traced graph."""
    seen, todo, found = set(), [graph.module2node[root]], []
    while todo and len(seen) < limit:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        # a recurrent layer shows as its own node or as its weights feeding an op node
        hits = [owners[id(n.module)] for n in (node, *node.inputs) if id(n.module) in owners]
        if hits:
            found.extend(hits)
            continue
        todo.extend(node.outputs)
    return list(dict.fromkeys(found))


def _not_traced(model: nn.Module, graph, failed: dict, names: dict, protected: dict[str, str]) -> None:
    """Say why the groups Torch-Pruning could not follow, and the recurrent layers, are
    never offered."""
    from torch import nn

    recurrent = {n: m for n, m in model.named_modules() if isinstance(m, nn.RNNBase)}
    owners = {id(p): f"{n} ({type(m).__name__})" for n, m in recurrent.items() for p in m.parameters()}
    owners.update({id(m): f"{n} ({type(m).__name__})" for n, m in recurrent.items()})
    for root, exc in failed.items():
        reached = _recurrent_reached(graph, root, owners)
        if reached:
            protected[names[root]] = (f"its channels feed {', '.join(reached)}, which Torch-Pruning cannot cut "
                                      f"with them ({type(exc).__name__} in its index mapping)")
        else:
            protected[names[root]] = f"Torch-Pruning cannot follow its channels ({type(exc).__name__}: {exc})"
    for name, module in recurrent.items():
        protected.setdefault(name, f"{type(module).__name__} hidden size {module.hidden_size}: recurrent layers' "
                                   "own units are not cut (autoprune cuts convolutions and linear layers)")


def _bare_parameters(model: nn.Module, offered: list, protected: dict[str, str]) -> None:
    """Parameters outside any layer Torch-Pruning knows (a weight used through
    ``torch.nn.functional``) that no offered group cuts: say so, or an empty ``groups``
    table leaves the user guessing (issue 28)."""
    from torch import nn

    reached = {id(dep.target.module) for group in offered for dep, _ in group}
    for name, module in model.named_modules():
        if type(module).__module__.startswith("torch.nn"):
            continue  # PyTorch's layers: Torch-Pruning knows them, or they are listed above
        for pname, param in module.named_parameters(recurse=False):
            if id(param) not in reached:
                protected[f"{name}.{pname}" if name else pname] = (
                    "a bare parameter that no offered group cuts: autoprune cuts the channels of nn.Conv*/"
                    "nn.Linear layers and what they reach, never a weight used through torch.nn.functional")


def _groups(model: nn.Module, graph, ignored_layers: tuple[str, ...], protected: dict[str, str] | None = None):
    """Yield (GroupInfo, tp group) for every prunable group, in graph order; groups
    left out because they are protected go to ``protected`` (root -> why)."""
    from torch import nn

    names = {m: n for n, m in model.named_modules()}
    modules = dict(model.named_modules())
    ignored = [modules[n] for n in ignored_layers]
    failed: dict = {}
    for group in _all_groups(graph, ignored, (nn.modules.conv._ConvNd, nn.Linear), failed):
        root = group[0].dep.target.module
        if (why := _protected(graph, group)) is not None:
            if protected is not None:
                protected[names[root]] = why
            continue
        members = tuple(dict.fromkeys(
            names[dep.target.module]
            for dep, _ in group
            if graph.is_out_channel_pruning_fn(dep.handler)
            and isinstance(dep.target.module, nn.modules.conv._ConvNd | nn.Linear)
        ))
        heads = {dep.target.module.num_heads for dep, _ in group
                 if isinstance(dep.target.module, nn.MultiheadAttention)}
        if len(heads) > 1:  # cannot cut whole heads of differently split attentions together
            continue
        channels = graph.get_out_channels(root)
        ch_groups = _channel_groups(graph, group)
        if ch_groups > 1 and (heads or channels % ch_groups):  # no equal cut exists
            continue
        info = GroupInfo(names[root], type(root).__name__, channels, members,
                         heads.pop() if heads else 0, ch_groups)
        yield info, group
    if protected is not None:
        _not_traced(model, graph, failed, names, protected)


@dataclass(frozen=True)
class GraphSummary:
    """What set-up learns from tracing a model once."""

    groups: list[GroupInfo]
    protected: dict[str, str]  # root of a group never offered -> why
    warnings: tuple[str, ...]  # Torch-Pruning's warnings, first lines


def trace(model: nn.Module, example_input: torch.Tensor, ignored_layers: tuple[str, ...] = ()) -> GraphSummary:
    """The prunable and protected groups of ``model`` (read-only: works on a copy)."""
    model = copy.deepcopy(model).eval()
    graph, said = _graph(model, example_input)
    protected: dict[str, str] = {}
    found = list(_groups(model, graph, ignored_layers, protected))
    _bare_parameters(model, [group for _, group in found], protected)
    return GraphSummary([info for info, _ in found], protected, said)


def find_groups(
    model: nn.Module, example_input: torch.Tensor, ignored_layers: tuple[str, ...] = ()
) -> list[GroupInfo]:
    """The prunable groups of ``model`` (read-only: works on a copy)."""
    return trace(model, example_input, ignored_layers).groups


# -- depth ----------------------------------------------------------------------------


def _is_droppable(module: nn.Module) -> bool:
    """A residual block whose shortcut is the identity: replacing it by identity keeps
    every shape. Known block types only: guessing from code would drop non-residual
    blocks and silently wreck the model."""
    kind = type(module).__name__
    origin = type(module).__module__
    if origin == "torchvision.models.resnet" and kind in ("BasicBlock", "Bottleneck"):
        return module.downsample is None
    if origin == "torchvision.models.mobilenetv2" and kind == "InvertedResidual":
        return bool(module.use_res_connect)
    if origin == "torchvision.models.vision_transformer" and kind == "EncoderBlock":
        return True
    if origin == "autoprune.tasks.models" and kind == "BasicBlock":
        from torch import nn

        return isinstance(module.shortcut, nn.Identity)
    return bool(getattr(module, "autoprune_droppable", False))  # opt-in for user blocks


def find_blocks(model: nn.Module) -> list[str]:
    """Names of the residual blocks that ``drop_blocks`` may remove."""
    return [name for name, m in model.named_modules() if name and _is_droppable(m)]


def _drop_blocks(model: nn.Module, names: tuple[str, ...]) -> None:
    from torch import nn

    modules = dict(model.named_modules())
    for name in names:
        block = modules.get(name)
        if isinstance(block, nn.Identity):  # dropped by an earlier iterative step
            continue
        if block is None or not _is_droppable(block):
            raise PruningError(f"cannot drop block {name!r}: droppable blocks are {find_blocks(model)}")
        parent_name, _, child = name.rpartition(".")
        setattr(modules[parent_name] if parent_name else model, child, nn.Identity())


# -- sparsity -------------------------------------------------------------------------


def _sparsify(model: nn.Module, layers: tuple[str, ...], method: Method, ratio: float,
              report: PruneReport, group: str) -> None:
    """Zero weights of ``layers`` in place and record their masks in ``report.masks``.

    Weights that are already zero (an earlier iteration) score lowest, so masks only grow.
    """
    import torch

    modules = dict(model.named_modules())
    if method.nm is not None:
        # As NVIDIA's ASP does: layers whose input width is not a multiple of m (an RGB
        # stem, depthwise convs) stay dense; the group fails only if none can take it.
        n, m = method.nm
        fit = [name for name in layers if modules[name].weight.shape[1] % m == 0]
        for name in layers:
            if name not in fit:
                report.skipped[name] = f"{n}:{m} needs input channels in multiples of {m}, it has {modules[name].weight.shape[1]}"
        if not fit:
            raise PruningError(
                f"{n}:{m} sparsity cannot apply to group {group!r}: no layer has input channels in "
                f"multiples of {m} ({', '.join(f'{x} has {modules[x].weight.shape[1]}' for x in layers)})"
            )
        layers = tuple(fit)
    zeros = total = 0
    for name in layers:
        w = modules[name].weight
        with torch.no_grad():
            if method.nm is not None:
                mask = _nm_mask(w.detach(), *method.nm)
            else:
                g = w.grad if w.grad is not None else torch.zeros_like(w)
                score = method.score(w.detach(), g.detach()).float().flatten()
                score[w.detach().flatten() == 0] = -math.inf
                cut = int(round(ratio * score.numel()))
                mask = torch.ones_like(score, dtype=torch.bool)
                if cut:
                    mask[torch.argsort(score)[:cut]] = False
                mask = mask.view_as(w)
            mask &= w.detach() != 0
            w.mul_(mask)
        report.masks[f"{name}.weight"] = mask
        zeros += int((~mask).sum())
        total += mask.numel()
    report.sparsity[group] = zeros / max(total, 1)


def _nm_mask(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest |w| of every ``m`` consecutive input weights (per output,
    per kernel position), the layout sparse tensor cores accelerate."""
    import torch

    order = (0, *range(2, w.dim()), 1)  # inputs last: (out, kh, kw, in)
    wt = w.permute(order)
    blocks = wt.reshape(-1, m).abs()
    keep = torch.zeros_like(blocks, dtype=torch.bool)
    keep.scatter_(1, torch.topk(blocks, n, dim=1).indices, True)
    inverse = [order.index(i) for i in range(w.dim())]
    return keep.reshape(wt.shape).permute(inverse).contiguous()


def restore_masks(model: nn.Module, plan: PruningPlan, example_input: torch.Tensor,
                  ignored_layers: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The fine-tune masks of a rebuilt model, re-created from its zeros: the layers of
    the plan's sparse groups keep their zero weights at zero in further training."""
    sparse = {k for k, c in plan.groups.items() if c.active and METHODS[c.method].kind != "structured"}
    if not sparse:
        return {}
    modules = dict(model.named_modules())
    masks = {}
    for info in find_groups(model, example_input, ignored_layers):
        if info.name in sparse or any(m in sparse for m in info.members):
            for name in info.members:
                masks[f"{name}.weight"] = modules[name].weight.detach() != 0
    return masks


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Re-zero masked weights (after an optimiser step moved them).

    Raises:
        ValueError: a mask names no parameter of ``model`` or has another shape (masks
            made for a different model: silently skipping them would let zeros regrow).
    """
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            if name not in params or params[name].shape != mask.shape:
                have = tuple(params[name].shape) if name in params else "no such parameter"
                raise ValueError(f"mask {name!r} of shape {tuple(mask.shape)} does not fit the model ({have}).")
            params[name].mul_(mask)


# -- the plan -----------------------------------------------------------------------


def apply(
    model: nn.Module,
    plan: PruningPlan,
    example_input: torch.Tensor,
    *,
    ignored_layers: tuple[str, ...] = (),
    gradient_batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    seed: int = 0,
    fraction: float = 1.0,
    original: PruneReport | None = None,
    masks: Mapping[str, torch.Tensor] | None = None,
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[nn.Module, PruneReport]:
    """Return a pruned copy of ``model`` and a :class:`PruneReport`.

    ``loss_fn(model, x, y)``: what gradient (Taylor) importance differentiates on
    ``gradient_batches``, the task's loss (cross-entropy of ``model(x)`` by default).

    Order: blocks are dropped first, then structured groups are scored (all on the same
    copy, so indices stay valid) and cut, then sparse groups are masked on the result.
    ``report.masks`` holds the masks to keep through the fine-tune.

    ``fraction`` < 1 applies that share of the plan, for iterative pruning: step i of k
    calls ``apply(current, plan, fraction=i/k, original=report_of_step_1,
    masks=report_of_step_i-1.masks)``; channel targets are taken from the widths
    *before* the first step, and the earlier masks carry over into ``report.masks``.

    ``seed`` alone decides the random methods' choices; torch's global random state is
    the same after the call as before it.

    Raises:
        PruningError: a group named in the plan does not exist, a cut would empty a
            layer, or a method cannot apply to a layer (the message names it).
    """
    import torch

    # The random methods draw from torch's global CPU generator (Torch-Pruning's
    # RandomImportance takes no generator of its own): fork it, so that the seed decides
    # this call alone and the caller's random stream is left exactly as it was.
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return _apply(model, plan, example_input, ignored_layers, gradient_batches, fraction, original,
                      masks or {}, loss_fn)


def _apply(
    model: nn.Module,
    plan: PruningPlan,
    example_input: torch.Tensor,
    ignored_layers: tuple[str, ...],
    gradient_batches: list[tuple[torch.Tensor, torch.Tensor]] | None,
    fraction: float,
    original: PruneReport | None,
    masks: Mapping[str, torch.Tensor],
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[nn.Module, PruneReport]:
    import torch
    from torch import nn

    pruned = copy.deepcopy(model).eval()
    report = PruneReport(dropped_blocks=plan.drop_blocks)
    if plan.is_identity:
        report.masks = _fitting(pruned, masks)
        return pruned, report
    _drop_blocks(pruned, plan.drop_blocks)
    graph, said = _graph(pruned, example_input)
    report.warnings = said
    wanted = {k: c for k, c in plan.groups.items() if c.active}
    if any(METHODS[c.method].needs_gradients for c in wanted.values()):
        if not gradient_batches:
            raise PruningError("a gradient-based method was chosen but no labelled batches given")
        from autoprune.tasks._base import default_loss

        device = accelerator.current().device
        pruned.zero_grad(set_to_none=True)
        with accelerator.placed(pruned, device):  # the gradients come back to the CPU with their weights
            for x, y in gradient_batches:
                (loss_fn or default_loss)(pruned, accelerator.to(x, device), accelerator.to(y, device)).backward()

    # Plan keys are root names of the unpruned model; a dropped block can move a
    # group's root, so a key also matches any member layer of a current group.
    cuts, sparse, seen = [], [], set()
    for info, group in _groups(pruned, graph, ignored_layers):
        key = info.name if info.name in wanted else next((m for m in info.members if m in wanted), None)
        if key is None:
            continue
        seen.add(key)
        choice = wanted[key]
        method = METHODS[choice.method]
        if method.kind != "structured":
            sparse.append((key, info, method, choice.ratio * fraction))
            continue
        before = original.widths.get(key, (info.channels,))[0] if original else info.channels
        heads_before = original.heads.get(key, (info.heads,))[0] if original else info.heads
        keep = _keep(info, before, heads_before, choice, plan.round_to, fraction)
        if keep >= info.channels:
            continue
        scores = method.importance()(group)
        if scores is None or len(scores) != info.channels:
            raise PruningError(f"method {choice.method!r} could not score group {info.name!r}")
        if not bool(scores.isfinite().all()):  # a diverged or dead layer: argsort would be arbitrary
            scores = scores.nan_to_num(nan=0.0, posinf=torch.finfo(scores.dtype).max, neginf=0.0)
        idxs = _lowest(scores, info, info.channels - keep)
        cuts.append((key, info, group[0].dep.target.module, group[0].dep.handler, idxs, keep, before, heads_before))
    in_dropped = {k for k in set(wanted) - seen
                  if any(k == b or k.startswith(b + ".") for b in plan.drop_blocks)}
    unknown = sorted(set(wanted) - seen - in_dropped)
    if unknown:
        raise PruningError(f"plan names groups the model does not have: {unknown}")
    for k in sorted(in_dropped):
        report.skipped[k] = "inside a dropped block"

    head_dims = {m: m.head_dim for m in pruned.modules() if isinstance(m, nn.MultiheadAttention)}
    for key, info, root, handler, idxs, keep, before, heads_before in cuts:
        group = graph.get_pruning_group(root, handler, idxs)
        if not graph.check_pruning_group(group):
            raise PruningError(f"cutting {len(idxs)} channels of {info.name!r} would empty a layer")
        group.prune()
        report.widths[key] = (before, keep)
        if info.heads:
            report.heads[key] = (heads_before, keep // (info.channels // info.heads))
    if any(info.heads for _, info, *_ in cuts):
        _fix_attention(pruned, head_dims)
    report.masks = _fitting(pruned, masks)
    for key, info, method, ratio in sparse:
        _sparsify(pruned, info.members, method, ratio, report, key)
    pruned.zero_grad(set_to_none=True)
    return pruned.eval(), report


def _fitting(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The earlier masks that still fit ``model``: a block dropped or a layer reshaped by
    this step's cuts leaves its mask stale (the sparse groups are re-masked anyway)."""
    params = dict(model.named_parameters())
    return {k: m for k, m in masks.items() if k in params and params[k].shape == m.shape}


def _keep(info: GroupInfo, before: int, heads_before: int, choice: GroupChoice,
          plan_round_to: int, fraction: float) -> int:
    """Channels the group keeps after this step (of ``before`` channels before the first
    step). Attention groups keep whole heads; their head width never changes."""
    if info.heads:
        head_dim = info.channels // info.heads
        heads = max(1, heads_before - int(round(heads_before * choice.ratio * fraction)))
        return min(info.channels, heads * head_dim)
    round_to = choice.round_to or plan_round_to
    if info.channel_groups > 1:
        # every group keeps the same count; the total is still a multiple of round_to
        # where the group count allows (per-group multiple round_to / gcd(round_to, g))
        g = info.channel_groups
        step = round_to // math.gcd(round_to, g)
        size, size_before = info.channels // g, before // g
        final = channels_to_keep(size_before, choice.ratio, step)
        keep = size_before - int(round((size_before - final) * fraction))
        keep = min(size, max(step, math.ceil(keep / step) * step)) if keep < size_before else size_before
        return g * min(keep, size)
    final = channels_to_keep(before, choice.ratio, round_to)
    keep = before - int(round((before - final) * fraction))
    if keep < before:
        keep = min(before, max(round_to, math.ceil(keep / round_to) * round_to))
    return keep


def _lowest(scores: torch.Tensor, info: GroupInfo, count: int) -> list[int]:
    """Indices of the ``count`` least important channels; for attention groups, the
    channels of the least important whole heads (a head's score is its channels' sum)."""
    import torch

    if info.channel_groups > 1:  # the same positions in every group, ranked by their mean
        g = info.channel_groups
        size = info.channels // g
        drop = torch.argsort(scores.reshape(g, size).mean(0))[: count // g].tolist()
        return sorted(k * size + i for k in range(g) for i in drop)
    if not info.heads:
        return torch.argsort(scores)[:count].tolist()
    head_dim = info.channels // info.heads
    per_head = scores.reshape(info.heads, head_dim).sum(1)
    drop = torch.argsort(per_head)[: count // head_dim].tolist()
    return sorted(h * head_dim + i for h in drop for i in range(head_dim))


def _fix_attention(model: nn.Module, head_dims: dict[nn.Module, int]) -> None:
    """Keep attention attributes consistent with the cut: Torch-Pruning shrinks
    ``embed_dim`` of ``nn.MultiheadAttention`` but keeps ``num_heads`` (so every head
    would get narrower); whole heads were cut, so the head width stays and the count drops."""
    for module, head_dim in head_dims.items():
        module.num_heads = module.embed_dim // head_dim
        module.head_dim = head_dim
    # torchvision's VisionTransformer reshapes with its stored width
    if type(model).__name__ == "VisionTransformer" and hasattr(model, "conv_proj"):
        model.hidden_dim = model.conv_proj.out_channels
