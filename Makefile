# The two commands: `make experiment` and `make test`. Each installs what it needs first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NAME ?= default
ARGS ?=
LOGDIR ?= runs

.PHONY: install test experiment tensorboard lint clean-cache

# Re-install only when the dependency files change. constraints.txt pins the CPU torch of this
# machine; a user with their own CUDA torch installs with `pip install -e .` and keeps it.
$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[gemma,dev]"
	touch $(STAMP)

install: $(STAMP)

# The suite runs one pytest worker per core (pytest-xdist; a file's tests stay on one worker), each worker
# single-threaded so that workers do not fight over the cores. WORKERS=0 runs it in this process.
WORKERS ?= auto
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(WORKERS) --dist loadfile

experiment: $(STAMP)
	$(PY) -m recpie run $(NAME) $(ARGS)

tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir $(LOGDIR)

lint: $(STAMP)
	$(VENV)/bin/ruff check recpie data_modules experiments tests benchmarks

clean-cache:
	rm -rf .cache
