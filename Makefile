# The two commands the README opens with. Each sets itself up (scripts/bootstrap.sh).
.PHONY: setup demo test test-fast bench

setup:
	@scripts/bootstrap.sh

# A short search on the reference task: screen 64 plans, train the best 6 (baseline and
# unpruned INT8 among them), finalize; prints the Pareto front and the recommended pick.
demo: setup
	.venv/bin/autoprune search --task fashion-mnist --device x86-ort --latency-budget-ms 0.2 --trials 6 \
		--screen-plans 64

# The whole suite, slow tests included (what CI runs).
test: setup
	.venv/bin/python -m pytest

# The default quick loop while developing.
test-fast: setup
	.venv/bin/python -m pytest -m "not slow"

bench: setup
	.venv/bin/python benchmarks/stage_times.py
