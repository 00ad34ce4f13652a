# The entry points the README names. Each installs what it needs first.
.PHONY: demo test lint unit bench

demo:
	tools/demo.sh

test:
	tools/bootstrap.sh --test
	$(MAKE) --no-print-directory lint
	.venv/bin/python -m pytest -q tests

# ruff, then mypy (strict on cfs/), as configured in pyproject.toml; any finding fails.
lint:
	.venv/bin/ruff check .
	.venv/bin/mypy

unit:
	.venv/bin/python -m pytest -q tests/unit

# The benchmark suite (docs/PERFORMANCE.md), as root; not part of the tests.
# Arguments through BENCH_ARGS, e.g. make bench BENCH_ARGS="--quick --only fio".
bench:
	tools/bootstrap.sh --bench
	.venv/bin/cfs bench $(BENCH_ARGS)
