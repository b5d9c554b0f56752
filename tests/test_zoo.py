"""The zoo: every method on the torchvision architectures people prune.

Each case prunes every group of the model with one method at a moderate ratio (0.3,
round_to 8), exports the result to ONNX and runs it in ONNX Runtime against PyTorch
(``to_onnx`` does both). The default suite runs ResNet-18 and a two-layer ViT at small
inputs; the marked slow test runs resnet18, mobilenet_v2, densenet121 and vit_b_16.
Inputs are 64x64 (32x32 in the fast set): every layer and coupling is the same as at
224x224, at a fraction of the cost.
"""

from __future__ import annotations

import pytest
import torch

from autoprune import pruning
from autoprune.export import to_onnx
from autoprune.pruning import GroupChoice, PruningPlan

torchvision = pytest.importorskip("torchvision")
models = torchvision.models

ZOO = {  # name: (factory, classifier left unpruned, input size)
    "resnet18": (lambda: models.resnet18(num_classes=10), ("fc",), 64),
    "mobilenet_v2": (lambda: models.mobilenet_v2(num_classes=10), ("classifier.1",), 64),
    "densenet121": (lambda: models.densenet121(num_classes=10), ("classifier",), 64),
    "vit_b_16": (lambda: models.vit_b_16(num_classes=10, image_size=64), ("heads.head",), 64),
}
FAST = {
    "resnet18": (lambda: models.resnet18(num_classes=10), ("fc",), 32),
    "vit_tiny": (lambda: models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                                   hidden_dim=64, mlp_dim=128, num_classes=10),
                 ("heads.head",), 32),
}
GROUP_METHODS = [m.name for m in pruning.METHODS.values() if m.kind not in ("keep", "depth")]
_cache: dict[str, tuple] = {}


def _model(zoo: dict, name: str):
    if name not in _cache:
        factory, ignored, size = zoo[name]
        torch.manual_seed(0)
        model = factory().eval()
        x = torch.randn(1, 3, size, size)
        _cache[name] = (model, x, ignored, pruning.find_groups(model, x, ignored))
    return _cache[name]


def _prune_export_run(zoo, name, method, tmp_path):
    model, x, ignored, groups = _model(zoo, name)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(2, *x.shape[1:], generator=g), torch.randint(0, 10, (2,), generator=g))]
    base_params = sum(p.numel() for p in model.parameters())
    if method == "drop_block":
        blocks = pruning.find_blocks(model)
        if not blocks:  # e.g. DenseNet: concatenation, no identity-shortcut block to remove
            pytest.skip(f"{name} has no residual block with an identity shortcut")
        plan = PruningPlan(drop_blocks=tuple(blocks[::2]))
    elif pruning.METHODS[method].nm:
        # N:M needs input widths in multiples of m: groups of only RGB stems or depthwise
        # convs cannot take it, and say so naming their layers
        m = pruning.METHODS[method].nm[1]
        modules = dict(model.named_modules())
        fits = [g for g in groups if any(modules[x].weight.shape[1] % m == 0 for x in g.members)]
        for g in [g for g in groups if g not in fits][:1]:
            with pytest.raises(pruning.PruningError, match=rf"cannot apply to group '{g.name}'.*{g.members[0]} has"):
                pruning.apply(model, PruningPlan({g.name: GroupChoice(method, 0.3)}), x, ignored_layers=ignored)
        plan = PruningPlan({grp.name: GroupChoice(method, 0.3) for grp in fits})
    else:
        plan = PruningPlan({grp.name: GroupChoice(method, 0.3) for grp in groups}, round_to=8)
    pruned, report = pruning.apply(model, plan, x, ignored_layers=ignored, gradient_batches=batches)
    art = to_onnx(pruned, x, tmp_path / f"{name}-{method}.onnx", parity_atol=1e-3)  # ORT vs PyTorch
    kind = pruning.METHODS[method].kind
    if kind in ("structured", "depth"):
        assert art.params < base_params
    else:
        assert art.params == base_params and art.nonzero_params < 0.95 * base_params
        assert art.gzip_bytes < art.bytes
    return report


FAST_CASES = [("vit_tiny", m) for m in GROUP_METHODS + ["drop_block"]] + [
    ("resnet18", m) for m in ("l1", "sparse_magnitude", "nm_2_4", "drop_block")
]


