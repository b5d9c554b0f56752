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

**Parametrization.** By default every group has its own method and ratio parameters. A
space with ``global_ratio:`` is searched in one dimension that carries most of the
effect instead: one ratio for every group (the uniform ladder is its axis), plus a
small per-group deviation (``<group>.deviation``), each group's ratio clipped to its
rule's range and step; a group's method is a parameter only where its rule lists more
than one. A space with ``screen:`` screens many cheap plans and trains only the best
(``autoprune/screen.py``).

Beyond per-group rules a space may also search **depth** (``depth:`` which residual
blocks may be removed whole), cap the model with **constraints** (parameter count or
nonzero weights ``||W||_0``, absolute or as a share of the unpruned model), choose the
**size** objective (``size_metric``: ONNX file bytes or gzip-compressed bytes) and
prune **iteratively** (``recovery.iterations``: prune a share, fine-tune, prune more).

Example:
    >>> space = load_space("default")
    >>> resolved = resolve(space, task)
    >>> plan = resolved.suggest(optuna_trial)
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from autoprune._config import data_dir, load_named, stable_hash
from autoprune.limits import SETUP_TIMEOUT_S
from autoprune.pruning import METHODS, GroupChoice, GroupInfo, PruningPlan, find_blocks, trace

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
    round_to: tuple[int, ...] = ()  # this group's channel multiple(s); empty: the space's

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(
                f"unknown method(s) {unknown}; known: {sorted(METHODS)} (see `autoprune methods`)."
            )
        if not self.methods:
            raise ValueError("`methods` must list at least one method.")
        depth = [m for m in self.methods if METHODS[m].kind == "depth"]
        if depth:
            raise ValueError(f"{depth[0]!r} removes whole blocks: use the space's `depth:` section, not a rule.")
        if any(r < 1 for r in self.round_to):
            raise ValueError(f"`round_to` must list whole numbers >= 1, but got {self.round_to}.")
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
    """How candidates are recovered after surgery, and how far.

    Every candidate gets BN recalibration and ``finetune_steps`` of fine-tuning (rung
    0). A candidate within the budget whose accuracy at a rung is within
    ``promote_margin`` points of the best accuracy any at-least-as-fast feasible trial
    had *at the same rung* goes on to the next rung (``rungs``: total steps), so only the
    promising ones pay for long recovery and every comparison is between equal
    fidelities. ``final_steps`` is the total a finalized front member gets. Distillation
    from the unpruned model (``distill_weight`` > 0) applies at every rung.
    """

    bn_batches: int = 20
    finetune_steps: int = 40
    batch_size: int = 64
    lr: float = 0.01
    iterations: int = 1  # >1: prune 1/k of the plan, fine-tune steps/k, repeat k times
    gradient_batches: int = 2  # labelled batches for gradient-based importance
    eval_samples: int | None = 2000  # validation examples scored per candidate; null = all
    distill_weight: float = 0.5  # share of the distillation loss; 0 = labels only
    distill_temperature: float = 4.0
    rungs: tuple[int, ...] = (160, 640)  # total fine-tune steps of the later rungs
    promote_margin: float = 1.0  # accuracy points behind the rung's front that still go on
    promote_share: float = 0.5  # only the better half of a rung, by distance to its front, goes on (cost)
    final_steps: int = 800  # fine-tune steps a finalized member gets on top of its search-time ones
    final_batch_size: int = 128  # its batch (larger than the search's: the last stretch pays for it)
    final_lr: float = 0.03  # its peak learning rate
    final_members: int = 4  # front members finalized at most (see finalize.choose)

    def __post_init__(self) -> None:
        if min(self.bn_batches, self.finetune_steps, self.gradient_batches) < 0:
            raise ValueError("bn_batches, finetune_steps and gradient_batches must be >= 0.")
        if self.batch_size < 1 or self.lr <= 0 or self.iterations < 1:
            raise ValueError("`batch_size >= 1`, `lr > 0` and `iterations >= 1` must hold.")
        if self.eval_samples is not None and self.eval_samples < 1:
            raise ValueError(f"`eval_samples >= 1` must hold, but got {self.eval_samples}.")
        if not 0.0 <= self.distill_weight <= 1.0 or self.distill_temperature <= 0:
            raise ValueError("`0 <= distill_weight <= 1` and `distill_temperature > 0` must hold, but got "
                             f"(distill_weight={self.distill_weight}, "
                             f"distill_temperature={self.distill_temperature}).")
        steps = (self.finetune_steps, *self.rungs)
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(f"`rungs` must be increasing totals above finetune_steps ({self.finetune_steps}), "
                             f"but got {list(self.rungs)}.")
        if not 0 < self.promote_share <= 1:
            raise ValueError(f"`0 < promote_share <= 1` must hold, but got {self.promote_share}.")
        if (self.promote_margin < 0 or self.final_steps < 0 or self.final_members < 1 or self.final_lr <= 0
                or self.final_batch_size < 1):
            raise ValueError("`promote_margin >= 0`, `final_steps >= 0`, `final_lr > 0`, `final_batch_size >= 1` "
                             "and `final_members >= 1` must hold.")

    @property
    def all_rungs(self) -> tuple[int, ...]:
        """Total fine-tune steps at each rung, the first one included."""
        return (self.finetune_steps, *self.rungs)


