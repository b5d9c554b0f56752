"""Every method family through the real trial pipeline, and through a real search.

Honest accounting: sparse methods keep every dense parameter (same MACs, same shapes)
and only the nonzero count and the compressed file shrink; structured methods and
block removal change the physical model.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

import autoprune
from autoprune.device import Device
from autoprune.objective import Context, run_candidate
from autoprune.profiles import load_profile
from autoprune.pruning import GroupChoice, PruningPlan
from autoprune.space import Constraints, load_space, resolve
from autoprune.trials import TrialFailure, candidate_attrs

QUICK = {"finetune_steps": 5, "bn_batches": 2, "eval_samples": 200}


@pytest.fixture(scope="module")
def ctx(digits_task):
    space = load_space("default")
    space = dataclasses.replace(space, recovery=dataclasses.replace(space.recovery, **QUICK))
    resolved = resolve(space, digits_task.model, digits_task.example_input(1), digits_task.ignored_layers)
    profile = load_profile("x86-ort")
    profile = dataclasses.replace(profile, measurement=dataclasses.replace(profile.measurement, sessions=1))
    return Context(digits_task, Device.of(profile), resolved, None)


def _later(ctx):  # every group but the 1-channel input conv's (N:M cannot take it)
    return [g.info.name for g in ctx.space.groups if g.info.name != "features.0"]


def _plan(ctx, method, ratio=0.5):
    return PruningPlan({name: GroupChoice(method, ratio) for name in _later(ctx)}, round_to=1)


def test_accounting_separates_dense_size_from_sparsity(ctx, tmp_path):
    base = run_candidate(ctx, PruningPlan(), tmp_path / "base", seed=0)
    structured = run_candidate(ctx, _plan(ctx, "fpgm"), tmp_path / "fpgm", seed=0)
    sparse = run_candidate(ctx, _plan(ctx, "sparse_magnitude"), tmp_path / "sparse", seed=0)
    nm = run_candidate(ctx, _plan(ctx, "nm_2_4"), tmp_path / "nm", seed=0)
    assert structured.onnx.params < base.onnx.params and structured.onnx.macs < base.onnx.macs
    for cand in (sparse, nm):  # same dense model: same parameter count and MACs, fewer nonzeros
        assert cand.onnx.params == base.onnx.params and cand.onnx.macs == base.onnx.macs
        assert cand.onnx.nonzero_params < 0.8 * base.onnx.nonzero_params
        assert cand.onnx.gzip_bytes < base.onnx.gzip_bytes
        assert cand.onnx.arch_hash == base.onnx.arch_hash  # hence the same latency-cache key
    attrs = candidate_attrs(sparse)
    assert set(attrs["sparsity"]) == set(_later(ctx))
    assert attrs["gzip_bytes"] < attrs["onnx_bytes"]


def test_iterative_schedule_reaches_the_same_shape(ctx, tmp_path):
    space = dataclasses.replace(ctx.space.space, recovery=dataclasses.replace(ctx.space.space.recovery, iterations=3))
    it_ctx = dataclasses.replace(ctx, space=dataclasses.replace(ctx.space, space=space))
    once = run_candidate(ctx, _plan(ctx, "l1"), tmp_path / "once", seed=0)
    thrice = run_candidate(it_ctx, _plan(ctx, "l1"), tmp_path / "thrice", seed=0)
    assert thrice.pruned.widths == once.pruned.widths
    assert thrice.onnx.arch_hash == once.onnx.arch_hash


def test_a_candidate_over_the_caps_fails_before_recovery(ctx, tmp_path):
    space = dataclasses.replace(ctx.space.space, constraints=Constraints(max_nonzero_ratio=0.3))
    capped = dataclasses.replace(ctx, space=dataclasses.replace(ctx.space, space=space))
    with pytest.raises(TrialFailure, match=r"prune: constraint: nonzero weights [\d,]+ exceed the space's cap"):
        run_candidate(capped, _plan(capped, "l1", 0.1), tmp_path / "c", seed=0)
    ok = run_candidate(capped, PruningPlan({g.info.name: GroupChoice("sparse_magnitude", 0.9)
                                            for g in ctx.space.groups}), tmp_path / "ok", seed=0)
    assert ok.violation is None


def test_a_search_over_every_method_records_them_in_trials_csv(tmp_path):
    space = tmp_path / "every.yaml"
    methods = "[none, l1, l2, taylor, fpgm, lamp, random, sparse_magnitude, sparse_gradient, sparse_random, nm_2_4]"
    space.write_text(f"""version: 1
default: {{methods: {methods}, ratio: {{low: 0.2, high: 0.6, step: 0.2}}, round_to: [1, 4]}}
rules: [{{match: "features.0", methods: [none, l1, sparse_magnitude]}}]
size_metric: gzip
recovery: {{finetune_steps: 5, bn_batches: 2, eval_samples: 200}}
""")
    result = autoprune.search(finalize=False, task="digits", device="x86-ort", latency_budget_ms=5.0, n_trials=10,
                              space=str(space), results_dir=tmp_path / "r", progress=False)
    df = pd.read_csv(result.study_dir / "trials.csv")
    done = df[df["state"] == "COMPLETE"]
    assert len(done) >= 8
    method_cols = [c for c in df if c.startswith("param:") and c.endswith(".method")]
    assert method_cols and any(c.endswith(".round_to") for c in df)
    chosen = set(done[method_cols].to_numpy().ravel())
    assert len(chosen - {"none"}) >= 3  # the sampler really explores the families
    for _, row in done.iterrows():
        # a sparse method at ratio 0 (features.0's rule keeps the default range, from 0)
        # cuts nothing; N:M has no ratio
        sparse = [c for c in method_cols if str(row[c]).startswith("nm_")
                  or (str(row[c]).startswith("sparse_") and row[c.replace(".method", ".ratio")] > 0)]
        assert (row["sparsity"] > 0) == bool(sparse), row[method_cols + ["sparsity"]]
        assert row["size_mb"] == pytest.approx(row["gzip_bytes"] / 1e6)  # size objective = gzip
        for c in method_cols:
            # a method at ratio 0 cuts nothing, and the methods cell counts what cut
            if row[c] != "none" and row.get(c.replace(".method", ".ratio")) != 0:
                assert f"{row[c]}:" in row["methods"]
