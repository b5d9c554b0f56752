"""The train device (issue 26.1): recovery, distillation, batch-norm re-estimation,
Taylor gradients and the metric's forward passes run where ``--train-device`` says, and
models come back to the CPU for surgery, export and timing.

The placement test runs on the CPU here and on CUDA where torch sees a GPU (skipped
otherwise): on CUDA it fails if any forward pass of those paths meets a tensor on
another device."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import run_cli

from autoprune import accelerator, pruning
from autoprune.errors import ConfigError
from autoprune.evaluate import ACCURACY
from autoprune.pruning import GroupChoice, PruningPlan
from autoprune.recover import Distill, TrainConfig, recalibrate_bn, train
from autoprune.tasks import Split
from autoprune.tasks.models import CifarResNet

CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda:0", marks=pytest.mark.skipif(not CUDA, reason="torch sees no CUDA device"))]


class Witness:
    """Forward pre-hooks recording the device of every parameter, buffer and input a
    forward pass of the hooked models meets."""

    def __init__(self, *models: torch.nn.Module) -> None:
        self.seen: set[str] = set()
        self.calls = 0
        self.handles = [m.register_forward_pre_hook(self._hook) for m in models]

    def _hook(self, module, inputs) -> None:
        self.calls += 1
        for t in [*module.parameters(), *module.buffers(), *(i for i in inputs if torch.is_tensor(i))]:
            self.seen.add(str(t.device))

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _split(n: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randn(n, 1, 12, 12, generator=g), torch.randint(0, 10, (n,), generator=g))


def _on_cpu(*models: torch.nn.Module) -> bool:
    return all(str(t.device) == "cpu" for m in models for t in [*m.parameters(), *m.buffers()])


@pytest.mark.parametrize("device", DEVICES)
def test_every_training_path_runs_on_the_train_device_and_hands_models_back_on_the_cpu(device, monkeypatch):
    monkeypatch.setenv(accelerator.ENV_DEVICE, device)
    monkeypatch.setenv(accelerator.ENV_AMP, "off")
    assert accelerator.current().device == device
    torch.manual_seed(0)
    teacher = CifarResNet(1, (8, 16, 32), 1, 10).eval()
    data, val = _split(256, 1), _split(64, 2)

    # Taylor importance: the gradients are taken on the train device
    met = []

    def loss_fn(model, x, y):
        met.extend(str(t.device) for t in (x, y, next(model.parameters())))
        return torch.nn.functional.cross_entropy(model(x), y)

    plan = PruningPlan({"layers.1.conv1": GroupChoice("taylor", 0.5), "stem.0": GroupChoice("taylor", 0.25)})
    model, _ = pruning.apply(teacher, plan, data.x[:1], ignored_layers=("fc",), gradient_batches=[data.first(32)],
                             loss_fn=loss_fn)
    assert met and set(met) == {device}
    assert _on_cpu(model, teacher)

    distill = Distill(teacher)
    witness = Witness(model, teacher)
    try:
        # recovery with distillation (the teacher's kept outputs too), then BN, then the metric
        train(model, data, TrainConfig(steps=6, batch_size=32, hflip=True), distill=distill)
        train(model, data, TrainConfig(steps=3, batch_size=32, hflip=True, seed=1), distill=distill)  # from the cache
        recalibrate_bn(model, data, batches=2, batch_size=32)
        score = ACCURACY(model, val)
    finally:
        witness.close()
    placed = distill.on(device)
    assert witness.calls > 0
    assert witness.seen == {device}, f"a forward pass met tensors on {witness.seen}, the train device is {device}"
    assert 0.0 <= score <= 100.0
    kept, known = distill._cache[data]
    assert known.any() and str(known.device) == device and all(str(k.device) == device for k in kept)
    # surgery, export and timing read the models on the CPU: both are back there, and
    # the teacher the baseline is exported from was never moved (a copy trains)
    assert _on_cpu(model, teacher)
    assert (placed is teacher) == (device == "cpu")


@pytest.mark.skipif(not CUDA, reason="torch sees no CUDA device")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_fine_tunes_on_cuda(amp, monkeypatch):
    monkeypatch.setenv(accelerator.ENV_DEVICE, "cuda:0")
    monkeypatch.setenv(accelerator.ENV_AMP, amp)
    torch.manual_seed(0)
    teacher = CifarResNet(1, (8, 16, 32), 1, 10).eval()
    model = copy.deepcopy(teacher)
    loss = train(model, _split(256, 1), TrainConfig(steps=20, batch_size=32), distill=Distill(teacher))
    assert torch.isfinite(torch.tensor(loss))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay float32
    assert _on_cpu(model)


def test_the_choice_is_checked_against_what_torch_sees():
    auto = accelerator.resolve("auto", "auto")
    assert auto.device == ("cuda:0" if CUDA else "cpu")
    assert auto.amp == ("off" if not CUDA else auto.amp) and (auto.amp != "off") == CUDA
    assert accelerator.resolve("cpu", "auto") == accelerator.TrainDevice("cpu", "off")
    with pytest.raises(ConfigError, match="give auto, cpu, cuda or cuda:N"):
        accelerator.resolve("tpu")
    with pytest.raises(ConfigError, match="is for a CUDA train device"):
        accelerator.resolve("cpu", "bf16")
    with pytest.raises(ConfigError, match="choose one of"):
        accelerator.resolve("cpu", "fp8")
    with pytest.raises(ConfigError, match="torch sees" if CUDA else "torch sees no CUDA device"):
        accelerator.resolve("cuda:99")


@pytest.mark.skipif(CUDA, reason="a machine with a GPU has CUDA to train on")
def test_a_cuda_train_device_without_a_gpu_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "results"
    proc = run_cli("search", "--task", "digits", "--device", "x86-ort", "--latency-budget-ms", "1", "--trials", "2",
                   "--results-dir", str(out), "--train-device", "cuda")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "torch sees no CUDA device" in proc.stderr
    assert not out.exists()
    proc = run_cli("finalize", str(out / "digits-x86-ort"), "--train-device", "cpu", "--amp", "fp16")
    assert proc.returncode == 2 and "--amp fp16 is for a CUDA train device" in proc.stderr
    assert "Traceback" not in proc.stderr