@dataclass(frozen=True)
class DepthRule:
    """Which residual blocks (identity shortcut) each candidate may remove whole."""

    match: str = "*"  # glob or re:<regex> over block names, e.g. "layer*.1"

    def matches(self, block: str) -> bool:
        if self.match.startswith("re:"):
            return re.fullmatch(self.match[3:], block) is not None
        return fnmatch.fnmatchcase(block, self.match)


@dataclass(frozen=True)
class Constraints:
    """Caps every candidate must respect; a candidate over one fails right after pruning
    (cheap to count), with the figure in its reason. ``*_ratio`` is relative to the
    unpruned model; ``nonzero`` counts weights that are not zero (||W||_0)."""

    max_params: int | None = None
    max_nonzero: int | None = None
    max_params_ratio: float | None = None
    max_nonzero_ratio: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_params", "max_nonzero", "max_params_ratio", "max_nonzero_ratio"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"`{name} > 0` must hold, but got {value}.")

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.max_params, self.max_nonzero,
                                           self.max_params_ratio, self.max_nonzero_ratio))

    def violation(self, params: int, nonzero: int, base_params: int, base_nonzero: int) -> str | None:
        """Why (params, nonzero) break a cap, or None."""
        checks = [
            ("parameters", params, self.max_params),
            ("nonzero weights", nonzero, self.max_nonzero),
            ("parameters", params, self.max_params_ratio and self.max_params_ratio * base_params),
            ("nonzero weights", nonzero, self.max_nonzero_ratio and self.max_nonzero_ratio * base_nonzero),
        ]
        for what, value, cap in checks:
            if cap is not None and value > cap:
                return f"{what} {value:,} exceed the space's cap of {int(cap):,}"
        return None


@dataclass(frozen=True)
class StagingConfig:
    """Staged evaluation (see ``objective.Stager``): which candidates get their fine-tune."""

    enabled: bool = True
    over_budget_factor: float = 1.5  # measured latency above budget x this: no fine-tune
    min_observations: int = 3  # fine-tune gains seen before judging a candidate dominated
    margin: float = 1.0  # accuracy points of slack on the best gain seen

    def __post_init__(self) -> None:
        if self.over_budget_factor < 1 or self.min_observations < 1 or self.margin < 0:
            raise ValueError("`over_budget_factor >= 1`, `min_observations >= 1` and `margin >= 0` must hold.")


