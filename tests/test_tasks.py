from __future__ import annotations

import json

import pytest
import torch

import autoprune
from autoprune.errors import DataError, TaskError
from autoprune.tasks import load_task
from autoprune.tasks.builtin import FASHION_DIR, SHIPPED


def test_digits_task_is_trained_and_real(digits_task):
    assert digits_task.input_shape == (1, 8, 8)
    assert len(digits_task.train) == 1437 and len(digits_task.val) == 360
    assert digits_task.base_accuracy > 90  # a real model on real data, not a stub
    from autoprune.evaluate import accuracy

    assert accuracy(digits_task.model, digits_task.val) == pytest.approx(digits_task.base_accuracy)


def test_user_task_factory_runs_a_search(tmp_path):
    task = load_task("user_tasks:small_mlp_task")
    assert task.name == "small"
    result = autoprune.search(finalize=False, task="user_tasks:small_mlp_task", device="x86-ort", latency_budget_ms=5.0,
                              n_trials=3, results_dir=tmp_path, progress=False)
    assert (result.trials["state"] == "COMPLETE").sum() == 3
    assert result.study_dir.name == "user_tasks-small_mlp_task-x86-ort"


def test_bad_factories_are_task_errors():
    with pytest.raises(TaskError, match="has no callable 'missing'"):
        load_task("user_tasks:missing")
    with pytest.raises(TaskError, match="returned int"):
        load_task("user_tasks:not_a_task")


def test_missing_fashion_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match=r"apt-get install dataset-fashion-mnist.*--data-dir"):
        load_task("fashion-mnist", tmp_path)


def test_truncated_cached_checkpoint_is_detected_and_rebuilt(tmp_path, monkeypatch):
    from autoprune._config import cache_dir

    monkeypatch.setenv("AUTOPRUNE_CACHE", str(tmp_path))
    first = load_task("digits")
    pt = cache_dir() / "checkpoints" / "digits.pt"
    pt.write_bytes(pt.read_bytes()[:100])  # truncated, as by a crash mid-write
    torch.manual_seed(1)  # a state that a global seed(0) while loading would change
    state = torch.get_rng_state()
    with pytest.warns(UserWarning, match="does not match its recorded sha256"):
        again = load_task("digits")
    assert again.base_accuracy == pytest.approx(first.base_accuracy)
    assert torch.equal(torch.get_rng_state(), state)  # retraining seeds its own stream only
    load_task("digits")  # from the cache now
    assert torch.equal(torch.get_rng_state(), state)
    info = json.loads((cache_dir() / "checkpoints" / "digits.json").read_text())
    assert info["recipe"]["task"] == "digits"


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_fashion_reference_task_uses_the_shipped_checkpoint():
    task = load_task("fashion-mnist")
    info = json.loads((SHIPPED / "fashion-mnist.json").read_text())
    assert task.base_accuracy == pytest.approx(info["val_accuracy"])
    assert task.base_accuracy > 88
    from autoprune.evaluate import accuracy

    assert accuracy(task.model, task.val) == pytest.approx(info["val_accuracy"], abs=0.05)
    assert task.model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
