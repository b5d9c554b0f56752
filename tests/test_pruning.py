from __future__ import annotations

import copy

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


STRUCTURED = [m.name for m in pruning.METHODS.values() if m.kind == "structured"]


def test_the_registry_has_every_family():
    kinds = {m.kind for m in pruning.METHODS.values()}
    assert kinds == {"keep", "structured", "unstructured", "semi-structured", "depth"}
    assert set(STRUCTURED) == {"l1", "l2", "taylor", "fpgm", "lamp", "random"}


@pytest.mark.parametrize("method", STRUCTURED)
def test_every_structured_method_prunes_physically_and_leaves_the_input_alone(method):
    model, x = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = PruningPlan({"layers.1.conv1": GroupChoice(method, 0.5), "stem.0": GroupChoice(method, 0.25)})
    pruned, report = pruning.apply(model, plan, x[:1], ignored_layers=("fc",), gradient_batches=_batches())
    assert report.widths == {"layers.1.conv1": (16, 8), "stem.0": (8, 6)}
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
    pruned, report = pruning.apply(model, plan, x[:1], ignored_layers=("fc",))
    # 32 channels minus 30% is 22, rounded up to a multiple of 8: 24
    assert report.widths["layers.2.conv1"] == (32, 24)
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
    with pytest.raises(ValueError, match="removes blocks"):
        GroupChoice("drop_block", 0.1)
    plan = PruningPlan({"a": GroupChoice("l2", 0.3), "b": GroupChoice("nm_2_4", 0.5, 8)}, 8, ("layers.1",))
    assert PruningPlan.from_dict(plan.to_dict()) == plan
    # plans written before drop_blocks and per-group round_to still load
    assert PruningPlan.from_dict({"round_to": 1, "groups": {"a": {"method": "l1", "ratio": 0.5}}}).drop_blocks == ()


def test_per_group_round_to_beats_the_plans():
    model, x = _model()
    plan = PruningPlan({"layers.2.conv1": GroupChoice("l1", 0.3, round_to=1),
                        "layers.1.conv1": GroupChoice("l1", 0.3)}, round_to=8)
    _, report = pruning.apply(model, plan, x[:1], ignored_layers=("fc",))
    assert report.widths == {"layers.2.conv1": (32, 22), "layers.1.conv1": (16, 16)} or \
        report.widths == {"layers.2.conv1": (32, 22)}  # 16 - 30% = 11 -> 16 at round_to 8


@pytest.mark.parametrize("method", ["sparse_magnitude", "sparse_gradient", "sparse_random"])
def test_unstructured_methods_zero_weights_without_changing_shapes(method):
    model, x = _model()
    plan = PruningPlan({"layers.1.conv1": GroupChoice(method, 0.6)})
    pruned, report = pruning.apply(model, plan, x[:1], ignored_layers=("fc",), gradient_batches=_batches())
    w = pruned.layers[1].conv1.weight
    assert w.shape == model.layers[1].conv1.weight.shape
    assert abs(float((w == 0).float().mean()) - 0.6) < 0.01
    assert report.sparsity["layers.1.conv1"] == pytest.approx(0.6, abs=0.01)
    if method == "sparse_magnitude":  # the survivors are the largest weights
        orig = model.layers[1].conv1.weight.detach().abs()
        assert orig[w != 0].min() >= orig[w == 0].max()
    assert set(report.masks) == {"layers.1.conv1.weight"}
    assert torch.equal(report.masks["layers.1.conv1.weight"], w != 0)
    # the fine-tune keeps the zeros: the report's masks are re-applied after each step;
    # without them (nothing hidden on the model) the same fine-tune lets them regrow
    unmasked = copy.deepcopy(pruned)
    _finetune(pruned, report.masks)
    _finetune(unmasked, None)
    assert abs(float((pruned.layers[1].conv1.weight == 0).float().mean()) - 0.6) < 0.01
    assert float((unmasked.layers[1].conv1.weight == 0).float().mean()) < 0.1