@dataclass(frozen=True)
class PrecisionConfig:
    """The numeric precisions the search chooses between, per candidate (see
    ``autoprune/quantize.py``), and how INT8 is calibrated. Only the choices the
    device profile supports (``precision.supported``) are offered."""

    choices: tuple[str, ...] = ("float32",)
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: int = 200  # training inputs the activation ranges are taken from
    percentile: float = 99.999  # the percentile method's cut

    def __post_init__(self) -> None:
        from autoprune.profiles import PRECISIONS

        unknown = [p for p in self.choices if p not in PRECISIONS]
        if unknown or not self.choices:
            raise ValueError(f"`choices` must list precisions among {', '.join(PRECISIONS)}, "
                             f"but got {list(self.choices)}.")
        if self.calibration_samples < 1 or not 50 < self.percentile <= 100:
            raise ValueError("`calibration_samples >= 1` and `50 < percentile <= 100` must hold.")


@dataclass(frozen=True)
class GlobalRatio:
    """One ratio shared by every group (``ratio``), plus a per-group ``deviation``
    (``low == high == 0``: none, the plain uniform ladder)."""

    range: RatioRange = field(default_factory=lambda: RatioRange(0.0, 0.9, 0.05))
    deviation: tuple[float, float, float] = (-0.2, 0.2, 0.1)  # low, high, step

    def __post_init__(self) -> None:
        low, high, step = self.deviation
        if not (-1 < low <= 0 <= high < 1 and step > 0):
            raise ValueError(f"`deviation` is [low, high, step] with -1 < low <= 0 <= high < 1 and step > 0, "
                             f"but got {list(self.deviation)}.")


@dataclass(frozen=True)
class ScreenConfig:
    """Screen wide, train few (``autoprune/screen.py``): ``plans`` plans of the space
    are pruned, re-estimated and scored cheaply; only the best ``--trials`` are trained.

    The score is the task's metric on ``samples`` validation examples after BatchNorm
    re-estimation on ``bn_batches`` training batches (EagleEye's adaptive BN) and
    ``steps`` distilled fine-tune steps at ``lr``. ``benchmarks/fidelity.py`` measures
    how well it ranks candidates against their final accuracy.
    """

    plans: int = 0  # 0: no screen (every trial is the sampler's and is trained)
    bn_batches: int = 10
    steps: int = 0
    lr: float = 0.05
    batch_size: int = 64
    samples: int = 1000
    near: float = 1.0  # accuracy points behind the screen's front that a plan may be and still be trained
    # 1: train the screen's choice at once; 2: half of it, then the rest where the
    # trained half's front is steepest (autoprune/screen.py: between)
    waves: int = 1

    def __post_init__(self) -> None:
        if min(self.plans, self.bn_batches, self.steps) < 0 or self.batch_size < 1 or self.samples < 1:
            raise ValueError("`plans`, `bn_batches` and `steps` must be >= 0, `batch_size` and `samples` >= 1.")
        if self.waves not in (1, 2):
            raise ValueError(f"`waves` is 1 or 2, but got {self.waves}.")
        if self.lr <= 0 or self.near < 0:
            raise ValueError(f"`lr > 0` and `near >= 0` must hold, but got (lr={self.lr}, near={self.near}).")


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str = ""
    rules: tuple[GroupRule, ...] = ()
    default: GroupRule = field(default_factory=GroupRule)
    round_to: tuple[int, ...] = (1,)
    depth: DepthRule | None = None  # null: no block removal
    constraints: Constraints = field(default_factory=Constraints)
    size_metric: Literal["file", "gzip"] = "file"  # the size objective: ONNX bytes or gzip bytes
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    staging: StagingConfig = field(default_factory=StagingConfig)
    parity_atol: float = 1e-3  # a candidate fails export if |ONNX - PyTorch| exceeds
    parity_rtol: float = 1e-3  # parity_atol + parity_rtol x max |PyTorch output|
    prune_timeout_s: float | None = 300.0  # surgery taking longer fails the trial; null = none
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    global_ratio: GlobalRatio | None = None  # one shared ratio (+ deviations) instead of one per group
    screen: ScreenConfig = field(default_factory=ScreenConfig)
    version: int = 1

    def __post_init__(self) -> None:
        if self.prune_timeout_s is not None and self.prune_timeout_s <= 0:
            raise ValueError(f"`prune_timeout_s > 0` must hold, but got {self.prune_timeout_s}.")
        if not self.round_to or any(r < 1 for r in self.round_to):
            raise ValueError(f"`round_to` must list whole numbers >= 1, but got {self.round_to}.")
        if self.parity_atol <= 0:
            raise ValueError(f"`parity_atol > 0` must hold, but got {self.parity_atol}.")
        if not 0 <= self.parity_rtol < 1:
            raise ValueError(f"`0 <= parity_rtol < 1` must hold, but got {self.parity_rtol}.")
        if self.version != 1:
            raise ValueError(f"unsupported space version {self.version}; this autoprune reads 1.")

    def with_screen_plans(self, plans: int) -> SearchSpace:
        """This space screening ``plans`` plans (``--screen-plans``; 0: no screen)."""
        return dataclasses.replace(self, screen=dataclasses.replace(self.screen, plans=plans))

    @property
    def hash(self) -> str:
        from dataclasses import asdict

        data = asdict(self)
        data.pop("description")
        if data["screen"]["waves"] == 1:  # studies made before waves existed resume
            data["screen"].pop("waves")
        for key, default in _ADDED_LATER.items():  # studies made before they existed resume
            if data[key] == default:
                data.pop(key)
        return stable_hash(data)


