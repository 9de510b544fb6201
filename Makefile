# Two entry points: `make demo` and `make test`. Both install what they need (as root on Debian).
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint bench mutate system-deps test-deps venv clean

system-deps:
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || { \
	  echo "installing mosquitto (Debian package)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq mosquitto mosquitto-clients >/dev/null; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing PostgreSQL (Debian package: the shared journal's tests start a throwaway server)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql postgresql-client >/dev/null; }
	@ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || { \
	  echo "installing faketime (Debian package: the clock-step tests run the bridge under libfaketime)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq faketime >/dev/null; }
	@command -v mosquitto_sub >/dev/null 2>&1 || { \
	  echo "installing mosquitto-clients (Debian package: the demo prints mosquitto_sub/mosquitto_pub lines)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq mosquitto-clients >/dev/null; }
	@python3 -c 'import venv, ensurepip' 2>/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv >/dev/null; }

# Only the test suite needs these: the status page in a real browser, and promtool for the alert rules.
test-deps: system-deps
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || { \
	  echo "installing chromium, chromium-driver and prometheus (Debian packages: browser test, promtool)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    chromium chromium-driver prometheus >/dev/null; }

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dev]'
	touch $@

venv: $(STAMP)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check semookii_bridge
	$(VENV)/bin/mypy

test: test-deps venv lint
	$(PY) -m pytest -q

bench: system-deps venv
	$(PY) bench/run.py

# Mutation testing of the guarantee-bearing modules (pyproject [tool.mutmut]); not in CI: about 15 minutes on
# 2 cores. Bounded by MUTATE_SECONDS; writes mutants/REPORT.md and fails below 85 % detected.
MUTATE_SECONDS ?= 2700
mutate: system-deps venv
	$(PY) -m pip install -q -e '.[mutate]'
	rm -rf mutants
	timeout $(MUTATE_SECONDS) $(VENV)/bin/mutmut run --max-children $$(nproc) >mutants.log 2>&1 || \
	  echo "mutmut stopped early (see mutants.log); unchecked mutants are left out of the score"
	$(PY) tests/mutation_report.py --target 85

demo: system-deps venv
	$(PY) -m semookii_bridge.cli.demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache mutants mutants.log
