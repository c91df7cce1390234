# Two commands on a fresh machine (Python 3.10+, no model hub needed):
#   make demo   - create .venv, install, run the whole study on the embedded demo models
#   make test   - create .venv, install with test extras, lint and run every test
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/demo

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) scripts/run_study.py --config=configs/demo.py --workdir=$(WORKDIR)

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The report's browser test (tests/report/test_html.py) drives headless Chromium. CI runs as root
# and gets it here from apt; elsewhere, or where apt cannot install it, the build goes on and the
# test skips, saying why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -q && apt-get install -y -q chromium; } || \
	echo "chromium not installed: tests/report/test_html.py will skip its browser checks"

test: lint browser
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=20 -m "not slow"

bench: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/bench_extraction.py
	$(PY) benchmarks/bench_steering.py
	$(PY) benchmarks/bench_heads.py

.PHONY: install demo lint browser test bench