# keys added after studies existed, hashed only when not at their default
_ADDED_LATER = {"parity_rtol": 1e-3, "precision": {"choices": ("float32",), "calibration": "minmax",
                                                    "calibration_samples": 200, "percentile": 99.999},
                "global_ratio": None,
                "screen": {k: v for k, v in dataclasses.asdict(ScreenConfig()).items() if k != "waves"}}


@dataclass(frozen=True)
class SpaceGroup:
    info: GroupInfo
    rule: GroupRule
    depth: float = 0.5  # where its layers sit in the model: 0 the first group, 1 the last


# Tilts of a shared-ratio plan (ResolvedSpace.tilted_params): one deviation step more
# pruning on one part of the model and one less on another. Random deviations are
# dominated on the screen by the uniform plan of the same latency (each group's offset
# is noise); a tilt moves channels between parts that differ in what they cost and do.
TILTS = ("early", "late", "inner", "shared")


@dataclass(frozen=True)
class ResolvedSpace:
    """A space matched against one model: the searchable groups and their domains."""

    space: SearchSpace
    groups: tuple[SpaceGroup, ...]
    blocks: tuple[str, ...] = ()  # residual blocks the search may remove
    protected: dict[str, str] = field(default_factory=dict)  # groups never offered -> why
    warnings: tuple[str, ...] = ()  # Torch-Pruning's warnings while tracing (first lines)
    found: tuple[GroupInfo, ...] = ()  # every prunable group, searched or not
    # the precisions offered (the space's choices the device supports; see offer()) and
    # the channel multiple each needs on the device
    precisions: tuple[str, ...] = ("float32",)
    precision_round_to: dict[str, int] = field(default_factory=dict)

    def offer(self, profile, only: tuple[str, ...] | None = None) -> ResolvedSpace:
        """This space for ``profile``: its precision choices (or ``only``, e.g. from
        ``--precision``) that the device supports, float32 always among them.

        Raises:
            ValueError: a precision in ``only`` is not supported; the message names what is.
        """
        wanted = only or self.space.precision.choices
        supported = profile.precision.supported
        missing = [p for p in wanted if p not in supported]
        if only and missing:
            raise ValueError(f"device profile {profile.name!r} does not run precision {', '.join(missing)}; it "
                             f"supports {', '.join(supported)} (its `precision.supported`).")
        # float32 always: the baseline (trial 0) is the user's model as it is
        offered = ("float32", *(p for p in wanted if p in supported and p != "float32"))
        return dataclasses.replace(self, precisions=offered,
                                   precision_round_to={p: profile.round_to(p) for p in offered})

    def _round(self, value: int | None, precision: str) -> int | None:
        """``value`` raised to a multiple of what ``precision``'s kernels need here."""
        need = self.precision_round_to.get(precision, 1)
        if value is None or need == 1:
            return value
        return value * need // math.gcd(value, need)

    def _suggest_groups(self, trial: Any) -> dict[str, GroupChoice]:
        choices = {}
        for g in self.groups:
            method = trial.suggest_categorical(f"{g.info.name}.method", list(g.rule.methods))
            # an audit event (PEP 578; a no-op unless a hook listens): the test harness
            # kills a search here, with a trial's parameters half stored
            sys.audit("autoprune.stage", "suggest")
            if method == "none":
                choices[g.info.name] = GroupChoice("none", 0.0)
                continue
            r = g.rule.ratio
            ratio = trial.suggest_float(f"{g.info.name}.ratio", r.low, r.high, step=r.step)
            group_round = _group_round(trial, g)
            choices[g.info.name] = GroupChoice(method, round(ratio, 6), group_round)
        return choices

    def _suggest_global(self, trial: Any) -> dict[str, GroupChoice]:
        gr = self.space.global_ratio
        assert gr is not None
        shared = trial.suggest_float("ratio", gr.range.low, gr.range.high, step=gr.range.step)
        low, high, step = gr.deviation
        choices = {}
        for g in self.groups:
            methods = [m for m in g.rule.methods if m != "none"] or ["none"]
            method = methods[0]
            if len(methods) > 1:
                method = trial.suggest_categorical(f"{g.info.name}.method", methods)
            sys.audit("autoprune.stage", "suggest")
            dev = trial.suggest_float(f"{g.info.name}.deviation", low, high, step=step) if high > low else 0.0
            ratio = _snap(shared + dev, g.rule.ratio) if shared > 0 else 0.0  # ratio 0: the unpruned model
            group_round = _group_round(trial, g)
            choices[g.info.name] = GroupChoice(method if ratio > 0 else "none", ratio, group_round)
        return choices

    def suggest(self, trial: Any) -> PruningPlan:
        """Ask an Optuna trial for a method (and ratio) per group, round_to, and which
        blocks to drop. Parameters are named ``<group>.method``, ``<group>.ratio``,
        ``<group>.round_to``, ``round_to`` and ``<block>.drop``; with ``global_ratio``,
        ``ratio`` and ``<group>.deviation`` replace the per-group ratios."""
        choices = self._suggest_global(trial) if self.space.global_ratio else self._suggest_groups(trial)
        round_to = self.space.round_to[0]
        if len(self.space.round_to) > 1:
            round_to = trial.suggest_categorical("round_to", list(self.space.round_to))
        drops = tuple(b for b in self.blocks if trial.suggest_categorical(f"{b}.drop", [False, True]))
        precision = self.precisions[0]
        if len(self.precisions) > 1:
            precision = trial.suggest_categorical("precision", list(self.precisions))
        if self.precision_round_to.get(precision, 1) > 1:
            choices = {k: dataclasses.replace(c, round_to=self._round(c.round_to, precision))
                       for k, c in choices.items()}
        return PruningPlan(choices, self._round(round_to, precision), drops, precision)

    def baseline_params(self) -> dict[str, Any]:
        """Optuna parameters of the unpruned model (enqueued as trial 0)."""
        if self.space.global_ratio:
            return self._global_params(0.0, None, "float32")
        params: dict[str, Any] = {}
        for g in self.groups:
            if "none" in g.rule.methods:
                params[f"{g.info.name}.method"] = "none"
            else:  # 'none' not allowed: the smallest ratio of the first method
                params[f"{g.info.name}.method"] = g.rule.methods[0]
                params[f"{g.info.name}.ratio"] = g.rule.ratio.low
            if len(g.rule.round_to) > 1:
                params[f"{g.info.name}.round_to"] = min(g.rule.round_to)
        if len(self.space.round_to) > 1:
            params["round_to"] = min(self.space.round_to)
        params.update({f"{b}.drop": False for b in self.blocks})
        if len(self.precisions) > 1:
            params["precision"] = "float32"
        return params

    def uniform_params(self, ratio: float, method: str = "l1", precision: str | None = None) -> dict[str, Any]:
        """Optuna parameters of 'every group cut by ``ratio``', what users try by hand.

        The ratio is clipped to each group's range and step; a group whose rule does not
        allow ``method`` uses its first other method. ``round_to`` is the largest offered,
        since that is what a hand-tuned plan would use for vector units.
        """
        if self.space.global_ratio:
            return self._global_params(ratio, method, precision)
        params: dict[str, Any] = {}
        for g in self.groups:
            allowed = [m for m in g.rule.methods if m != "none"]
            params[f"{g.info.name}.method"] = method if method in allowed else allowed[0]
            params[f"{g.info.name}.ratio"] = _snap(ratio, g.rule.ratio)
            if len(g.rule.round_to) > 1:
                params[f"{g.info.name}.round_to"] = max(g.rule.round_to)
        return self._whole_model_params(params, max, precision)

    def _global_params(self, ratio: float, method: str | None, precision: str | None) -> dict[str, Any]:
        """``uniform_params`` of a ``global_ratio`` space: the shared ratio, no deviation."""
        gr = self.space.global_ratio
        assert gr is not None
        params: dict[str, Any] = {"ratio": _snap(ratio, gr.range)}
        for g in self.groups:
            allowed = [m for m in g.rule.methods if m != "none"]
            if len(allowed) > 1:
                params[f"{g.info.name}.method"] = method if method in allowed else allowed[0]
            if gr.deviation[1] > gr.deviation[0]:
                params[f"{g.info.name}.deviation"] = 0.0
            if len(g.rule.round_to) > 1:
                params[f"{g.info.name}.round_to"] = (max if ratio > 0 else min)(g.rule.round_to)
        return self._whole_model_params(params, max if ratio > 0 else min, precision)

    def _whole_model_params(self, params: dict[str, Any], pick, precision: str | None) -> dict[str, Any]:
        """``params`` with the plan-wide ones: ``round_to`` (``pick`` of the offered), no
        block dropped, and ``precision`` (the first offered when it is not)."""
        if len(self.space.round_to) > 1:
            params["round_to"] = pick(self.space.round_to)
        params.update({f"{b}.drop": False for b in self.blocks})
        if len(self.precisions) > 1:
            params["precision"] = precision if precision in self.precisions else self.precisions[0]
        return params

    def tilted_params(self, params: dict[str, Any], tilt: str) -> dict[str, Any] | None:
        """``params`` (a plan of a ``global_ratio`` space) tilted by one deviation step:
        ``early`` prunes the first third of the groups more and the last third less
        (``late`` the reverse); ``inner`` prunes the groups whose channels stay inside one
        layer (a block's first convolution) more and the groups shared by several layers
        (a residual stream) less (``shared`` the reverse). None where the space has no
        deviations or the tilt would move every group alike (that is a ladder step)."""
        gr = self.space.global_ratio
        if gr is None or not gr.deviation[1] > gr.deviation[0] or tilt not in TILTS or not params.get("ratio"):
            return None  # (shared ratio 0 is the unpruned model, whatever the deviations)
        low, high, step = gr.deviation
        if tilt in ("early", "late"):
            sides = [1 if g.depth < 1 / 3 else -1 if g.depth >= 2 / 3 else 0 for g in self.groups]
        else:
            sides = [1 if len(g.info.members) == 1 else -1 for g in self.groups]
        if tilt in ("late", "shared"):
            sides = [-side for side in sides]
        if len(set(sides)) < 2:
            return None
        out = dict(params)
        for g, side in zip(self.groups, sides):
            key = f"{g.info.name}.deviation"
            out[key] = round(min(max(params.get(key, 0.0) + side * step, low), high), 6)
        return out

    @property
    def fastest_precision(self) -> str:
        """The offered precision most likely fastest (INT8 static, else the first): the
        warm start's unpruned and uniform plans use it. Not always right: INT8's
        quantize/dequantize steps can cost more than they save in a small model (on a
        Zen 3 core the reference model's most-pruned plan took 0.22 ms at INT8 and 0.14
        ms at float32), so the budget check times every precision (``smallest_plans``)."""
        return "int8" if "int8" in self.precisions else self.precisions[0]

    def smallest_plans(self) -> dict[str, PruningPlan]:
        """The most aggressive plan the space allows at each offered precision, for the
        reachable-latency check (which is fastest is the device's to say)."""
        return {p: self.smallest_plan(p) for p in self.precisions}

    def smallest_plan(self, precision: str | None = None) -> PruningPlan:
        """The most aggressive plan the space allows, at ``precision`` (default: the
        fastest guess)."""
        precision = precision or self.fastest_precision
        choices = {}
        for g in self.groups:
            methods = [m for m in g.rule.methods if m != "none"]
            structured = [m for m in methods if METHODS[m].kind == "structured"]
            if structured or methods:  # a structured method shrinks latency most
                group_round = self._round(max(g.rule.round_to) if g.rule.round_to else None, precision)
                high = g.rule.ratio.high
                if self.space.global_ratio:  # the shared ratio's top plus the largest deviation
                    high = _snap(self.space.global_ratio.range.high + self.space.global_ratio.deviation[1],
                                 g.rule.ratio)
                choices[g.info.name] = GroupChoice((structured or methods)[0], high, group_round)
        return PruningPlan(choices, self._round(max(self.space.round_to), precision), self.blocks, precision)


