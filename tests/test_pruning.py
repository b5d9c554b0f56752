from __future__ import annotations

import pytest
import torch

from autoprune import pruning
from autoprune.pruning import GroupChoice, PruningPlan, channels_to_keep
from autoprune.tasks.models import CifarResNet


def _model():
    torch.manual_seed(0)
    return CifarResNet(1, (8, 16, 32), 1, 10).eval(), torch.randn(2, 1, 12, 12)


def _batches():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 1, 12, 12, generator=g), torch.randint(0, 10, (8,), generator=g))]


@pytest.mark.parametrize("method", ["l1", "l2", "taylor", "random"])
def test_every_method_prunes_physically_and_leaves_the_input_alone(method):
    model, x = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = PruningPlan({"layers.1.conv1": GroupChoice(method, 0.5), "stem.0": GroupChoice(method, 0.25)})
    pruned, widths = pruning.apply(model, plan, x[:1], ignored_layers=("fc",), gradient_batches=_batches())
    assert widths == {"layers.1.conv1": (16, 8), "stem.0": (8, 6)}
    assert pruned.layers[1].conv1.out_channels == 8
    assert pruned.layers[1].conv2.in_channels == 8
    # the residual group moves together: stem, block conv2 and the next block's input
    assert pruned.stem[0].out_channels == 6 and pruned.layers[0].conv2.out_channels == 6
    assert pruned.layers[1].shortcut[0].in_channels == 6
    assert pruned(x).shape == (2, 10)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"input model changed at {k}"
    assert model.stem[0].out_channels == 8


def test_l1_removes_the_smallest_norm_channels():
    model, x = _model()
    w = model.layers[0].conv1.weight.detach()
    norms = w.abs().sum(dim=(1, 2, 3)) + model.layers[0].conv2.weight.detach().abs().sum(dim=(0, 2, 3))
    plan = PruningPlan({"layers.0.conv1": GroupChoice("l1", 0.5)})
    pruned, _ = pruning.apply(model, plan, x[:1], ignored_layers=("fc",))
    kept = pruned.layers[0].conv1.weight.detach()
    # every kept filter is one of the original ones with the largest norms
    strongest = set(torch.argsort(norms, descending=True)[:4].tolist())
    kept_idx = {int(torch.nonzero((w == k).all(dim=(1, 2, 3)))[0]) for k in kept}
    assert kept_idx == strongest


@pytest.mark.parametrize(
    "channels, ratio, round_to, keep",
    [(64, 0.5, 1, 32), (64, 0.3, 8, 48), (64, 0.95, 8, 8), (10, 0.99, 1, 1), (12, 0.1, 8, 12), (16, 0.0, 1, 16)],
)
def test_channels_to_keep_rounds_to_a_multiple(channels, ratio, round_to, keep):
    assert channels_to_keep(channels, ratio, round_to) == keep


def test_round_to_is_honoured_in_surgery():
    model, x = _model()
    plan = PruningPlan({"layers.2.conv1": GroupChoice("l1", 0.3)}, round_to=8)
    pruned, widths = pruning.apply(model, plan, x[:1], ignored_layers=("fc",))
    # 32 channels minus 30% is 22, rounded up to a multiple of 8: 24
    assert widths["layers.2.conv1"] == (32, 24)
    assert pruned.layers[2].conv1.out_channels == 24


def test_unknown_group_and_missing_gradients_fail_clearly():
    model, x = _model()
    with pytest.raises(pruning.PruningError, match="does not have"):
        pruning.apply(model, PruningPlan({"nope": GroupChoice("l1", 0.5)}), x[:1])
    with pytest.raises(pruning.PruningError, match="labelled batches"):
        pruning.apply(model, PruningPlan({"stem.0": GroupChoice("taylor", 0.5)}), x[:1])


def test_plan_validates_and_round_trips():
    with pytest.raises(ValueError, match="0 <= ratio < 1"):
        GroupChoice("l1", 1.0)
    with pytest.raises(ValueError, match="unknown pruning method"):
        GroupChoice("magic", 0.1)
    plan = PruningPlan({"a": GroupChoice("l2", 0.3)}, round_to=8)
    assert PruningPlan.from_dict(plan.to_dict()) == plan
