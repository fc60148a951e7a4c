# Entry points a person types. Everything runs inside .venv, made by scripts/dev_setup.sh.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint demo bench clean

setup:
	@scripts/dev_setup.sh

test: setup
	@scripts/run_tests.sh

lint: setup
	$(BIN)/ruff check alpamayo_ros test scripts launch tools 2>/dev/null || $(BIN)/ruff check alpamayo_ros test launch
	$(BIN)/mypy alpamayo_ros/core

demo: setup
	@scripts/run_demo.sh

bench: setup
	@scripts/run_benchmarks.sh

clean:
	rm -rf build $(VENV) .pytest_cache .mypy_cache .ruff_cache