def _group_round(trial: Any, g: SpaceGroup) -> int | None:
    """A group's own channel multiple: its rule's one value, or a searched choice."""
    if len(g.rule.round_to) == 1:
        return g.rule.round_to[0]
    if g.rule.round_to:
        return trial.suggest_categorical(f"{g.info.name}.round_to", list(g.rule.round_to))
    return None


def _snap(ratio: float, r: RatioRange) -> float:
    """``ratio`` clipped to the range ``r`` and rounded to its step."""
    steps = round((min(max(ratio, r.low), r.high) - r.low) / r.step)
    return round(min(r.low + steps * r.step, r.high), 6)


def spaces_dir() -> Path:
    """The folder of the named spaces: ``$AUTOPRUNE_SPACES_DIR``, else the shipped ones."""
    return data_dir("search_spaces", SPACES_ENV)


def available_spaces() -> dict[str, Path]:
    folder = spaces_dir()
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def retired_space(name: str, space_hash: str, screen_plans: int | None = None) -> SearchSpace | None:
    """The earlier version of the named space whose hash a study recorded, if shipped
    (with ``screen_plans``: the version that, screening that many plans, has that hash;
    it is returned as shipped, its own ``screen.plans`` unchanged).

    A shipped space that changes keeps its old version in ``search_spaces/retired/``
    (``<name>-<n>.yaml``, ``name:`` set to the name studies recorded), so a study made
    with it still resumes, reports and exports under the space it was made with.
    """
    for path in sorted((spaces_dir() / "retired").glob(f"{name}-*.yaml")):
        old = load_named(SearchSpace, path, {}, "search space")
        hashed = old if screen_plans is None else old.with_screen_plans(screen_plans)
        if old.name == name and hashed.hash == space_hash:
            return old
    return None


