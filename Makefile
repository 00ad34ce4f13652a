# The two entry points the README names. Both install what they need first.
.PHONY: demo test unit

demo:
	tools/demo.sh

test:
	tools/bootstrap.sh --test
	.venv/bin/python -m pytest -q tests

unit:
	.venv/bin/python -m pytest -q tests/unit
