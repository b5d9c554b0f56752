# The two commands the README opens with. Each sets itself up (scripts/bootstrap.sh).
.PHONY: setup demo test test-fast bench

setup:
	@scripts/bootstrap.sh

# A short search on the reference task; prints the Pareto front.
demo: setup
	.venv/bin/autoprune search --task fashion-mnist --device x86-ort --latency-budget-ms 0.2 --trials 20

# The whole suite, slow tests included (what CI runs).
test: setup
	.venv/bin/python -m pytest

# The default quick loop while developing.
test-fast: setup
	.venv/bin/python -m pytest -m "not slow"

bench: setup
	.venv/bin/python benchmarks/stage_times.py