@pytest.mark.parametrize("name, method", FAST_CASES)
def test_fast_zoo(name, method, tmp_path):
    _prune_export_run(FAST, name, method, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
@pytest.mark.parametrize("method", GROUP_METHODS + ["drop_block"])
def test_zoo(name, method, tmp_path):
    report = _prune_export_run(ZOO, name, method, tmp_path)
    if name == "vit_b_16" and pruning.METHODS[method].kind == "structured":
        assert report.heads  # the residual width is cut in whole heads: 12 -> 8 or 9


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_unpruned_export_matches_pytorch(name, tmp_path):
    model, x, _, groups = _model(ZOO, name)
    assert groups, f"{name}: the dependency graph found no prunable group"
    art = to_onnx(model, x, tmp_path / f"{name}.onnx", parity_atol=1e-3)
    scale = float(model(x).abs().max())
    assert art.max_abs_diff <= 1e-5 * max(1.0, scale)


# -- what users bring: grouped convs, protected widths, set-up limits ----------------

GROUPED = {"regnet_y_400mf": 32, "resnext50_32x4d": 32}


@pytest.mark.parametrize("name", list(GROUPED))
@pytest.mark.parametrize("round_to", [1, 8])
def test_grouped_convolutions_prune_equally_in_every_group(name, round_to, tmp_path):
    torch.manual_seed(0)
    model = models.get_model(name, weights=None, num_classes=10).eval()
    x = torch.randn(1, 3, GROUPED[name], GROUPED[name])
    groups = pruning.find_groups(model, x)
    grouped = [g for g in groups if g.channel_groups > 1]
    assert grouped, f"{name}: no group through a grouped convolution was found"
    plan = PruningPlan({g.name: GroupChoice("l1", 0.5) for g in groups}, round_to=round_to)
    pruned, report = pruning.apply(model, plan, x)
    assert pruned(x).shape == (1, 10)
    for g in grouped:
        before, after = report.widths.get(g.name, (g.channels, g.channels))
        assert after % g.channel_groups == 0, (g.name, after, g.channel_groups)
    cut = [g for g in grouped if report.widths.get(g.name, (0, 0))[1] < g.channels]
    assert cut, "no grouped group was cut at ratio 0.5"
    convs = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d) and 1 < m.groups < m.out_channels]
    assert all(m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0 for m in convs)
    art = to_onnx(pruned, x, tmp_path / f"{name}.onnx", parity_atol=1e-4, parity_rtol=1e-4)
    assert art.params < sum(p.numel() for p in model.parameters())


def test_output_and_input_widths_are_never_offered():
    from user_tasks import residual_mlp_task, squeezenet_task

    squeeze = squeezenet_task()  # names no ignored layer
    traced = pruning.trace(squeeze.model, squeeze.example_input(1))
    assert "classifier.1" in traced.protected and "output" in traced.protected["classifier.1"]
    assert "classifier.1" not in {g.name for g in traced.groups}
    plan = PruningPlan({g.name: GroupChoice("l1", 0.5) for g in traced.groups})
    pruned, _ = pruning.apply(squeeze.model, plan, squeeze.example_input(1))
    assert pruned(squeeze.example_input(2)).shape == (2, 10)

    tied = residual_mlp_task()  # x + block(x): the residual width is the input's
    traced = pruning.trace(tied.model, tied.example_input(1))
    assert "input" in traced.protected["blocks.1.2"] and "head" in traced.protected
    assert {g.name for g in traced.groups} == {"blocks.0.0", "blocks.1.0"}  # the hidden widths only
    plan = PruningPlan({g.name: GroupChoice("l1", 0.5) for g in traced.groups})
    pruned, _ = pruning.apply(tied.model, plan, tied.example_input(1))
    assert pruned(tied.example_input(2)).shape == (2, 10)