def _finetune(model, masks):
    from autoprune.recover import TrainConfig, train
    from autoprune.tasks import Split

    g = torch.Generator().manual_seed(2)
    data = Split(torch.randn(64, 1, 12, 12, generator=g), torch.randint(0, 10, (64,), generator=g))
    train(model, data, TrainConfig(steps=3, batch_size=16, lr=0.1), masks=masks)


def test_masks_carry_over_to_the_next_step_unless_a_cut_reshapes_their_layer():
    model, x = _model()
    sparse = PruningPlan({"layers.1.conv1": GroupChoice("sparse_magnitude", 0.5),
                          "layers.2.conv1": GroupChoice("sparse_magnitude", 0.5)})
    half, first = pruning.apply(model, sparse, x[:1], ignored_layers=("fc",))
    # this cut narrows layers.2.conv1's input (its old mask no longer fits) and leaves
    # layers.1.conv1 alone
    cut = PruningPlan({"layers.1.shortcut.0": GroupChoice("l1", 0.5)})
    pruned, report = pruning.apply(half, cut, x[:1], ignored_layers=("fc",), masks=first.masks)
    assert set(report.masks) == {"layers.1.conv1.weight"}
    assert torch.equal(report.masks["layers.1.conv1.weight"], first.masks["layers.1.conv1.weight"])
    _finetune(pruned, report.masks)
    assert float((pruned.layers[1].conv1.weight == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
    # without the earlier masks the second step knows of none
    assert pruning.apply(half, cut, x[:1], ignored_layers=("fc",))[1].masks == {}


def test_restored_masks_match_the_ones_pruning_made():
    model, x = _model()
    plan = PruningPlan({"layers.1.conv1": GroupChoice("l1", 0.5), "stem.0": GroupChoice("nm_2_4", 0.5)})
    pruned, report = pruning.apply(model, plan, x[:1], ignored_layers=("fc",))
    # as finalize rebuilds a trial: the shape-only plan's model, then the saved weights
    rebuilt, _ = pruning.apply(model, plan.shape_only(), x[:1], ignored_layers=("fc",))
    rebuilt.load_state_dict(pruned.state_dict())
    masks = pruning.restore_masks(rebuilt, plan, x[:1], ("fc",))
    # stem.0 was skipped by 2:4 (one input channel): its mask keeps every weight
    assert set(masks) == {"stem.0.weight", "layers.0.conv2.weight"}
    assert torch.equal(masks["layers.0.conv2.weight"], report.masks["layers.0.conv2.weight"])
    assert masks["stem.0.weight"].all()
    assert pruning.restore_masks(rebuilt, plan.shape_only(), x[:1], ("fc",)) == {}
    with pytest.raises(ValueError, match="layers.0.conv2.weight"):
        pruning.apply_masks(model, {"layers.0.conv2.weight": torch.ones(4, 8, 3, 3, dtype=torch.bool)})


def test_the_fine_tune_is_seeded_by_its_config_and_leaves_the_global_rng_alone():
    from autoprune.recover import TrainConfig, train
    from autoprune.tasks import Split

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(16, 3))
    data = Split(torch.randn(32, 1, 4, 4), torch.randint(0, 3, (32,)))

    def trained(seed):  # dropout draws from torch's global generator
        m = copy.deepcopy(model)
        train(m, data, TrainConfig(steps=5, batch_size=8, seed=seed))
        return m[2].weight.detach()

    state = torch.get_rng_state()
    first = trained(0)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(99)
    assert torch.equal(trained(0), first)
    assert not torch.equal(trained(1), first)


@pytest.mark.parametrize("method", ["random", "sparse_random"])
def test_the_seed_alone_decides_random_methods_and_the_global_rng_is_left_alone(method):
    model, x = _model()
    plan = PruningPlan({"layers.1.conv1": GroupChoice(method, 0.5)})

    def pruned_with(seed):
        return pruning.apply(model, plan, x[:1], ignored_layers=("fc",), seed=seed)[0].state_dict()

    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = pruned_with(0)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(456)  # another global state does not change the result
    again, other = pruned_with(0), pruned_with(1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_n_m_keeps_n_of_every_m_inputs_and_names_a_layer_it_cannot_take():
    model, x = _model()
    plan = PruningPlan({"layers.1.conv1": GroupChoice("nm_2_4", 0.5)})
    pruned, _ = pruning.apply(model, plan, x[:1], ignored_layers=("fc",))
    w = pruned.layers[1].conv1.weight.detach()  # (16 out, 8 in, 3, 3)
    blocks = w.permute(0, 2, 3, 1).reshape(-1, 4)
    assert ((blocks != 0).sum(1) <= 2).all() and (blocks != 0).sum() == blocks.numel() // 2
    # the stem group: stem.0 has 1 input channel and stays dense, the block convs take 2:4
    pruned, report = pruning.apply(model, PruningPlan({"stem.0": GroupChoice("nm_2_4", 0.5)}), x[:1],
                                   ignored_layers=("fc",))
    assert "stem.0" in report.skipped and "multiples of 4, it has 1" in report.skipped["stem.0"]
    assert (pruned.layers[0].conv2.weight == 0).float().mean() == 0.5
    lone = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 10 * 10, 2))
    with pytest.raises(pruning.PruningError, match=r"group '0'.*0 has 3"):
        pruning.apply(lone, PruningPlan({"0": GroupChoice("nm_2_4", 0.5)}), torch.randn(1, 3, 12, 12),
                      ignored_layers=("2",))


