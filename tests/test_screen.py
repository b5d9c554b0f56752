"""The screen (screen wide, train few), the shared-ratio space, and studies made before them."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import optuna
import pytest
from conftest import run_cli

from autoprune.measure import slower
from autoprune.screen import ScreenedPlan, between, second_wave, select, worth_training
from autoprune.space import load_space, resolve, space_of

FIXTURES = Path(__file__).parent / "fixtures"


def test_select_takes_the_front_within_budget_first_then_spreads_over_latency():
    pts = [ScreenedPlan(0, 90.0, 0.10), ScreenedPlan(1, 80.0, 0.05), ScreenedPlan(2, 70.0, 0.02), ScreenedPlan(3, 60.0, 0.01),
           ScreenedPlan(4, 89.5, 0.11),  # behind a faster plan by 0.5 pt: the second layer, near enough
           ScreenedPlan(5, 50.0, 0.09),  # far behind: never trained
           ScreenedPlan(6, 99.0, 0.50)]  # the best score, over the budget
    assert select(pts, 10, budget_ms=0.2, near=1.0) == [0, 1, 2, 3, 4]
    # a layer that does not fit whole is spread: both ends of its latency range first
    assert sorted(select(pts, 2, budget_ms=0.2, near=1.0)) == [0, 3]
    assert select(pts, 1, budget_ms=0.2, near=1.0) == [0]  # one: the best score
    assert select(pts, 5, budget_ms=0.005, near=1.0) == []  # nothing within the budget
    # plans chosen already are not chosen again, but still make the ones behind them far behind
    assert select(pts, 5, budget_ms=0.2, near=1.0, taken={0, 1, 2, 3}) == [4]
    assert select(pts, 5, budget_ms=0.2, near=50.0, taken={0, 1, 2, 3, 4}) == [5]
    # under a budget that binds, a layer that does not fit whole gives its best-scoring plans
    assert select(pts, 2, budget_ms=0.2, near=1.0, best_first=True) == [0, 1]


def test_worth_training_one_plan_per_architecture_none_trained_already_and_none_as_slow_as_the_unpruned():
    pts = [ScreenedPlan(0, 90.0, 0.10, "a:int8"), ScreenedPlan(1, 91.0, 0.10, "a:int8"),  # one architecture
           ScreenedPlan(2, 91.0, 0.10, "a:float32"),  # the same layers in float32: another
           ScreenedPlan(3, 92.0, 0.30, "base:int8"),  # the unpruned model's, trained already
           ScreenedPlan(4, 80.0, 0.05), ScreenedPlan(5, 80.0, 0.05),  # unknown architecture: kept
           ScreenedPlan(8, 91.5, 0.29, "b:int8")]  # as slow as the unpruned (0.29 ms, trained): not worth it
    assert [s.key for s in worth_training(pts, known={"base:int8"}, below_ms=0.29)] == [1, 2, 4, 5]
    assert [s.key for s in worth_training(pts)] == [1, 2, 3, 4, 5, 8]
    tie = [ScreenedPlan(7, 90.0, 0.1, "x"), ScreenedPlan(6, 90.0, 0.1, "x")]
    assert [s.key for s in worth_training(tie)] == [6]  # a tie: the lower number, whatever the order


def test_the_screen_scores_its_plans_within_the_budget_and_draws_at_most_four_per_plan(tmp_path):
    """A plan timed over the budget costs only its timing and does not count: the screen
    draws on till ``plans`` are scored within the budget (on an Intel host every INT8 ladder
    plan of `make demo` timed over its 8x budget and it scored 1-3 of its 24), and stops at
    SCREEN_DRAWS x ``plans`` drawn, where the budget is met by almost nothing."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from autoprune.search_loop import SCREEN_ATTR, SCREEN_DRAWS, Screening

    def study(name: str):
        return optuna.create_study(study_name=name, storage=f"sqlite:///{tmp_path / 'screen.db'}",
                                   directions=["maximize", "minimize", "minimize"])

    def plan(latency_ms: float, score: float | None = None):
        attrs = {"screen": True, "screen_latency_ms": latency_ms}
        return create_trial(state=TrialState.PRUNED, params={"ratio": 0.5},
                            distributions={"ratio": FloatDistribution(0.0, 0.9)},
                            user_attrs={**attrs, "screen_score": score} if score is not None else attrs)

    screening = Screening(plans=3, budget_ms=1.0, near=1.0, seed=0, log=lambda message: None)
    mixed = study("mixed")
    for trial in [plan(2.0), plan(2.0), plan(0.5, 80.0), plan(3.0), plan(0.4, 70.0)]:
        mixed.add_trial(trial)
    assert screening.phase(mixed, target=2) == "screen"  # five drawn, two scored: draw on
    mixed.add_trial(plan(0.3, 60.0))
    assert screening.phase(mixed, target=2) == "train"  # three scored: the choice is made among them
    assert sorted(mixed.user_attrs[SCREEN_ATTR]) == [2, 5]  # (both ends of the screen's front)

    over = study("over")
    for _ in range(3 * SCREEN_DRAWS - 1):
        over.add_trial(plan(2.0))
    assert screening.phase(over, target=2) == "screen"
    over.add_trial(plan(2.0))
    assert screening.phase(over, target=2) == "train" and over.user_attrs[SCREEN_ATTR] == []  # none to train