def space_of(identity: dict[str, Any], *, screen_plans_applied: bool = True) -> SearchSpace:
    """The space a study was made with, from its identity (``config.json``): the named
    space, or its retired version of the recorded hash, with the study's ``--screen-plans``
    (``screen_plans_applied`` false: without them, for a command that applies its own).

    The recorded hash is the space's with those plans, so the retired version is found by
    it with them: a study made with ``--screen-plans`` (``make demo``'s) resumes too."""
    name, recorded, plans = identity["space"], identity.get("space_hash"), identity.get("screen_plans")
    space = load_space(name)
    if recorded not in (None, (space if plans is None else space.with_screen_plans(plans)).hash):
        space = retired_space(name, str(recorded), plans) or space
    return space.with_screen_plans(plans) if plans is not None and screen_plans_applied else space


def load_space(name_or_path: str | Path = "default") -> SearchSpace:
    """Load a search space by name (``default``) or YAML path; errors name file and key."""
    return load_named(SearchSpace, name_or_path, available_spaces(), "search space")


def resolve(space: SearchSpace, model, example_input, ignored_layers: tuple[str, ...] = ()) -> ResolvedSpace:
    """Match the space's rules against the model's prunable groups (precedence above)."""
    types = {name: type(m).__name__ for name, m in model.named_modules()}
    order = {name: i for i, name in enumerate(types)}
    traced = trace(model, example_input, ignored_layers)
    groups = []
    for info in traced.groups:
        rule = _rule_for(space, info, types)
        if rule.active:
            groups.append(SpaceGroup(info, rule))
    # depth: each group's rank by the mean position of its layers in the model
    place = sorted(range(len(groups)), key=lambda i: sum(order.get(m, 0) for m in groups[i].info.members)
                   / max(1, len(groups[i].info.members)))
    for rank, i in enumerate(place):
        groups[i] = dataclasses.replace(groups[i], depth=rank / max(1, len(groups) - 1))
    blocks = ()
    if space.depth is not None:
        blocks = tuple(b for b in find_blocks(model) if space.depth.matches(b))
    return ResolvedSpace(space, tuple(groups), blocks, traced.protected, traced.warnings, tuple(traced.groups))