def test_blocks_are_dropped_whole_and_groups_inside_them_skipped():
    model, x = _model()
    model = CifarResNet(2, (8, 16, 32), 1, 10).eval()
    # layers.2 and layers.4 change shape (stride 2, 1x1 shortcut): not droppable
    assert pruning.find_blocks(model) == ["layers.0", "layers.1", "layers.3", "layers.5"]
    plan = PruningPlan({"layers.1.conv1": GroupChoice("l1", 0.5), "layers.3.conv1": GroupChoice("l1", 0.5)},
                       drop_blocks=("layers.1",))
    pruned, report = pruning.apply(model, plan, x[:1], ignored_layers=("fc",))
    assert isinstance(pruned.layers[1], torch.nn.Identity)
    assert report.skipped == {"layers.1.conv1": "inside a dropped block"}
    assert report.widths == {"layers.3.conv1": (16, 8)}
    assert pruned(x).shape == (2, 10)
    with pytest.raises(pruning.PruningError, match="cannot drop block 'layers.2'"):
        pruning.apply(model, PruningPlan(drop_blocks=("layers.2",)), x[:1])


def test_iterative_steps_reach_the_one_shot_widths():
    model, x = _model()
    plan = PruningPlan({"layers.2.conv1": GroupChoice("l1", 0.5), "stem.0": GroupChoice("sparse_magnitude", 0.6)})
    half, first = pruning.apply(model, plan, x[:1], ignored_layers=("fc",), fraction=0.5)
    assert first.widths["layers.2.conv1"] == (32, 24)
    assert first.sparsity["stem.0"] == pytest.approx(0.3, abs=0.02)
    full, last = pruning.apply(half, plan, x[:1], ignored_layers=("fc",), fraction=1.0, original=first)
    one_shot, once = pruning.apply(model, plan, x[:1], ignored_layers=("fc",))
    assert last.widths["layers.2.conv1"] == (32, 16) == once.widths["layers.2.conv1"]
    assert last.sparsity["stem.0"] == pytest.approx(0.6, abs=0.02)
    # masks only grow: the first step's zeros are among the last step's
    for name, mask in first.masks.items():
        assert not (last.masks[name] & ~mask).any()


def test_shape_only_plan_rebuilds_the_same_shapes():
    model, x = _model()
    plan = PruningPlan({"layers.1.conv1": GroupChoice("taylor", 0.5), "layers.2.conv1": GroupChoice("nm_2_4", 0.5)})
    shaped, _ = pruning.apply(model, plan.shape_only(), x[:1], ignored_layers=("fc",))
    pruned, _ = pruning.apply(model, plan, x[:1], ignored_layers=("fc",), gradient_batches=_batches())
    assert {k: v.shape for k, v in shaped.state_dict().items()} == {k: v.shape for k, v in pruned.state_dict().items()}
    shaped.load_state_dict(pruned.state_dict())
    assert torch.equal(shaped(x), pruned(x))


