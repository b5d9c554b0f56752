"""Issue 15: a task's own metric (name, unit, direction), its own loss, a Task object
given to ``autoprune.search``, factory arguments, and the built-in segmentation task."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pandas as pd
import pytest

import autoprune
from autoprune.evaluate import Metric, top1
from autoprune.tasks import load_task


def _error(model, data) -> float:
    return 100.0 - top1(model, data)


def test_a_named_metric_where_lower_is_better_is_shown_and_ranked_in_its_direction(tmp_path):
    calls = []

    def loss(model, batch):
        x, y = batch
        calls.append(len(x))
        import torch

        return torch.nn.functional.cross_entropy(model(x), y)

    task = dataclasses.replace(load_task("digits"), name="digits-error", loss=loss,
                               metric=Metric("error", unit="%", higher_is_better=False, evaluate=_error))
    result = autoprune.search(task=task, device="x86-ort", latency_budget_ms=5.0, n_trials=4, finalize=False,
                              results_dir=tmp_path, progress=False)
    assert calls, "recovery never called the task's loss"
    assert [d.name for d in result.study.directions][0] == "MINIMIZE"
    assert result.metric.name == "error" and not result.metric.higher_is_better
    done = result.trials[result.trials["state"] == "COMPLETE"]
    base = done[done["baseline"]].iloc[0]
    assert 0 <= base["accuracy"] < 10  # an error rate, not an accuracy
    # the drop is in the metric's direction: more error is a positive drop
    assert (done["accuracy_drop"] - (done["accuracy"] - base["accuracy"])).abs().max() < 1e-9
    csv = pd.read_csv(result.study_dir / "trials.csv")
    assert {"error", "error_drop"} <= set(csv.columns) and "accuracy" not in csv.columns
    assert "error" in pd.read_csv(result.study_dir / "pareto.csv").columns
    config = json.loads((result.study_dir / "config.json").read_text())
    assert config["metric"] == {"name": "error", "unit": "%", "higher_is_better": False}
    # the recommendation counts points in the metric's direction too
    lines = result.recommend(max_drop=100.0).lines(result.study_dir)
    assert "error" in lines[0] and "best error" in lines[2]
    html = autoprune.write_report(result.study_dir).read_text()
    assert "validation error (%), lower is better" in html


def test_a_factory_in_the_working_directory_takes_arguments_without_pythonpath(tmp_path):
    (tmp_path / "mytask.py").write_text(
        "import dataclasses\n"
        "from autoprune.tasks import load_task\n"
        "def make(name='mine', hflip=False):\n"
        "    return dataclasses.replace(load_task('digits'), name=name, hflip=hflip)\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-m", "autoprune", "groups", "--task", "mytask:make",
                           "--task-arg", "name=from-the-cli", "--task-arg", "hflip=true"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "prunable groups of from-the-cli" in " ".join(proc.stdout.split())


@pytest.mark.slow  # about 4 min: trials, finalize, export and run of the U-Net
def test_the_segmentation_task_runs_end_to_end_and_says_miou(tmp_path):
    from conftest import run_cli

    space = tmp_path / "short.yaml"  # the default space's methods, with short recoveries (the U-Net trains slowly)
    space.write_text("version: 1\ndefault: {methods: [none, l1, taylor], ratio: {low: 0.3, high: 0.6, step: 0.1}}\n"
                     "round_to: [8]\nrecovery: {finetune_steps: 10, rungs: [], eval_samples: 500, bn_batches: 5, "
                     "final_steps: 20, final_members: 1}\n")
    proc = run_cli("search", "--task", "fashion-mnist-seg", "--device", "x86-ort", "--latency-budget-ms", "50",
                   "--trials", "4", "--results-dir", str(tmp_path / "r"), "--space", str(space), timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = " ".join(proc.stdout.split())
    assert "mIoU %" in text and "acc %" not in text
    study = tmp_path / "r" / "fashion-mnist-seg-x86-ort"
    trials = pd.read_csv(study / "trials.csv")
    assert {"mIoU", "mIoU_drop"} <= set(trials.columns) and "accuracy" not in trials.columns
    base = trials[trials["baseline"]].iloc[0]
    assert 60 < base["mIoU"] <= 100, base["mIoU"]
    assert (trials["state"] == "COMPLETE").sum() >= 3
    assert "validation mIoU (%)" in (study / "pareto.html").read_text()
    report = run_cli("report", str(study))
    assert report.returncode == 0, report.stderr
    assert "mIoU against measured latency" in (study / "report.html").read_text()
    front = pd.read_csv(study / "pareto.csv")
    n = int(front[~front["baseline"]]["trial"].iloc[0]) if (~front["baseline"]).any() else int(front["trial"].iloc[0])
    exported = run_cli("export", str(study), "--trial", str(n), "--out", str(tmp_path / "pkg"))
    assert exported.returncode == 0, exported.stderr
    assert "mIoU" in exported.stdout
    manifest = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    assert manifest["metric"]["name"] == "mIoU" and "mIoU" in manifest["metrics"]
    ran = run_cli("run", str(tmp_path / "pkg"))
    assert ran.returncode == 0, ran.stderr


class _Digits(__import__("torch").utils.data.Dataset):
    """Map-style: one (image, label) at a time, as a Dataset over files would give them."""

    def __init__(self, split):
        self.split, self.reads = split, 0

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        self.reads += 1
        return self.split.x[i], self.split.y[i]


class _Stream(__import__("torch").utils.data.IterableDataset):
    def __init__(self, split):
        self.split = split

    def __len__(self):
        return len(self.split)

    def __iter__(self):
        return zip(self.split.x, self.split.y, strict=True)


def test_a_task_reads_its_data_from_a_dataset_and_a_dataloader(tmp_path):
    import torch

    from autoprune.tasks import Task
    from autoprune.tasks._base import DataSplit

    digits = load_task("digits")
    train = _Digits(digits.train)
    loader = torch.utils.data.DataLoader(_Stream(digits.val), batch_size=7)  # its batch size is autoprune's to set
    task = Task("digits-stream", digits.model, digits.input_shape, train, loader, ignored_layers=digits.ignored_layers)
    assert isinstance(task.train, DataSplit) and isinstance(task.val, DataSplit) and task.val.iterable
    assert len(task.val) == len(digits.val)
    # the same figures as in memory: the metric over batches of the stream, the first examples
    assert task.metric(task.model, task.val) == pytest.approx(digits.metric(digits.model, digits.val))
    assert torch.equal(task.example_input(3), digits.example_input(3))
    result = autoprune.search(task=task, device="x86-ort", latency_budget_ms=5.0, n_trials=3, finalize=False,
                              results_dir=tmp_path, progress=False, workers=0)
    assert (result.trials["state"] == "COMPLETE").all(), result.trials[["state", "fail_reason"]]
    assert train.reads > 0  # recovery read the training data through the dataset (workers=0: this process)


class _Noisy(__import__("torch").utils.data.Dataset):
    """A dataset with a random transform; each example says which process read it."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        import os

        import torch

        return torch.rand(3) + i, torch.tensor(os.getpid())


