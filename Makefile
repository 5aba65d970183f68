# optarena: every target makes and uses its own virtualenv in .venv.
#   make suite=tiny          run a suite (tiny, the CPU default, when none is named)
#   make test                the test suite
#   make bench               the step and training-loop benchmarks
#   make report suite=tiny   rebuild results/<suite>/report.html from the results folder
#   make data name=NAME      prepare a data set (shakespeare_bytes, shakespeare_gpt2, openwebtext)
#   make clean               remove the virtualenv and caches (results/ and data/ are kept)

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
suite ?= tiny
name ?= shakespeare_bytes
# Extra key=value overrides for the suite, e.g. make suite=tiny ARGS="seeds=[0,1]"
ARGS ?=

.DEFAULT_GOAL := run
.PHONY: run install test bench report data clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: this takes the CPU wheel; a looser pin would pull a CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	# GPT-2 BPE offline: only the vocabulary file of this package is used, not its code
	$(PY) -m pip install --quiet --no-deps openai-whisper==20250625
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m runners.suite suite=$(suite) $(ARGS)

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) -m bench

report: install
	$(PY) -m analysis.report results/$(suite)

data: install
	$(PY) -m runners.data $(name)

clean:
	rm -rf $(VENV) .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