def resolve_task(space: SearchSpace, task, timeout_s: float | None = SETUP_TIMEOUT_S,
                 memory_gb: float | None = None) -> ResolvedSpace:
    """:func:`resolve` for a task, with set-up's time and memory limits.

    Raises:
        SetupError: tracing raised, or ran out of time or memory; one line naming the
            model, the stage, the cause, and what to try.
    """
    from autoprune.errors import SetupError, first_line
    from autoprune.limits import LimitExceeded, default_setup_memory_gb, memory_limit, time_limit

    memory_gb = default_setup_memory_gb() if memory_gb is None else memory_gb
    model = f"{task.name} ({type(task.model).__name__}, input {tuple(task.input_shape)})"
    try:
        with time_limit(timeout_s, "tracing the model", "--setup-timeout-s"), \
                memory_limit(int(memory_gb * 2**30), "tracing the model", "--setup-memory-gb"):
            return resolve(space, task.model, task.example_input(1), task.ignored_layers)
    except (TimeoutError, LimitExceeded) as exc:
        cause, hint = str(exc), "raise the limit if the machine allows, or try a smaller input"
    except Exception as exc:  # noqa: BLE001 - anything Torch-Pruning raises is this model's set-up failure
        import traceback

        first = first_line(exc)[:200]
        where = traceback.extract_tb(exc.__traceback__)[-1]
        place = f"{Path(where.filename).parent.name}/{Path(where.filename).name}, {where.name}"
        if "torch_pruning" in Path(where.filename).parts:
            cause = f"Torch-Pruning's dependency graph raised {type(exc).__name__}: {first} (in {place})"
            hint = ("Torch-Pruning cannot trace an operation of this model (the place above names it); replace "
                    "that operation in the model (e.g. a channel shuffle written with reshape), or prune "
                    "another model")
        else:  # the model's own forward on the example input, or copying it
            cause = f"running the model on one example input raised {type(exc).__name__}: {first} (in {place})"
            hint = "check that the task's input_shape is what the model's forward expects"
    raise SetupError(f"cannot prepare model {model} for pruning: {cause}. Try: {hint}.") from None


def _rule_for(space: SearchSpace, info: GroupInfo, types: dict[str, str]) -> GroupRule:
    for rule in space.rules:
        if not rule.match.startswith("re:") and rule.match in info.members:
            return rule
    for rule in space.rules:
        if any(rule.matches(layer, types[layer]) for layer in info.members):
            return rule
    return space.default