def test_attention_groups_lose_whole_heads():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=16, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64, num_classes=10
    ).eval()
    x = torch.randn(1, 3, 16, 16)
    groups = {g.name: g for g in pruning.find_groups(model, x, ("heads.head",))}
    (attn,) = [g for g in groups.values() if g.heads]
    assert attn.heads == 4 and attn.channels == 32
    mlp = [g.name for g in groups.values() if not g.heads]
    plan = PruningPlan({attn.name: GroupChoice("l1", 0.5), mlp[0]: GroupChoice("l2", 0.5)}, round_to=8)
    pruned, report = pruning.apply(model, plan, x, ignored_layers=("heads.head",))
    assert report.heads[attn.name] == (4, 2)
    for m in pruned.modules():
        if isinstance(m, torch.nn.MultiheadAttention):
            assert (m.num_heads, m.head_dim, m.embed_dim) == (2, 8, 16)
    assert pruned.hidden_dim == 16
    assert pruned(x).shape == (1, 10)


class _GruClassifier(torch.nn.Module):
    """A linear front-end feeding a GRU: Torch-Pruning's index mapping raises on it."""

    def __init__(self, conv_front: bool = False):
        super().__init__()
        self.front = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                         torch.nn.Conv2d(4, 1, 3, padding=1)) if conv_front else torch.nn.Identity()
        self.inp = torch.nn.Linear(8, 32)
        self.gru = torch.nn.GRU(32, 16, batch_first=True)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        x = self.front(x).flatten(1, 2)  # (batch, 8, 8): eight steps of eight features
        out, _ = self.gru(self.inp(x))
        return self.fc(out[:, -1])


class _Functional(torch.nn.Module):
    """Weights used through torch.nn.functional only."""

    def __init__(self):
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.randn(16, 1, 3, 3) * 0.1)
        self.w2 = torch.nn.Parameter(torch.randn(10, 16 * 64) * 0.01)

    def forward(self, x):
        x = torch.nn.functional.relu(torch.nn.functional.conv2d(x, self.w1, padding=1))
        return torch.nn.functional.linear(x.flatten(1), self.w2)


def test_groups_that_are_never_offered_say_why():
    """Issue 28.5: a GRU fed by a linear layer ended the whole trace inside Torch-Pruning
    (IndexError), and a model of functional calls got an empty table without a word."""
    x = torch.randn(1, 1, 8, 8)
    gru = pruning.trace(_GruClassifier().eval(), x)
    assert gru.groups == []
    assert "feed gru (GRU)" in gru.protected["inp"]
    assert "hidden size 16" in gru.protected["gru"] and "recurrent" in gru.protected["gru"]
    # the group Torch-Pruning cannot follow is left out; the others are still offered and cut
    model = _GruClassifier(conv_front=True).eval()
    mixed = pruning.trace(model, x)
    assert "front.0" in [g.name for g in mixed.groups] and "inp" in mixed.protected
    pruned, _ = pruning.apply(model, PruningPlan({"front.0": GroupChoice("l1", 0.5)}), x)
    assert pruned.front[0].out_channels == 2 and pruned(x).shape == (1, 10)
    functional = pruning.trace(_Functional().eval(), x)
    assert functional.groups == []
    assert "torch.nn.functional" in functional.protected["w1"] and "w2" in functional.protected


def test_a_model_with_nothing_to_prune_is_refused_at_set_up(tmp_path):
    import autoprune
    from autoprune.errors import ConfigError
    from autoprune.tasks import Split, Task

    g = torch.Generator().manual_seed(0)
    data = Split(torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g))
    task = Task("functional", _Functional().eval(), (1, 8, 8), data, data)
    with pytest.raises(ConfigError, match="nothing in the model of task 'functional' can be pruned"):
        autoprune.search(task=task, device="x86-ort", latency_budget_ms=1.0, n_trials=1,
                         results_dir=tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