def test_the_second_wave_is_queued_once_the_first_is_trained_between_its_trained_plans(tmp_path):
    """The two waves on a real SQLite study with screened plans of known latency (the
    end-to-end test's digits plans time alike on some hosts, so what its waves pick varies)."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from autoprune.search_loop import SCREEN_ATTR, WAVE_ATTR, Screening

    study = optuna.create_study(study_name="waves", storage=f"sqlite:///{tmp_path / 'screen.db'}",
                                directions=["maximize", "minimize", "minimize"])
    plans = {0: (0.1, 70.0), 1: (0.2, 80.0), 2: (0.3, 85.0), 3: (0.4, 88.0), 4: (0.5, 90.0)}  # the screen's front
    for key, (ms, score) in plans.items():
        study.add_trial(create_trial(state=TrialState.PRUNED, params={"ratio": 0.8 - 0.1 * key},
                                     distributions={"ratio": FloatDistribution(0.0, 0.9)},
                                     user_attrs={"screen": True, "screen_latency_ms": ms, "screen_score": score}))
    screening = Screening(plans=5, budget_ms=1.0, near=1.0, seed=0, log=lambda message: None, waves=2)
    assert screening.phase(study, target=3) == "train"  # three to train: two first, at both ends
    assert sorted(study.user_attrs[SCREEN_ATTR]) == [0, 4] and WAVE_ATTR not in study.user_attrs
    running = [study.ask(), study.ask()]  # the first wave, taken by two workers
    assert screening.phase(study, target=3) == "wait" and WAVE_ATTR not in study.user_attrs
    trained = {0: 60.0, 4: 92.0}  # the fast end collapses once trained: its stretch is the steepest
    for trial in running:
        key = trial.user_attrs["screened_from"]
        trial.set_user_attr("accuracy", trained[key])
        study.tell(trial, [trained[key], plans[key][0], 1.0])
    assert screening.phase(study, target=3) == "train"
    # between them, the plan nearest their middle in log latency (0.22 ms): plan 1 (0.2 ms)
    assert study.user_attrs[WAVE_ATTR] == [1] and study.user_attrs[SCREEN_ATTR][2:] == [1]
    assert study.ask().user_attrs["screened_from"] == 1
    assert screening.phase(study, target=3) == "train"  # chosen once: asked again, it does not choose again
    assert study.user_attrs[SCREEN_ATTR][2:] == [1]

    # a budget faster than the trained unpruned model binds: the best-scoring plans within it, in one wave
    bound = optuna.create_study(study_name="bound", storage=f"sqlite:///{tmp_path / 'screen.db'}",
                                directions=["maximize", "minimize", "minimize"])
    bound.add_trial(create_trial(state=TrialState.COMPLETE, values=[92.0, 0.6, 1.0], params={"ratio": 0.0},
                                 distributions={"ratio": FloatDistribution(0.0, 0.9)},
                                 user_attrs={"baseline": True, "accuracy": 92.0, "latency_ms": 0.6}))
    for trial in study.get_trials(states=[TrialState.PRUNED]):
        bound.add_trial(trial)
    Screening(plans=5, budget_ms=0.55, near=1.0, seed=0, log=lambda message: None, waves=2).phase(bound, target=4)
    assert bound.user_attrs[SCREEN_ATTR] == [5, 4, 3] and bound.user_attrs[WAVE_ATTR] == []  # (numbered from 1)


def test_the_second_wave_bisects_the_trained_front_where_it_is_steepest():
    # the screen's plans: keys 0-9, faster to slower, each scoring a little higher
    lat = [0.05, 0.06, 0.07, 0.08, 0.09, 0.10, 0.12, 0.15, 0.20, 0.40]
    pts = [ScreenedPlan(i, 50.0 + i, ms) for i, ms in enumerate(lat)]
    # the first wave trained plans 0, 5, 9: accuracy collapses between 0.05 and 0.10 ms
    trained = [ScreenedPlan(0, 80.0, 0.05), ScreenedPlan(5, 91.0, 0.10), ScreenedPlan(9, 92.0, 0.40)]
    one = between(pts, trained, 1, budget_ms=1.0, near=100.0, taken={0, 5, 9})
    assert one == [2]  # the steep stretch, at its middle in log latency (0.0707 ms)
    # then each half of it (their unknown, with 85.3 interpolated at plan 2, beats the flat stretch's)
    assert sorted(between(pts, trained, 3, budget_ms=1.0, near=100.0, taken={0, 5, 9})) == [1, 2, 3]
    four = between(pts, trained, 4, budget_ms=1.0, near=100.0, taken={0, 5, 9})
    assert 7 in four or 8 in four  # ... until the flat stretch's is the largest
    # a plan the screen ranks far behind a faster one is not trained; nor one over the budget
    assert 2 not in between([*pts[:2], ScreenedPlan(2, 10.0, 0.07), *pts[3:]], trained, 1, 1.0, 1.0, {0, 5, 9})
    assert between(pts, trained, 2, budget_ms=0.055, near=100.0, taken={0, 5, 9}) == []
    # a trained plan behind a faster one is not a front point: nothing between it and its neighbours
    assert between(pts[:6], [ScreenedPlan(0, 80.0, 0.05), ScreenedPlan(5, 70.0, 0.10)], 2, 1.0, 100.0, {0, 5}) == []
    # clipped 2 points under the best trained (92), the collapse weighs 1 point, the flat stretch's 1 point
    # spans twice the log latency: the flat stretch is bisected (plan 8, nearest 0.2 ms)
    assert between(pts, trained, 1, budget_ms=1.0, near=100.0, taken={0, 5, 9}, clip=2.0) == [8]
    assert between(pts, trained, 1, budget_ms=1.0, near=100.0, taken={0, 5, 9}, clip=20.0) == [2]  # as unclipped
    # with no stretch to bisect, the second wave takes the screen's next best; never a plan the
    # first wave left out as far behind a faster one (found in CI: on a host where only two digits
    # plans were faster than the unpruned model, the second wave trained one 18 points behind)
    lone = [ScreenedPlan(0, 93.6, 0.0098), ScreenedPlan(1, 75.6, 0.0104), ScreenedPlan(2, 93.0, 0.0110)]
    assert select(lone[:2], 2, budget_ms=1.0, near=1.0) == [0]
    assert second_wave(lone, [ScreenedPlan(0, 98.0, 0.0098)], 1, 1.0, 1.0, first={0}) == [2]  # 0.6 behind
    assert second_wave(lone[:2], [ScreenedPlan(0, 98.0, 0.0098)], 1, 1.0, 1.0, first={0}) == []
    assert second_wave(lone[:2], [ScreenedPlan(0, 98.0, 0.0098)], 1, 1.0, near=20.0, first={0}) == [1]


def test_shared_ratio_plans_clip_each_group_and_keep_the_uniform_ladder(digits_task):
    space = load_space("default")
    assert space.global_ratio is not None and space.screen.plans > 0
    resolved = resolve(space, digits_task.model, digits_task.example_input(1))
    uniform = resolved.suggest(optuna.trial.FixedTrial(resolved.uniform_params(0.9)))
    assert {c.ratio for c in uniform.groups.values()} == {0.9} and not uniform.drop_blocks
    assert resolved.suggest(optuna.trial.FixedTrial(resolved.baseline_params())).is_identity
    groups = [g.info.name for g in resolved.groups]
    params = {**resolved.uniform_params(0.8), f"{groups[0]}.deviation": 0.2, f"{groups[-1]}.deviation": -0.2}
    plan = resolved.suggest(optuna.trial.FixedTrial(params))
    assert plan.groups[groups[0]].ratio == 0.9  # 0.8 + 0.2, clipped to the rule's 0.9
    assert plan.groups[groups[-1]].ratio == pytest.approx(0.6)
    assert resolved.smallest_plan().groups[groups[0]].ratio == 0.9


def test_tilts_move_channels_between_early_and_late_and_between_inner_and_shared_groups(digits_task):
    import torch

    from autoprune.tasks.models import CifarResNet

    resolved = resolve(load_space("default"), CifarResNet(), torch.zeros(1, 1, 28, 28), ("fc",))
    depth = {g.info.name: g.depth for g in resolved.groups}
    assert depth["stem.0"] < 1 / 3 and depth["layers.4.shortcut.0"] >= 2 / 3 and depth["layers.5.conv1"] == 1.0
    base = resolved.uniform_params(0.7, precision="float32")

    def ratios(tilt):
        plan = resolved.suggest(optuna.trial.FixedTrial(resolved.tilted_params(base, tilt)))
        return {name: c.ratio for name, c in plan.groups.items()}

    early, inner = ratios("early"), ratios("inner")
    # the first third (stem stream and the first blocks' convolutions) loses more, the last third less
    assert early["stem.0"] == early["layers.0.conv1"] == pytest.approx(0.8)
    assert early["layers.4.shortcut.0"] == early["layers.5.conv1"] == pytest.approx(0.6)
    assert early["layers.2.conv1"] == pytest.approx(0.7)
    # a block's first convolution (one layer) loses more, the residual streams less
    assert {inner[f"layers.{i}.conv1"] for i in range(6)} == {0.8}
    assert {inner[g] for g in ("stem.0", "layers.2.shortcut.0", "layers.4.shortcut.0")} == {0.6}
    assert ratios("late")["stem.0"] == pytest.approx(0.6) and ratios("shared")["stem.0"] == pytest.approx(0.8)
    # tilts add to a plan's own deviations, within the space's range
    assert resolved.tilted_params({**base, "stem.0.deviation": 0.2}, "early")["stem.0.deviation"] == 0.2
    assert resolved.tilted_params(resolved.baseline_params(), "early") is None  # unpruned, however tilted
    # a model whose groups are all single layers has no inner/shared tilt (it would be a ladder step)
    plain = resolve(load_space("default"), digits_task.model, digits_task.example_input(1))
    assert plain.tilted_params(plain.uniform_params(0.5), "inner") is None
    assert plain.tilted_params(plain.uniform_params(0.5), "early") is not None


def test_a_screened_search_screens_then_trains_the_chosen_and_resumes_without_screening_again(tmp_path):
    import autoprune
    from autoprune import storage
    from autoprune.search_loop import SCREEN_ATTR, SCREEN_DRAWS, TILT_ATTR, WAVE_ATTR, Screening

    def run(trials: int):
        return autoprune.search(task="digits", device="x86-ort", latency_budget_ms=0.05, n_trials=trials,
                                results_dir=tmp_path, progress=False, finalize=False, screen_plans=24)

    result = run(5)
    study = optuna.load_study(study_name=result.study_dir.name, storage=storage.default_url(result.study_dir))
    records = storage.records(study)
    screened = [r for r in records if r.screen]
    trained = [r for r in records if not r.screen]
    assert all(r.state == "PRUNED" for r in screened)
    assert all(r.screen_latency_ms and r.latency_ms is None for r in screened)  # never shown as measured
    # 24 plans scored within the budget: a plan timed over it costs its timing only and does not
    # count, and the screen draws more (at most 4x) till 24 are scored
    scored = [r for r in screened if r.screen_score is not None]
    assert all(r.screen_latency_ms <= 0.05 for r in scored)
    assert all(r.screen_latency_ms > 0.05 for r in screened if r.screen_score is None)
    assert len(scored) == 24 or len(screened) == 24 * SCREEN_DRAWS
    # the uniform ladder is screened too (float32 and INT8, ratios 0.1 ... 0.9)
    assert sum(r.params.get("ratio") in (0.1, 0.5, 0.9) and not any(
        k.endswith(".deviation") and v for k, v in r.params.items()) for r in screened) >= 6
    # after the ladder, tilts of the plans on the screen's front within the budget
    tilted = [r for r in screened if r.params.get("ratio") and len({v for k, v in r.params.items()
                                                                     if k.endswith(".deviation")}) > 1]
    assert study.user_attrs[TILT_ATTR] >= 1 and len(tilted) >= study.user_attrs[TILT_ATTR]
    chosen = study.user_attrs[SCREEN_ATTR]
    assert [r.screened_from for r in trained if r.screened_from is not None] == chosen
    # three to train in two waves: the first chosen by the screen alone, the second once those are
    # trained. How many each wave finds depends on the host (on one, only two digits plans timed faster
    # than the unpruned model): both are replayed from the records by the search's own rules
    second = study.user_attrs[WAVE_ATTR]
    first = chosen[:len(chosen) - len(second)]
    assert load_space("default").screen.waves == 2 and 1 <= len(first) <= 2 and len(chosen) <= 3
    wave_of = {r.screened_from: r for r in trained if r.screened_from is not None}
    screening = Screening(plans=24, budget_ms=0.05, near=load_space("default").screen.near, seed=0)
    assert screening.unpruned_ms(records) < 0.05  # the budget does not bind: two waves, spread over latency
    # the pool as the choice saw it: before any trained trial the sampler added once the screen's ran out
    pool = screening.pool([r for r in records if r.screen or r.number < min(wave_of[k].number for k in first)])
    assert first == select(pool, 2, 0.05, screening.near)
    assert second == second_wave(pool, screening.trained(records, first, pool), 3 - len(first), 0.05,
                                 screening.near, first)
    if len(first) == 2 and second:
        assert max(wave_of[k].number for k in first) < wave_of[second[0]].number  # queued once those were trained
    assert trained[0].baseline and trained[1].warm_start == "unpruned int8"
    # no two plans the screen chose share an architecture and precision with each other or the unpruned
    # model's (they would time alike; the sampler's, once the choice ran out, may), and none it chose is
    # as slow as the unpruned model trained before it (float32 or INT8: on digits either may be faster)
    ours = trained[:2] + list(wave_of.values())
    assert len({(r.arch_hash, r.precision) for r in ours}) == len(ours)
    unpruned_ms = min(trained[0].latency_ms, trained[1].latency_ms)
    assert all(r.screen_latency_ms < unpruned_ms for r in screened if r.number in chosen)
    assert len(trained) == 5 and all(r.state == "COMPLETE" for r in trained)
    for r in wave_of.values():  # a trained plan is the screened plan it came from
        assert r.params == next(s for s in screened if s.number == r.screened_from).params
        # and its timing was taken again where it was far slower than the screen's figure
        screen_ms = next(s for s in screened if s.number == r.screened_from).screen_latency_ms
        if r.latency_rounds:
            assert slower(r.latency_rounds[0], screen_ms) and r.latency_ms == min(r.latency_rounds), r
        else:
            assert r.latency_cached or not slower(r.latency_ms, screen_ms), r
    # benchmarks/replay_waves.py rebuilds what the second wave saw and picks what it recorded
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    try:
        from replay_waves import replay
    finally:
        sys.path.pop(0)
    replayed = replay(result.study_dir, [2.0])
    if second:
        assert replayed["first"] == first and replayed["replayed"] == replayed["recorded"] == second
    else:
        assert replayed is None  # a second wave that found nothing to place: nothing to replay
    rows = result.trials
    assert set(rows[rows["state"] == "PRUNED"]["trial"]) == {r.number for r in screened}
    assert not result.front["trial"].isin(rows[rows["screen"].astype(bool)]["trial"]).any()

    again = run(6)  # one more trained trial: the screen is not run again
    records = storage.records(optuna.load_study(study_name=again.study_dir.name,
                                                storage=storage.default_url(again.study_dir)))
    assert sum(r.screen for r in records) == len(screened) and sum(not r.screen for r in records) == 6


def test_a_study_made_before_the_shared_ratio_space_resumes_reports_and_exports(tmp_path):
    """tests/fixtures/studies/before-screen: 3 digits trials made by autoprune before the
    default space changed (per-group methods, ratios 0.1-0.7, round_to 1 or 8)."""
    import autoprune
    from autoprune.deploy import run_package

    study_dir = tmp_path / "results" / "digits-x86-ort"
    shutil.copytree(FIXTURES / "studies" / "before-screen", study_dir)
    config = json.loads((study_dir / "config.json").read_text())
    assert config["space_hash"] != load_space("default").hash
    assert space_of(config).hash == config["space_hash"]  # its space, kept in search_spaces/retired/

    result = autoprune.search(task="digits", device="x86-ort", latency_budget_ms=1.0, n_trials=4,
                              results_dir=tmp_path / "results", progress=False, finalize=False)
    assert json.loads((study_dir / "config.json").read_text())["space_hash"] == config["space_hash"]
    newest = result.trials.sort_values("trial").iloc[-1]
    assert newest["trial"] == 3 and newest["state"] == "COMPLETE"
    assert "param:ratio" not in result.trials or result.trials["param:ratio"].isna().all()  # the old space's plan
    assert any(c.endswith(".method") for c in result.trials.columns if c.startswith("param:"))

    report = autoprune.write_report(study_dir)
    assert Path(report).is_file()
    autoprune.export_trial(result, trial=2, out=tmp_path / "deploy")
    assert run_package(tmp_path / "deploy")["output_shape"]


def test_a_study_made_before_block_removal_keeps_the_space_it_recorded():
    """Studies made with the default space of 2026-12-03 to 2026-12-06 (shared ratio, no
    block removal) recorded this hash in config.json (that commit's search_spaces/default.yaml
    hashed); they resume, report and export under it, as the study above does under its own."""
    recorded = "5edc9b7e171b62bbdb33734f9b6640a4b061da18051143df7accccf3d5e6dc76"
    today = load_space("default")
    assert today.hash != recorded and today.depth is not None and today.global_ratio is not None
    old = space_of({"space": "default", "space_hash": recorded})
    assert old.hash == recorded and old.depth is None and old.global_ratio == today.global_ratio


def test_a_study_made_before_two_waves_keeps_training_its_choice_in_one():
    """Studies made with the default space of 2026-12-06 to 2026-12-07 (block removal, the
    screen's choice trained at once) recorded this hash; they keep that space, one wave."""
    recorded = "83a9898ea018ea0b53a78127563bf67769a2ade4ed1889c2718787e0684f6a3e"
    today = load_space("default")
    assert today.hash != recorded and today.screen.waves == 2
    old = space_of({"space": "default", "space_hash": recorded})
    assert old.hash == recorded and old.screen.waves == 1 and old.depth == today.depth
    # a study made with --screen-plans (make demo's 24) recorded the hash with them: its space is found as well
    demo = old.with_screen_plans(24)
    identity = {"space": "default", "space_hash": demo.hash, "screen_plans": 24}
    assert space_of(identity) == demo and space_of(identity).screen.waves == 1
    assert space_of(identity, screen_plans_applied=False) == old  # for a command that applies its own


def test_a_screened_study_made_before_two_waves_resumes_reports_and_exports(tmp_path):
    """tests/fixtures/studies/one-wave-screened: a digits search made by autoprune at
    a0fe9c3 (2026-12-07, the default space before two waves) with --screen-plans 6 and
    --trials 3, as make demo's is made. Its recorded hash is that space's with 6 plans."""
    import autoprune
    from autoprune import storage
    from autoprune.deploy import run_package
    from autoprune.search_loop import WAVE_ATTR

    study_dir = tmp_path / "results" / "digits-x86-ort"
    shutil.copytree(FIXTURES / "studies" / "one-wave-screened", study_dir)
    config = json.loads((study_dir / "config.json").read_text())
    assert config["screen_plans"] == 6 and space_of(config).hash == config["space_hash"]
    assert space_of(config).screen.waves == 1 and load_space("default").screen.waves == 2

    result = autoprune.search(task="digits", device="x86-ort", latency_budget_ms=1.0, n_trials=4, screen_plans=6,
                              results_dir=tmp_path / "results", progress=False, finalize=False)
    assert json.loads((study_dir / "config.json").read_text())["space_hash"] == config["space_hash"]
    rows = result.trials
    assert (rows["state"] == "PRUNED").sum() == 6 and (rows["state"] == "COMPLETE").sum() == 4  # not screened again
    study = optuna.load_study(study_name=study_dir.name, storage=storage.default_url(study_dir))
    assert WAVE_ATTR not in study.user_attrs  # its own space's one wave
    newest = int(rows[rows["state"] == "COMPLETE"]["trial"].max())
    assert Path(autoprune.write_report(study_dir)).is_file()
    autoprune.export_trial(result, trial=newest, out=tmp_path / "deploy")
    assert run_package(tmp_path / "deploy")["output_shape"]


def test_a_screen_smaller_than_the_uniform_ladder_screens_the_ladder_and_trains(tmp_path):
    import autoprune

    result = autoprune.search(task="digits", device="x86-ort", latency_budget_ms=1.0, n_trials=3,
                              results_dir=tmp_path, progress=False, finalize=False, screen_plans=4)
    rows = result.trials
    assert (rows["state"] == "PRUNED").sum() == 4  # the ladder's first four plans
    # on digits, ratios 0.1 and 0.2 round to the unpruned model's layers: the screen leaves out what
    # trials 0 and 1 trained already, and the third trained trial is the sampler's, of other layers
    done = rows[rows["state"] == "COMPLETE"]
    assert len(done) == 3 and rows["screened_from"].notna().sum() == 0
    assert done[["params", "precision"]].drop_duplicates().shape[0] == 3  # (parameter counts)


def test_the_screen_times_with_a_short_protocol_of_its_own_cache_key():
    from autoprune.profiles import load_profile

    for name in ("x86-ort", "x86-tvm"):
        full = load_profile(name)
        short = full.for_screen()
        assert short.hash != full.hash and short.measurement.sessions == 1 and short.measurement.max_seconds <= 0.5
        assert short.tvm is None or short.tvm.tuning.max_trials == 0  # untuned: seconds a plan


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--screen-plans", "-1"], "", "--screen-plans must be 0 (no screen) or more, got -1."),
    ([], "many", "AUTOPRUNE_SCREEN_PLANS must be a whole number of plans >= 0 (0: no screen), got 'many'."),
    (["--final-members", "0"], "", "--final-members must be 1 or more, got 0."),
])
def test_a_bad_screen_or_finalize_size_is_one_line_and_writes_nothing(tmp_path, monkeypatch, args, env, message):
    monkeypatch.setenv("AUTOPRUNE_SCREEN_PLANS", env)
    proc = run_cli("search", "--task", "digits", "--device", "x86-ort", "--latency-budget-ms", "1", "--trials", "3",
                   "--results-dir", str(tmp_path / "r"), *args)
    assert proc.returncode == 2 and proc.stderr.strip() == f"autoprune: error: {message}", proc.stderr
    assert not (tmp_path / "r").exists()