def test_loading_processes_stay_up_across_passes_and_random_transforms_draw_alike():
    """Issue 26.1: the processes that load a split serve every pass over it (BN batches,
    each recovery rung, each evaluation); a dataset's random transforms draw the same
    whatever the number of loading processes and what they read before."""
    import os

    import torch

    from autoprune.tasks._base import DataSplit

    def passes(split):
        gen = torch.Generator().manual_seed(0)
        out = []
        for _ in range(3):
            out.append(list(split.sample(4, 3, gen)))
            out.append(list(split.batches(8)))
        return out

    one = DataSplit(_Noisy(20), workers=1)
    first = passes(one)
    pids = {int(p) for run in first for batch in run for p in batch[-1]}
    assert len(pids) == 1 and os.getpid() not in pids  # one loading process, kept for all six passes
    again = passes(DataSplit(_Noisy(20), workers=1))  # a new process: the same draws
    here = passes(DataSplit(_Noisy(20), workers=0))  # read in this process: the same draws
    for a, b, c in zip(first, again, here, strict=True):
        for x, y, z in zip(a, b, c, strict=True):
            assert torch.equal(x[-2], y[-2]) and torch.equal(x[-2], z[-2])
    state = torch.random.get_rng_state()
    passes(DataSplit(_Noisy(20), workers=0))
    assert torch.equal(state, torch.random.get_rng_state())  # this process's stream is left alone
    # a pass left half-read lets its processes go; the next pass starts new ones and reads right
    half = one.batches(4)
    next(half)
    half.close()
    assert len(list(one.batches(8))) == 3 and one._persistent is not None
    # the first examples (the metric's validation subset) are read by the same process
    view = one.head(10)
    assert [len(y) for _, y in view.batches(4)] == [4, 4, 2]
    assert {int(p) for _, y in view.batches(4) for p in y} == {int(p) for _, y in one.batches(20) for p in y}


