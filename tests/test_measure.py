from __future__ import annotations

import json
import time
import warnings

import pytest

from autoprune.measure import Measurement, MeasurementCache, median_ci, robust_cv, timed_loop
from autoprune.profiles import MeasureConfig


def test_median_ci_brackets_the_median():
    xs = sorted(float(i) for i in range(101))
    lo, hi = median_ci(xs)
    assert lo < 50 < hi
    assert hi - lo < 25  # about +-1.96*sqrt(n)/2 ranks
    lo2, hi2 = median_ci(sorted(float(i) for i in range(10001)))
    assert (hi2 - lo2) / 10001 < (hi - lo) / 101  # narrower with more samples


def test_timed_loop_measures_real_time_and_stops_at_the_ci_target():
    cfg = MeasureConfig(warmup=2, min_repeats=20, max_repeats=400, target_ci=0.05, max_seconds=2)
    m = timed_loop(lambda: time.sleep(0.002), cfg, threads=1)
    assert 1.9 < m.median_ms < 20  # sleep(2 ms) takes at least 2 ms, more on a busy machine
    assert m.ci_low_ms <= m.median_ms <= m.ci_high_ms <= m.p90_ms * 1.5
    assert m.runs >= 20 and m.runs % 20 == 0
    assert m.threads == 1 and m.load_avg >= 0


def test_timed_loop_flags_and_retries_noise():
    cfg = MeasureConfig(warmup=0, min_repeats=10, max_repeats=10, target_ci=0.001, max_cv=0.01, noise_retries=2)
    n = iter(range(10**6))

    def jittery():  # every third call is 4x slower: CV far above 1%
        time.sleep(0.004 if next(n) % 3 == 0 else 0.001)

    m = timed_loop(jittery, cfg, threads=1)
    assert m.noisy and m.attempts == 3


def test_a_few_outliers_do_not_make_a_steady_timing_noisy():
    """The CV that decides noise is robust: two 1-ms hiccups among 100 runs of 0.03 ms
    (a classic CV above 2) leave a steady timing steady; a broad spread still is noisy."""
    import statistics

    steady = sorted([0.030 + 0.0001 * (i % 5) for i in range(98)] + [1.0, 1.0])
    assert statistics.pstdev(steady) / statistics.fmean(steady) > 2  # what the classic CV said
    assert robust_cv(steady) < 0.01
    broad = sorted(0.030 * (1 + i / 50) for i in range(100))  # 0.03 to 0.09 ms, evenly
    assert robust_cv(broad) > 0.15
    assert robust_cv([0.03]) == 0.0


def _m(**kw):
    base = dict(median_ms=1.0, p90_ms=1.1, mean_ms=1.0, min_ms=0.9, cv=0.02, ci_low_ms=0.99,
                ci_high_ms=1.01, runs=50, attempts=1, noisy=False, threads=1, load_avg=0.1, wall_s=0.2)
    base.update(kw)
    return Measurement(**base)


def test_cache_round_trips_and_skips_noisy(tmp_path):
    path = tmp_path / "m.json"
    cache = MeasurementCache(path)
    cache.put("a:ort:p", _m())
    cache.put("b:ort:p", _m(noisy=True))
    again = MeasurementCache(path)
    assert again.get("a:ort:p") == _m()
    assert again.get("b:ort:p") is None and len(again) == 1


@pytest.mark.parametrize("content", ["{not json", json.dumps({"schema": "other", "entries": {}}),
                                     json.dumps({"schema": "autoprune.measurement-cache/1", "entries": {"k": {"x": 1}}})])
def test_corrupt_cache_is_moved_aside_not_trusted(tmp_path, content):
    path = tmp_path / "m.json"
    path.write_text(content)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache = MeasurementCache(path)
    assert len(cache) == 0
    assert (tmp_path / "m.corrupt").read_text() == content
    assert any("unreadable" in str(w.message) for w in caught)


def test_combine_takes_the_median_of_process_medians_and_flags_spread():
    from autoprune.measure import combine

    parts = [_m(median_ms=1.0, ci_low_ms=0.98, ci_high_ms=1.02), _m(median_ms=1.1, ci_low_ms=1.08, ci_high_ms=1.12),
             _m(median_ms=2.0, ci_low_ms=1.9, ci_high_ms=2.1)]
    m = combine(parts, max_spread=0.15)
    assert m.median_ms == 1.1 and m.sessions == 3 and m.runs == 150
    assert m.ci_low_ms == 0.98 and m.ci_high_ms == 2.1
    assert m.session_spread == pytest.approx(1.0 / 1.1) and m.noisy
    steady = combine(parts[:2], max_spread=0.15)
    assert not steady.noisy and steady.median_ms == pytest.approx(1.05)
