# Two commands for a newcomer: `make run` (install + the tutorial's CV) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data/pima-indians-diabetes.csv
DATA_ARG := $(if $(wildcard $(DATA)),--data $(DATA),)

# The UI tests drive Debian's Chromium (tests/e2e/conftest.py); `make test` installs it when
# missing, as root or through sudo, and otherwise stops with one line saying what to install.
CHROMIUM ?= /usr/bin/chromium
CHROMEDRIVER ?= /usr/bin/chromedriver
BROWSER_PACKAGES := chromium chromium-driver
BROWSER_HINT := make test needs Chromium for the UI tests: install Debian's chromium and chromium-driver \
	(as root: apt-get install -y $(BROWSER_PACKAGES)) and run make test again
# "=", not ":=": evaluated only when `browser` runs. Empty when both programs are there.
browser_missing = $(shell [ -x "$(CHROMIUM)" ] && [ -x "$(CHROMEDRIVER)" ] || echo missing)
# How to run apt-get: as root; else sudo without a password, or asking on this terminal.
apt_as = $(shell command -v apt-get >/dev/null || exit; \
	if [ "$$(id -u)" = 0 ]; then echo env; \
	elif command -v sudo >/dev/null && { sudo -n true 2>/dev/null || [ -t 0 ]; }; then echo sudo env; fi)

# Unit and flow tests in three processes (each with its own ephemeral Prefect API), one test
# file per process at a time; the end-to-end tests, which start servers and browsers, one at a
# time. Three, on 2 cores: the tests often wait (servers starting, fit workers, subprocesses),
# and a third process fills those waits. Measured here in fresh-clone runs (2026-12-06): 3
# processes 14 min 15 s, 4 processes 15 min 14 s (2, with the tests' API still keeping its
# event feed: 16 min 20 s).
PYTEST_PARALLEL ?= -n 3 --dist loadfile

# The e2e stack runs on a throwaway PostgreSQL (tests/e2e/postgres.py): Debian's server package.
POSTGRES_PACKAGES := postgresql
POSTGRES_HINT := make test needs PostgreSQL for the e2e tests: install Debian's postgresql \
	(as root: apt-get install -y $(POSTGRES_PACKAGES)) and run make test again
postgres_missing = $(shell ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || echo missing)

.PHONY: install run grid test lint docs benchmark browser postgres

$(BIN)/foldflow: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# pip byte-compiles one file at a time (half of a 60 s install); compileall uses every core.
	$(BIN)/pip install --quiet --no-compile -e '.[dev]'
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib >/dev/null || true
	touch $@

install: $(BIN)/foldflow

run: install
	$(BIN)/foldflow cv $(DATA_ARG)

grid: install
	$(BIN)/foldflow grid $(DATA_ARG)

browser:
	$(if $(browser_missing),$(if $(apt_as),,$(error $(BROWSER_HINT))))
	$(if $(browser_missing),@echo "installing $(BROWSER_PACKAGES) for the UI tests (apt-get)" \
	    && $(apt_as) DEBIAN_FRONTEND=noninteractive apt-get update -qq \
	    && $(apt_as) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PACKAGES) \
	    >/dev/null)
	@[ -x "$(CHROMIUM)" ] && [ -x "$(CHROMEDRIVER)" ] || { echo "$(BROWSER_HINT)" >&2; exit 1; }

postgres:
	$(if $(postgres_missing),$(if $(apt_as),,$(error $(POSTGRES_HINT))))
	$(if $(postgres_missing),@echo "installing $(POSTGRES_PACKAGES) for the e2e tests (apt-get)" \
	    && $(apt_as) DEBIAN_FRONTEND=noninteractive apt-get update -qq \
	    && $(apt_as) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(POSTGRES_PACKAGES) \
	    >/dev/null)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "$(POSTGRES_HINT)" >&2; exit 1; }

test: browser postgres install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MAKE) --no-print-directory docs
	@# The end-to-end tests (mostly waiting on servers and workers) run beside the unit, flow
	@# and docs tests, their output shown when both are done: about 11 min instead of 15.
	@log=$$(mktemp); \
	$(BIN)/python -m pytest tests/e2e --durations=10 >$$log 2>&1 & e2e=$$!; \
	status=0; \
	$(BIN)/python -m pytest tests/unit tests/flows tests/docs $(PYTEST_PARALLEL) --durations=15 \
	    || status=$$?; \
	wait $$e2e || status=$$?; \
	echo "--- end-to-end tests (run beside the others) ---"; cat $$log; rm -f $$log; \
	exit $$status

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# The docs site (mkdocs.yml, docs/): --strict fails on any warning, a broken link or a missing
# page among them. The build needs no network; site/ is git-ignored.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

benchmark: install
	$(BIN)/python -m benchmarks.run $(DATA_ARG)