@pytest.mark.slow  # about 2 min: the example's base model, 4 trials, one finalized member, export and run
def test_a_model_with_two_outputs_searches_exports_and_runs_per_output(tmp_path):
    """Issue 28.1: the two-head example (a dict of class scores and a box, its own loss and
    metric, KL on one head and MSE on the other) searches, finalizes, exports every
    output to ONNX and runs with a float check per output."""
    import numpy as np

    from conftest import REPO, run_cli

    proc = run_cli("search", "--task", "examples.two_heads:task", "--task-arg", "steps=300", "--device", "x86-ort",
                   "--latency-budget-ms", "1", "--trials", "4", "--final-members", "1",
                   "--results-dir", str(tmp_path / "r"), cwd=REPO, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "detections %" in " ".join(proc.stdout.split())
    study = next((tmp_path / "r").iterdir())
    trials = pd.read_csv(study / "trials.csv")
    done = trials[trials["state"] == "COMPLETE"]
    assert len(done) >= 3 and done["detections"].between(50, 100).all(), trials[["trial", "state", "fail_reason"]]
    pruned = done[~done["baseline"]]
    assert not pruned.empty
    n = int(pruned["trial"].iloc[0])
    exported = run_cli("export", str(study), "--trial", str(n), "--out", str(tmp_path / "pkg"), cwd=REPO)
    assert exported.returncode == 0, exported.stderr[-2000:]
    manifest = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    assert [o["name"] for o in manifest["outputs"]] == ["output:logits", "output:box"]
    assert [o["shape"] for o in manifest["outputs"]] == [[1, 10], [1, 4]]
    ran = run_cli("run", str(tmp_path / "pkg"), "--save-output", str(tmp_path / "out.npz"))
    assert ran.returncode == 0, ran.stderr
    text = " ".join(ran.stdout.split())
    assert "output:logits (1, 10); output:box (1, 4)" in text
    assert "output:box" in text.split("check against the float model")[1]  # the float check, per output
    saved = np.load(tmp_path / "out.npz")
    assert saved["output:logits"].shape == (1, 10) and saved["output:box"].shape == (1, 4)


def test_a_model_with_several_outputs_needs_its_own_loss_and_says_which_outputs_distil():
    import torch

    from autoprune.errors import TaskError
    from autoprune.outputs import distill_modes
    from autoprune.recover import Distill
    from autoprune.tasks import Split, Task
    from autoprune.tasks._validate import validate

    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.a(x), self.b(x)

    data = Split(torch.randn(16, 4), torch.randint(0, 3, (16,)))
    with pytest.raises(TaskError, match=r"returns 2 outputs \(2x3, 2x2\); give the task its own loss"):
        validate(Task("two", Two().eval(), (4,), data, data))
    with pytest.raises(TaskError, match="Task.distill names output 'boxes'"):
        validate(Task("two", Two().eval(), (4,), data, data, distill={"boxes": "mse"},
                      loss=lambda m, b: m(b[0])[0].sum()))
    from autoprune.outputs import rebuild

    one = torch.zeros(2, 3)
    assert isinstance(rebuild(["output.0"], [one]), tuple)  # a model returning a 1-tuple gets a tuple back
    assert rebuild(["output"], [one]) is one and set(rebuild(["output:a", "output:b"], [one, one])) == {"a", "b"}
    assert distill_modes(["output.0", "output.1"], None) == ["kl", "mse"]
    assert distill_modes(["output:logits", "output:box"], {"box": "none"}) == ["kl", "none"]
    # per output: a student equal to the teacher on the KL head and off on the MSE head
    teacher = Two().eval()
    x, hard = torch.randn(8, 4), torch.tensor(1.0)
    with torch.no_grad():
        t = list(teacher(x))
    d = Distill(teacher, weight=0.5)
    off = d.loss((t[0].clone(), t[1] + 1.0), t, hard)
    assert off.item() == pytest.approx(0.5 * 1.0 + 0.5 * 1.0, abs=1e-5)  # the MSE of 1 on the box head only
    muted = Distill(teacher, weight=0.5, outputs={1: "none"})
    assert muted.loss((t[0].clone(), t[1] + 1.0), t, hard).item() == pytest.approx(0.5, abs=1e-5)
