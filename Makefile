# Two commands do it all on a fresh machine: `make demo` and `make test` (see README).
# The venv is (re)built when pyproject.toml changes; plain pip on purpose (ENVIRONMENT.md: uv/poetry
# ignore this machine's pip configuration and would download ~3 GB more).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,test]'
	$(PY) -m pip install --quiet --no-deps 'pyiqa==0.1.16'  # its declared tree is heavy and unused: see pyproject [metrics]
	$(PY) -m harness.openjpeg
	$(PY) -c "from harness.codecs.rdeic.bitstream import import_torchac; import_torchac()"  # builds torchac once (~30 s)
	@# headless Chromium for the report browser tests (tests/test_browser.py); they skip in one line without it
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; }; } \
	  || echo "note: no chromium; the browser tests will skip (Debian: apt-get install -y chromium)"; }
	touch $(STAMP)

demo: $(STAMP)
	$(PY) evaluate.py --suite demo --fresh

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench: $(STAMP)  # issue #17: every benchmark, rewrites benchmarks/RESULTS.md (6-12 min measured on 2 shared cores; BENCH_ARGS=--quick)
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf runs .pytest_cache .ruff_cache
