# The entry points the README names. Each installs what it needs first.
.PHONY: demo test unit bench

demo:
	tools/demo.sh

test:
	tools/bootstrap.sh --test
	.venv/bin/python -m pytest -q tests

unit:
	.venv/bin/python -m pytest -q tests/unit

# The benchmark suite (docs/PERFORMANCE.md), as root; not part of the tests.
# Arguments through BENCH_ARGS, e.g. make bench BENCH_ARGS="--quick --only fio".
bench:
	tools/bootstrap.sh --bench
	.venv/bin/cfs bench $(BENCH_ARGS)
