from __future__ import annotations

import optuna
import pytest
import torch

from autoprune.errors import ConfigError
from autoprune.pruning import GroupChoice
from autoprune.space import available_spaces, load_space, resolve
from autoprune.tasks.models import CifarResNet


def _space(tmp_path, body: str):
    f = tmp_path / "s.yaml"
    f.write_text("version: 1\n" + body)
    return load_space(f)


def test_every_shipped_space_loads():
    assert "default" in available_spaces()
    for name in available_spaces():
        assert load_space(name).name == name


def test_unknown_space_lists_known():
    with pytest.raises(ConfigError, match=r"unknown search space 'defualt'.*Did you mean 'default'"):
        load_space("defualt")


@pytest.mark.parametrize(
    "body, message",
    [
        ("default: {methods: [l1, magic]}\n", r"s\.yaml\.default: unknown method\(s\) \['magic'\]"),
        ("default: {ratio: {low: 0.5, high: 1.2}}\n", r"low <= high < 1"),
        ("round_to: [0]\n", r"round_to"),
        ("recovery: {finetune_steps: -1}\n", r"finetune_steps"),
        ("rules: [{match: 're:(', methods: [l1]}]\n", r"bad regular expression"),
        ("rulez: []\n", r"unknown key\(s\) rulez"),
        ("recovery: {lr: fast}\n", r"recovery\.lr: expected a number"),
        ("default: {methods: [none, drop_block]}\n", r"removes whole blocks: use the space's `depth:`"),
        ("default: {round_to: [0, 8]}\n", r"round_to"),
        ("constraints: {max_params_ratio: -1}\n", r"max_params_ratio > 0"),
        ("size_metric: zstd\n", r"size_metric: expected one of file, gzip"),
        ("recovery: {iterations: 0}\n", r"iterations >= 1"),
        ("recovery: {rungs: [160, 100]}\n", r"`rungs` must be increasing totals above finetune_steps"),
        ("recovery: {finetune_steps: 200, rungs: [160]}\n", r"above finetune_steps \(200\)"),
        ("recovery: {distill_weight: 1.5}\n", r"0 <= distill_weight <= 1"),
        ("recovery: {final_members: 0}\n", r"final_members >= 1"),
    ],
)
def test_malformed_space_names_file_and_key(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        _space(tmp_path, body)


def _resnet():
    torch.manual_seed(0)
    return CifarResNet(1, (8, 16, 32), 1, 10).eval(), torch.randn(1, 1, 12, 12)


def test_residual_layers_form_one_group():
    model, x = _resnet()
    resolved = resolve(load_space("default"), model, x, ("fc",))
    groups = {g.info.name: g.info for g in resolved.groups}
    # The stem output feeds the stage-1 residual add: stem and block conv2 are coupled.
    stem = groups["stem.0"]
    assert "layers.0.conv2" in stem.members
    assert "fc" not in [m for g in groups.values() for m in g.members]
    assert {"layers.0.conv1", "layers.1.conv1", "layers.2.conv1"} <= set(groups)


def test_rule_precedence_exact_then_pattern_order_then_default(tmp_path):
    model, x = _resnet()
    space = _space(
        tmp_path,
        """
default: {methods: [l1]}
rules:
  - {match: "layers.*.conv1", methods: [l2]}
  - {match: "re:layers\\\\.1\\\\..*", methods: [random]}
  - {match: "layers.1.conv1", methods: [taylor]}
  - {match: "layers.2.conv1", prune: false}
  - {match: "*", types: [Linear], methods: [random]}
""",
    )
    resolved = {g.info.name: g.rule.methods for g in resolve(space, model, x, ("fc",)).groups}
    assert resolved["layers.1.conv1"] == ("taylor",)  # exact name beats every pattern
    assert resolved["layers.0.conv1"] == ("l2",)  # first matching pattern in file order
    assert "layers.2.conv1" not in resolved  # prune: false keeps it whole
    assert resolved["stem.0"] == ("l1",)  # types filter: Conv2d is not Linear -> default


def test_suggest_gives_a_plan_through_a_real_study(tmp_path):
    model, x = _resnet()
    resolved = resolve(load_space("default"), model, x, ("fc",))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", directions=["maximize", "minimize"])
    study.enqueue_trial(resolved.baseline_params())
    trial = study.ask()
    assert resolved.suggest(trial).is_identity  # baseline parameters -> unpruned
    plan = resolved.suggest(study.ask())
    assert set(plan.groups) == {g.info.name for g in resolved.groups}
    for choice in plan.groups.values():
        assert isinstance(choice, GroupChoice)
        assert choice.method in ("none", "l1") and 0.0 <= choice.ratio <= 0.9  # shared ratio + deviation, clipped
    assert plan.round_to == 8


def test_uniform_params_clip_to_each_rule(tmp_path):
    model, x = _resnet()
    space = _space(tmp_path, """
default: {methods: [none, l1, l2], ratio: {low: 0.1, high: 0.7, step: 0.1}}
rules:
  - {match: "stem.0", methods: [taylor], ratio: {low: 0.0, high: 0.2, step: 0.05}}
round_to: [1, 8]
""")
    resolved = resolve(space, model, x, ("fc",))
    params = resolved.uniform_params(0.5)
    assert params["stem.0.method"] == "taylor" and params["stem.0.ratio"] == 0.2  # clipped to the rule's high
    assert params["layers.0.conv1.method"] == "l1" and params["layers.0.conv1.ratio"] == 0.5
    assert params["round_to"] == 8
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.enqueue_trial(params)
    plan = resolved.suggest(study.ask())
    assert plan.groups["layers.0.conv1"] == GroupChoice("l1", 0.5) and plan.round_to == 8


def test_depth_per_group_round_to_and_constraints_reach_the_plan(tmp_path):
    model, x = _resnet()
    space = _space(tmp_path, """
default: {methods: [l1], ratio: {low: 0.5, high: 0.5, step: 0.1}, round_to: [1, 4]}
depth: {match: "layers.*"}
constraints: {max_params_ratio: 0.5}
""")
    resolved = resolve(space, model, x, ("fc",))
    assert resolved.blocks and all(b.startswith("layers.") for b in resolved.blocks)
    study = optuna.create_study(directions=["maximize", "minimize"])
    params = resolved.uniform_params(0.5)
    params.update({f"{b}.drop": True for b in resolved.blocks})
    params["stem.0.round_to"] = 4
    study.enqueue_trial(params)
    plan = resolved.suggest(study.ask())
    assert plan.drop_blocks == resolved.blocks
    assert plan.groups["stem.0"].round_to == 4
    assert resolved.smallest_plan().drop_blocks == resolved.blocks
    assert space.constraints.violation(60, 60, 100, 100) == "parameters 60 exceed the space's cap of 50"
    assert space.constraints.violation(50, 10, 100, 100) is None
