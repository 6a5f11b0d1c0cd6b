# Two commands for a newcomer: `make run` (install + the tutorial's CV) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data/pima-indians-diabetes.csv
DATA_ARG := $(if $(wildcard $(DATA)),--data $(DATA),)

.PHONY: install run grid test lint benchmark

$(BIN)/foldflow: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/foldflow

run: install
	$(BIN)/foldflow cv $(DATA_ARG)

grid: install
	$(BIN)/foldflow grid $(DATA_ARG)

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

benchmark: install
	$(BIN)/python -m benchmarks.run $(DATA_ARG)
