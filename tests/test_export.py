from __future__ import annotations

import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from autoprune import pruning
from autoprune.export import ExportFailure, to_onnx
from autoprune.pruning import GroupChoice, PruningPlan


def test_export_checks_and_matches_pytorch(digits_task, tmp_path):
    x = digits_task.example_input(1)
    art = to_onnx(digits_task.model, x, tmp_path / "m.onnx", parity_atol=1e-4)
    onnx.checker.check_model(onnx.load(art.path))
    assert art.input_shape == (1, 1, 8, 8) and art.output_shape == (1, 10)
    assert art.max_abs_diff < 1e-4
    assert art.params == sum(p.numel() for p in digits_task.model.parameters())
    assert art.macs > 0 and art.bytes == (tmp_path / "m.onnx").stat().st_size
    sess = ort.InferenceSession(art.path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    assert abs(got - digits_task.model(x).detach().numpy()).max() < 1e-4


def test_architecture_hash_ignores_weights_but_not_shapes(digits_task, tmp_path):
    x = digits_task.example_input(1)
    half = {"features.3": GroupChoice("l1", 0.5)}
    a, _ = pruning.apply(digits_task.model, PruningPlan(half), x, ignored_layers=("fc",))
    b, _ = pruning.apply(digits_task.model, PruningPlan({"features.3": GroupChoice("random", 0.5)}), x,
                         ignored_layers=("fc",), seed=3)
    c, _ = pruning.apply(digits_task.model, PruningPlan({"features.3": GroupChoice("l1", 0.25)}), x,
                         ignored_layers=("fc",))
    ha = to_onnx(a, x, tmp_path / "a.onnx", 1e-3)
    hb = to_onnx(b, x, tmp_path / "b.onnx", 1e-3)
    hc = to_onnx(c, x, tmp_path / "c.onnx", 1e-3)
    assert ha.sha256 != hb.sha256  # different channels kept: different weights
    assert ha.arch_hash == hb.arch_hash  # ... but the same architecture: one latency
    assert ha.arch_hash != hc.arch_hash


class _TraceDiverges(nn.Module):
    """Behaves differently when traced for export: a real parity failure."""

    def forward(self, x):
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return x * 2
        return x


def test_parity_failure_is_an_export_failure(tmp_path):
    with pytest.raises(ExportFailure, match="differs from PyTorch"):
        to_onnx(_TraceDiverges(), torch.ones(1, 3), tmp_path / "d.onnx", parity_atol=1e-3)
    assert not (tmp_path / "d.onnx").exists()


def test_unexportable_model_is_an_export_failure(tmp_path):
    class Bad(nn.Module):
        def forward(self, x):
            return torch.linalg.eig(x)[0].real  # not exportable to ONNX

    with pytest.raises(ExportFailure, match="ONNX export failed"):
        to_onnx(Bad(), torch.randn(1, 3, 3), tmp_path / "e.onnx", parity_atol=1e-3)


def test_parity_is_relative_to_the_outputs_scale(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3), nn.Flatten()).eval()
    model[1].running_var.fill_(1e-14)  # stale statistics, as after MNASNet's fine-tune: huge outputs
    model[1].eps = 1e-20
    x = torch.randn(1, 3, 8, 8)
    scale = float(model(x).abs().max())
    assert scale > 1e5
    art = to_onnx(model, x, tmp_path / "big.onnx", parity_atol=1e-3, parity_rtol=1e-3)
    assert art.max_abs_diff <= 1e-3 + 1e-3 * scale
    # the same mismatch as above is still caught: 2x is far outside any relative tolerance
    with pytest.raises(ExportFailure, match=r"parity_rtol 0\.001 x max \|output\|"):
        to_onnx(_TraceDiverges(), torch.ones(1, 3), tmp_path / "d.onnx", parity_atol=1e-3, parity_rtol=1e-3)


def test_outputs_that_are_not_finite_fail_export_saying_so(tmp_path):
    model = nn.Sequential(nn.Linear(3, 3)).eval()
    with torch.no_grad():
        model[0].weight.fill_(float("nan"))
    with pytest.raises(ExportFailure, match="not finite"):
        to_onnx(model, torch.ones(1, 3), tmp_path / "nan.onnx", parity_atol=1e-3)
    assert not (tmp_path / "nan.onnx").exists()


def test_a_model_the_legacy_exporter_refuses_goes_through_the_dynamo_exporter(tmp_path, capfd):
    """AlexNet and VGG below 224x224: adaptive pooling to a size that does not divide
    its input, which the legacy exporter refuses (and dumps its graph to stdout for)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d((3, 3)), nn.Flatten()).eval()
    x = torch.randn(1, 3, 4, 4)
    art = to_onnx(model, x, tmp_path / "pool.onnx", parity_atol=1e-5)
    assert art.output_shape == (1, 36) and art.max_abs_diff < 1e-5
    assert onnx.load(art.path).opset_import[0].version >= 18  # the dynamo exporter's
    assert "Torch IR graph" not in capfd.readouterr().out


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("batch_first", [True, False])
def test_recurrent_layers_are_counted_right(cell, batch_first):
    """Issue 28: Torch-Pruning counted an LSTM classifier at 16.47 M MACs against about
    0.50 M by hand (it read a sequence's first example as batch and time)."""
    from autoprune.export import count_macs

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = cell(40, 64, num_layers=2, batch_first=batch_first, bidirectional=True)
            self.head = nn.Linear(128, 10)

        def forward(self, x):  # x: (batch, time, features)
            out, _ = self.rnn(x if batch_first else x.transpose(0, 1))
            return self.head(out[:, -1] if batch_first else out[-1])

    model = Classifier().eval()
    batch, steps = 2, 50
    gates = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}[cell]
    per_step = 2 * gates * 64 * (40 + 64) + 2 * gates * 64 * (128 + 64)  # two layers, two directions each
    by_hand = per_step * steps + 128 * 10  # per example: every step, then the head once
    got = count_macs(model, torch.randn(batch, steps, 40))
    assert abs(got - by_hand) / by_hand < 0.01, (got, by_hand)
