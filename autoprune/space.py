"""Search spaces: which groups may be pruned, how, and how candidates are recovered.

A space file (``search_spaces/*.yaml``) holds rules; :func:`resolve` matches them
against the groups that Torch-Pruning's dependency graph finds in a model, and
:meth:`ResolvedSpace.suggest` turns an Optuna trial into a :class:`PruningPlan`.

**Rule precedence** (the one place it is written down). A group is a set of coupled
layers named after its root layer. For each group:

1. a rule whose ``match`` is exactly the name of one of the group's layers wins;
2. otherwise the first pattern rule, in file order, that matches one of the group's
   layers (``re:<regex>`` is a full-match regular expression, anything else a glob
   such as ``layers.*.conv1``) and whose ``types`` (if given) include that layer's
   type, e.g. ``[Conv2d]``;
3. otherwise ``default``.

A rule with ``prune: false``, or whose only method is ``none``, keeps the group whole.

Example:
    >>> space = load_space("default")
    >>> resolved = resolve(space, task)
    >>> plan = resolved.suggest(optuna_trial)
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoprune._config import load_named, repo_dir, stable_hash
from autoprune.pruning import METHODS, GroupChoice, GroupInfo, PruningPlan, find_groups

SPACES_ENV = "AUTOPRUNE_SPACES_DIR"


@dataclass(frozen=True)
class RatioRange:
    low: float = 0.0
    high: float = 0.7
    step: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.low <= self.high < 1.0:
            raise ValueError(
                f"`0 <= low <= high < 1` must hold, but got (low={self.low}, high={self.high})."
            )
        if not 0.0 < self.step <= 1.0:
            raise ValueError(f"`0 < step <= 1` must hold, but got step={self.step}.")


@dataclass(frozen=True)
class GroupRule:
    match: str = "*"
    types: tuple[str, ...] = ()
    prune: bool = True
    methods: tuple[str, ...] = ("none", "l1", "l2", "taylor", "random")
    ratio: RatioRange = field(default_factory=RatioRange)

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(
                f"unknown method(s) {unknown}; known: {sorted(METHODS)} (see `autoprune methods`)."
            )
        if not self.methods:
            raise ValueError("`methods` must list at least one method.")
        if self.match.startswith("re:"):
            try:
                re.compile(self.match[3:])
            except re.error as exc:
                raise ValueError(f"bad regular expression {self.match[3:]!r}: {exc}.") from None

    @property
    def active(self) -> bool:
        return self.prune and any(m != "none" for m in self.methods)

    def matches(self, layer: str, layer_type: str) -> bool:
        if self.types and layer_type not in self.types:
            return False
        if self.match.startswith("re:"):
            return re.fullmatch(self.match[3:], layer) is not None
        return fnmatch.fnmatchcase(layer, self.match)


@dataclass(frozen=True)
class RecoveryConfig:
    """Per-candidate recovery budget: BN recalibration batches, then fine-tune steps."""

    bn_batches: int = 20
    finetune_steps: int = 40
    batch_size: int = 64
    lr: float = 0.01
    gradient_batches: int = 2  # labelled batches for gradient-based importance
    eval_samples: int | None = 2000  # validation examples scored per candidate; null = all

    def __post_init__(self) -> None:
        if min(self.bn_batches, self.finetune_steps, self.gradient_batches) < 0:
            raise ValueError("bn_batches, finetune_steps and gradient_batches must be >= 0.")
        if self.batch_size < 1 or self.lr <= 0:
            raise ValueError("`batch_size >= 1` and `lr > 0` must hold.")
        if self.eval_samples is not None and self.eval_samples < 1:
            raise ValueError(f"`eval_samples >= 1` must hold, but got {self.eval_samples}.")


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str = ""
    rules: tuple[GroupRule, ...] = ()
    default: GroupRule = field(default_factory=GroupRule)
    round_to: tuple[int, ...] = (1,)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    parity_atol: float = 1e-3  # max |ONNX - PyTorch| before a candidate fails export
    version: int = 1

    def __post_init__(self) -> None:
        if not self.round_to or any(r < 1 for r in self.round_to):
            raise ValueError(f"`round_to` must list whole numbers >= 1, but got {self.round_to}.")
        if self.parity_atol <= 0:
            raise ValueError(f"`parity_atol > 0` must hold, but got {self.parity_atol}.")
        if self.version != 1:
            raise ValueError(f"unsupported space version {self.version}; this autoprune reads 1.")

    @property
    def hash(self) -> str:
        from dataclasses import asdict

        data = asdict(self)
        data.pop("description")
        return stable_hash(data)


@dataclass(frozen=True)
class SpaceGroup:
    info: GroupInfo
    rule: GroupRule


@dataclass(frozen=True)
class ResolvedSpace:
    """A space matched against one model: the searchable groups and their domains."""

    space: SearchSpace
    groups: tuple[SpaceGroup, ...]

    def suggest(self, trial: Any) -> PruningPlan:
        """Ask an Optuna trial for a method (and ratio) per group and a round_to."""
        choices = {}
        for g in self.groups:
            method = trial.suggest_categorical(f"{g.info.name}.method", list(g.rule.methods))
            if method == "none":
                choices[g.info.name] = GroupChoice("none", 0.0)
                continue
            r = g.rule.ratio
            ratio = trial.suggest_float(f"{g.info.name}.ratio", r.low, r.high, step=r.step)
            choices[g.info.name] = GroupChoice(method, round(ratio, 6))
        round_to = self.space.round_to[0]
        if len(self.space.round_to) > 1:
            round_to = trial.suggest_categorical("round_to", list(self.space.round_to))
        return PruningPlan(choices, round_to)

    def baseline_params(self) -> dict[str, Any]:
        """Optuna parameters of the unpruned model (enqueued as trial 0)."""
        params: dict[str, Any] = {}
        for g in self.groups:
            if "none" in g.rule.methods:
                params[f"{g.info.name}.method"] = "none"
            else:  # 'none' not allowed: the smallest ratio of the first method
                params[f"{g.info.name}.method"] = g.rule.methods[0]
                params[f"{g.info.name}.ratio"] = g.rule.ratio.low
        if len(self.space.round_to) > 1:
            params["round_to"] = min(self.space.round_to)
        return params

    def uniform_params(self, ratio: float, method: str = "l1") -> dict[str, Any]:
        """Optuna parameters of 'every group cut by ``ratio``', what users try by hand.

        The ratio is clipped to each group's range and step; a group whose rule does not
        allow ``method`` uses its first other method. ``round_to`` is the largest offered,
        since that is what a hand-tuned plan would use for vector units.
        """
        params: dict[str, Any] = {}
        for g in self.groups:
            allowed = [m for m in g.rule.methods if m != "none"]
            params[f"{g.info.name}.method"] = method if method in allowed else allowed[0]
            r = g.rule.ratio
            steps = round((min(max(ratio, r.low), r.high) - r.low) / r.step)
            params[f"{g.info.name}.ratio"] = round(min(r.low + steps * r.step, r.high), 6)
        if len(self.space.round_to) > 1:
            params["round_to"] = max(self.space.round_to)
        return params

    def smallest_plan(self) -> PruningPlan:
        """The most aggressive plan the space allows (for the reachable-latency check)."""
        choices = {}
        for g in self.groups:
            methods = [m for m in g.rule.methods if m != "none"]
            if methods:
                choices[g.info.name] = GroupChoice(methods[0], g.rule.ratio.high)
        return PruningPlan(choices, max(self.space.round_to))


def spaces_dir() -> Path:
    return repo_dir("search_spaces", SPACES_ENV)


def available_spaces() -> dict[str, Path]:
    folder = spaces_dir()
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def load_space(name_or_path: str | Path = "default") -> SearchSpace:
    """Load a search space by name (``default``) or YAML path; errors name file and key."""
    return load_named(SearchSpace, name_or_path, available_spaces(), "search space")


def resolve(space: SearchSpace, model, example_input, ignored_layers: tuple[str, ...] = ()) -> ResolvedSpace:
    """Match the space's rules against the model's prunable groups (precedence above)."""
    types = {name: type(m).__name__ for name, m in model.named_modules()}
    groups = []
    for info in find_groups(model, example_input, ignored_layers):
        rule = _rule_for(space, info, types)
        if rule.active:
            groups.append(SpaceGroup(info, rule))
    return ResolvedSpace(space, tuple(groups))


def _rule_for(space: SearchSpace, info: GroupInfo, types: dict[str, str]) -> GroupRule:
    for rule in space.rules:
        if not rule.match.startswith("re:") and rule.match in info.members:
            return rule
    for rule in space.rules:
        if any(rule.matches(layer, types[layer]) for layer in info.members):
            return rule
    return space.default
