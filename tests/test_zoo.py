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
