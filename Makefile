# The two commands the README opens with. Each sets itself up (scripts/bootstrap.sh).
.PHONY: setup demo test test-fast bench

setup:
	@scripts/bootstrap.sh

# A short search on the reference task: score 24 plans within the budget (at most 96
# drawn), train 4 (the baseline and the unpruned model at INT8 among them), finalize the
# most accurate within the budget (a member's full fine-tune takes 2-3 min here); prints
# the Pareto front and the pick.
# The budget is relative (--speedup 8: 1/8 of the unpruned model's latency, measured),
# because a budget in ms held on one host and not the next (2026-12-06).
demo: setup
	.venv/bin/autoprune search --task fashion-mnist --device x86-ort --speedup 8 --trials 4 \
		--screen-plans 24 --final-members 1

# The whole suite, slow tests included (what CI runs).
test: setup
	.venv/bin/python -m pytest

# The default quick loop while developing.
test-fast: setup
	.venv/bin/python -m pytest -m "not slow"

bench: setup
	.venv/bin/python benchmarks/stage_times.py
