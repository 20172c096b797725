# Two commands do all the set-up on a fresh clone:
#   make run    trains teacher, student and distilled students on the built-in data and prints the table
#   make test   runs the test suite (data sets are read from $DISTILLREC_DATA_DIR, default ../shared/data)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# The CPU build of torch lies on disk on these machines; pointing pip at it avoids a multi-GB CUDA download.
FIND_LINKS = $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
export DISTILLREC_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: run test lint venv clean

$(BIN)/distillrec: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(FIND_LINKS) -e '.[dev]'
	touch $(BIN)/distillrec

venv: $(BIN)/distillrec

run: venv
	$(BIN)/distillrec run --out runs/demo

test: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs
