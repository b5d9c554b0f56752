"""Physical pruning: a PruningPlan applied to a copy of the model with Torch-Pruning.

Three roles are kept apart, as in Torch-Pruning: *what is coupled* comes from its
DependencyGraph (a group is every layer whose channels must go together, e.g. all
convolutions feeding one residual add); *what to cut* comes from a method's
importance score; *how to cut* is Torch-Pruning's per-layer surgery. A method is
therefore only a registered importance (plus whether it needs gradients).

Example:
    >>> plan = PruningPlan({"features.0": GroupChoice("l1", 0.5)}, round_to=1)
    >>> pruned, widths = apply(model, plan, example_input)   # model is not changed
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: loading a space stays fast
    import torch
    from torch import nn

# -- plan records -------------------------------------------------------------------


@dataclass(frozen=True)
class GroupChoice:
    """What to do to one group: a registered method and the fraction of channels to cut."""

    method: str
    ratio: float

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown pruning method {self.method!r}; known: {sorted(METHODS)}.")
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"`0 <= ratio < 1` must hold, but got ratio={self.ratio}.")


@dataclass(frozen=True)
class PruningPlan:
    """Per-group choices keyed by the group's root module name, and the channel multiple.

    Groups not named are left alone. ``round_to`` makes every pruned group keep a
    multiple of that many channels (vector units like multiples of 8 or 16).
    """

    groups: Mapping[str, GroupChoice] = field(default_factory=dict)
    round_to: int = 1

    def __post_init__(self) -> None:
        if self.round_to < 1:
            raise ValueError(f"`round_to >= 1` must hold, but got {self.round_to}.")

    @property
    def is_identity(self) -> bool:
        return all(c.method == "none" or c.ratio == 0 for c in self.groups.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "round_to": self.round_to,
            "groups": {k: {"method": c.method, "ratio": c.ratio} for k, c in self.groups.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PruningPlan:
        groups = {k: GroupChoice(v["method"], float(v["ratio"])) for k, v in data["groups"].items()}
        return cls(groups, int(data.get("round_to", 1)))


# -- method registry ----------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    importance: Callable[[], Any] | None  # None: the group is left alone
    needs_gradients: bool = False


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def _tp():
    import torch_pruning as tp

    return tp


register_method(Method("none", "leave the group unpruned", None))
register_method(
    Method(
        "l1",
        "structured: remove the channels with the smallest group L1 norm",
        lambda: _tp().importance.GroupMagnitudeImportance(p=1),
    )
)
register_method(
    Method(
        "l2",
        "structured: remove the channels with the smallest group L2 norm",
        lambda: _tp().importance.GroupMagnitudeImportance(p=2),
    )
)
register_method(
    Method(
        "taylor",
        "structured: first-order Taylor |w * dL/dw| on a few labelled batches",
        lambda: _tp().importance.GroupTaylorImportance(),
        needs_gradients=True,
    )
)
register_method(
    Method(
        "random",
        "structured: remove randomly chosen channels (a baseline)",
        lambda: _tp().importance.RandomImportance(),
    )
)

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


def channels_to_keep(channels: int, ratio: float, round_to: int) -> int:
    """Channels left after cutting ``ratio`` of them, rounded up to a multiple of round_to."""
    keep = channels - int(round(channels * ratio))
    keep = max(round_to, math.ceil(keep / round_to) * round_to)
    return max(1, min(channels, keep))


def _graph(model: nn.Module, example_input: torch.Tensor):
    tp = _tp()
    return tp.DependencyGraph().build_dependency(model, example_inputs=example_input)


def _groups(model: nn.Module, graph, ignored_layers: tuple[str, ...]):
    """Yield (GroupInfo, tp group) for every prunable group, in graph order."""
    from torch import nn

    names = {m: n for n, m in model.named_modules()}
    modules = dict(model.named_modules())
    ignored = [modules[n] for n in ignored_layers]
    for group in graph.get_all_groups(
        ignored_layers=ignored, root_module_types=(nn.modules.conv._ConvNd, nn.Linear)
    ):
        root = group[0].dep.target.module
        members = tuple(
            names[dep.target.module]
            for dep, _ in group
            if graph.is_out_channel_pruning_fn(dep.handler)
            and isinstance(dep.target.module, nn.modules.conv._ConvNd | nn.Linear)
        )
        info = GroupInfo(names[root], type(root).__name__, graph.get_out_channels(root), members)
        yield info, group


def find_groups(
    model: nn.Module, example_input: torch.Tensor, ignored_layers: tuple[str, ...] = ()
) -> list[GroupInfo]:
    """The prunable groups of ``model`` (read-only: works on a copy)."""
    model = copy.deepcopy(model).eval()
    graph = _graph(model, example_input)
    return [info for info, _ in _groups(model, graph, ignored_layers)]


def apply(
    model: nn.Module,
    plan: PruningPlan,
    example_input: torch.Tensor,
    *,
    ignored_layers: tuple[str, ...] = (),
    gradient_batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, tuple[int, int]]]:
    """Return a physically pruned copy of ``model`` and {group: (channels before, after)}.

    Importance is scored for every group on the unpruned copy first, then each group is
    cut; groups are disjoint sets of channels, so cutting one does not move another's
    indices. ``gradient_batches`` feed methods that need gradients (taylor).

    Raises:
        PruningError: a group named in the plan does not exist, or a cut would empty a layer.
    """
    import torch
    from torch import nn

    torch.manual_seed(seed)
    pruned = copy.deepcopy(model).eval()
    if plan.is_identity:
        return pruned, {}
    graph = _graph(pruned, example_input)
    wanted = {k: c for k, c in plan.groups.items() if c.method != "none" and c.ratio > 0}
    if any(METHODS[c.method].needs_gradients for c in wanted.values()):
        if not gradient_batches:
            raise PruningError("a gradient-based method was chosen but no labelled batches given")
        pruned.zero_grad(set_to_none=True)
        loss_fn = nn.CrossEntropyLoss()
        for x, y in gradient_batches:
            loss_fn(pruned(x), y).backward()

    cuts = []
    seen = set()
    for info, group in _groups(pruned, graph, ignored_layers):
        seen.add(info.name)
        choice = wanted.get(info.name)
        if choice is None:
            continue
        keep = channels_to_keep(info.channels, choice.ratio, plan.round_to)
        if keep == info.channels:
            continue
        scores = METHODS[choice.method].importance()(group)
        if scores is None or len(scores) != info.channels:
            raise PruningError(f"method {choice.method!r} could not score group {info.name!r}")
        idxs = torch.argsort(scores)[: info.channels - keep].tolist()
        cuts.append((info, group[0].dep.target.module, group[0].dep.handler, idxs, keep))
    unknown = sorted(set(wanted) - seen)
    if unknown:
        raise PruningError(f"plan names groups the model does not have: {unknown}")
    pruned.zero_grad(set_to_none=True)

    widths = {}
    for info, root, handler, idxs, keep in cuts:
        group = graph.get_pruning_group(root, handler, idxs)
        if not graph.check_pruning_group(group):
            raise PruningError(f"cutting {len(idxs)} channels of {info.name!r} would empty a layer")
        group.prune()
        widths[info.name] = (info.channels, keep)
    return pruned.eval(), widths
