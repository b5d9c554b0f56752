"""The reference task end to end (slow: real ResNet fine-tuning on Fashion-MNIST)."""

from __future__ import annotations

import pytest
from conftest import REPO

import autoprune
from autoprune.search_loop import SCREEN_DRAWS
from autoprune.tasks.builtin import FASHION_DIR

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist"),
]


def test_fashion_search_finds_a_faster_model_within_budget(tmp_path):
    # the default space's path: a (short) screen, then the chosen plans trained. Only its
    # later rungs are cut: a plan climbing them alone (160, then 640 steps) took 3.5 of this
    # test's 5 minutes in CI, and the rungs have their own tests (test_recovery.py)
    text = (REPO / "search_spaces" / "default.yaml").read_text()
    assert "  rungs: [160, 640]" in text
    space = tmp_path / "default-first-rung.yaml"
    space.write_text(text.replace("  rungs: [160, 640]", "  rungs: []"))
    result = autoprune.search(finalize=False, task="fashion-mnist", device="x86-ort", latency_budget_ms=1.0, n_trials=3,
                              results_dir=tmp_path, progress=False, screen_plans=12, space=str(space))
    base = result.baseline
    assert base is not None and base["accuracy"] > 88
    done = result.trials[result.trials["state"] == "COMPLETE"]
    # one screened plan trained, after the baseline and the unpruned model at INT8
    # 12 plans scored within the 1 ms budget (the unpruned model's neighbours on the ladder may time
    # over it: those do not count, and the screen draws more, at most 4x)
    screened = result.trials[result.trials["state"] == "PRUNED"]
    assert len(done) == 3 and (screened["screen_score"].notna().sum() == 12 or len(screened) == 12 * SCREEN_DRAWS)
    assert done["screened_from"].notna().sum() == 1
    # the most-pruned candidates are measured faster than the baseline
    assert done["latency_ms"].min() < base["latency_ms"]
    out = autoprune.export_trial(result, int(done.sort_values("latency_ms").iloc[0]["trial"]), tmp_path / "pkg")
    res = autoprune.run_package(out, runs=20)
    assert res["output_shape"] == [1, 10]