def test_auxiliary_heads_are_dropped_for_the_search_and_said():
    from autoprune.recover import TrainConfig, train
    from autoprune.tasks import load_task

    task = load_task("user_tasks:googlenet_task")
    assert task.model.aux1 is None and task.model.aux2 is None and not task.model.aux_logits
    assert any("auxiliary heads (aux1, aux2) are dropped" in n for n in task.notes)
    groups = pruning.find_groups(task.model, task.example_input(1))
    pruned, _ = pruning.apply(task.model, PruningPlan({g.name: GroupChoice("l1", 0.3) for g in groups}),
                              task.example_input(1))
    train(pruned, task.train, TrainConfig(steps=1, batch_size=8, lr=0.01))  # failed on a channel mismatch before
    assert pruned.eval()(task.example_input(2)).shape == (2, 10)


def test_torch_pruning_warnings_are_captured_not_printed():
    import warnings

    model, x, ignored, _ = _model(FAST, "vit_tiny")
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        traced = pruning.trace(model, x, ignored)
        _, report = pruning.apply(model, PruningPlan({traced.groups[0].name: GroupChoice("l1", 0.3)}), x,
                                  ignored_layers=ignored)
    assert not [w for w in leaked if "Unwrapped parameters" in str(w.message)]
    assert any("Unwrapped parameters" in w for w in traced.warnings)
    assert report.warnings == traced.warnings
    assert all("\n" not in w for w in traced.warnings)  # first lines, one each


def test_setup_failures_are_one_line_naming_model_stage_and_cause():
    from autoprune.errors import SetupError
    from autoprune.space import load_space, resolve_task
    import re

    from user_tasks import shufflenet_task, squeezenet_task

    space = load_space("default")
    with pytest.raises(SetupError) as raised:
        resolve_task(space, shufflenet_task())
    msg = str(raised.value)
    assert "\n" not in msg
    assert "shufflenet (ShuffleNetV2, input (3, 32, 32))" in msg and "ZeroDivisionError" in msg
    assert "index_mapping.py" in msg and "Try:" in msg
    task = squeezenet_task()
    with pytest.raises(SetupError, match=r"did not finish within 0\.001 s \(--setup-timeout-s\)"):
        resolve_task(space, task, timeout_s=0.001)
    # In a fresh process: a long-running one (the rest of the suite) may hold enough
    # freed memory for the trace to need no new address space at all.
    probe = (
        "import torch\n"
        "from autoprune.errors import SetupError\n"
        "from autoprune.space import load_space, resolve_task\n"
        "from autoprune.tasks import Split, Task\n"
        "m = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3),\n"
        "                        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10))\n"
        "x, y = torch.zeros(2, 3, 1024, 1024), torch.zeros(2, dtype=torch.int64)  # a 64 MB activation\n"
        "try:\n"
        "    resolve_task(load_space('default'), Task('wide', m.eval(), (3, 1024, 1024), Split(x[:1], y[:1]),\n"
        "                 Split(x[1:], y[1:])), memory_gb=0.001)\n"
        "except SetupError as exc:\n"
        "    print(exc)\n"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert re.search(r"needed more than 0\.001 GiB \(--setup-memory-gb\)", out.stdout), out.stdout + out.stderr[-2000:]
    assert resolve_task(space, task).groups  # the limits are lifted afterwards


def test_search_on_an_untraceable_model_exits_2_with_one_line(tmp_path):
    import time

    from conftest import run_cli

    start = time.monotonic()
    proc = run_cli("search", "--task", "user_tasks:shufflenet_task", "--device", "x86-ort",
                   "--latency-budget-ms", "5", "--trials", "2", "--results-dir", str(tmp_path), "--no-finalize")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "cannot prepare model shufflenet" in proc.stderr
    assert time.monotonic() - start < 120
    assert not (tmp_path / "user_tasks-shufflenet_task-x86-ort" / "config.json").exists()


def test_a_model_whose_own_forward_fails_is_not_blamed_on_torch_pruning():
    from autoprune.errors import SetupError
    from autoprune.space import load_space, resolve_task
    from autoprune.tasks import Split, Task

    x, y = torch.zeros(4, 4), torch.zeros(4, dtype=torch.int64)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))  # wants 5 features
    task = Task("mismatched", model, (4,), Split(x[:2], y[:2]), Split(x[2:], y[2:]))
    with pytest.raises(SetupError, match=r"running the model on one example input raised RuntimeError: .*"
                                         r"input_shape is what the model's forward expects") as raised:
        resolve_task(load_space("default"), task)
    assert "Torch-Pruning" not in str(raised.value)
