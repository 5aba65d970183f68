# optarena: every target makes and uses its own virtualenv in .venv.
#   make suite=tiny          run a suite (tiny, the CPU default, when none is named)
#   make suite=gpt2_small seeds=3 optimizers=[adamw,adam_mini]
#   make plan suite=NAME     print the runs, their status, time and memory; run nothing
#   make status suite=NAME   each run's status, step of total, last losses and time left
#   make tune suite=NAME [optimizers=[...]] [trials=N]   Optuna lr tuning -> results/<suite>/tuned.yaml
#   make test                the test suite
#   make check-optimizer target=package.module.Class [ARGS="lr=1e-3 betas=[0.9,0.95]"]   the optimizer contract on your class
#   make bench               the step and training-loop benchmarks
#   make report suite=tiny   rebuild results/<suite>/report.html from the results folder
#   make dashboard           results/index.html: every suite's verdicts, its scaling plots, a link to its report
#   make export suite=NAME [format=parquet]   runs + metrics tables -> results/<suite>/export/
#   make data name=NAME [source=DIR]   prepare shakespeare_bytes, shakespeare_gpt2 or openwebtext (DIR: a save_to_disk copy)
#   make clean               remove the virtualenv and caches (results/ and data/ are kept)

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
suite ?= tiny
name ?= shakespeare_bytes
# Extra key=value overrides for the suite, e.g. make suite=tiny ARGS="budget.tokens=2e5";
# config_dir=DIR adds your own suites folder (DIR/suite/NAME.yaml)
ARGS ?=
OVERRIDES = $(if $(config_dir),--config-dir $(config_dir)) suite=$(suite) $(if $(seeds),seeds=$(seeds)) $(if $(optimizers),only=$(optimizers)) \
	$(if $(force),force=$(force)) $(if $(device),plan_device=$(device)) $(ARGS)

.DEFAULT_GOAL := run
.PHONY: run plan status tune install test bench report data clean

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
	$(PY) -m runners.suite $(OVERRIDES)

plan: install
	$(PY) -m runners.suite $(OVERRIDES) plan=true

status: install
	$(PY) -m runners.suite $(OVERRIDES) status=true

tune: install
	$(PY) -m runners.tune $(OVERRIDES) $(if $(trials),tune.trials=$(trials))

# Two pytest workers for the tests that need nothing shared, then the ones that apt-get install
# (one dpkg lock) or start the SLURM test cluster (fixed ports) in one process after them.
test: install
	$(PY) -m pytest -q -n 2 -m "not slurm and not browser"
	$(PY) -m pytest -q -m "slurm or browser"

bench: install
	$(PY) -m bench

report: install
	$(PY) -m analysis.report results/$(suite)

.PHONY: dashboard
dashboard: install
	$(PY) -m analysis.dashboard results

.PHONY: check-optimizer
check-optimizer: install
	$(PY) -m optimizers.contract $(target) $(ARGS)

.PHONY: export
export: install
	$(PY) -m analysis.export results/$(suite) --format $(or $(format),csv)

# HF datasets (the `data` extra), for openwebtext only, installed on its first use
$(VENV)/.data-installed: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[data]'
	touch $@

data: install $(if $(filter openwebtext,$(name)),$(VENV)/.data-installed)
	$(PY) -m runners.data $(name) $(if $(source),--source '$(source)')

clean:
	rm -rf $(VENV) .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
