# diffnb: `make test` creates .venv, installs everything and runs every check; `make docs` builds the docs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.diffnb-installed
TORCH ?= torch==2.13.0

.PHONY: install test demo checks pytest docs readme export clean-nbs clean bench-gpu

# Python writes each module's bytecode when it first imports it, in every recipe here: PYTHONDONTWRITEBYTECODE (set on some machines)
# would make every process compile torch again (import torch: 7 s instead of 3). So nothing is compiled at install: compiling all
# 16.7k files took 65 s of a fresh install; the 5.9k that `make test` imports compile once, as they are first imported.
unexport PYTHONDONTWRITEBYTECODE

$(STAMP): setup.py settings.ini
	@command -v python3 >/dev/null || { echo "make: python3 (3.10+) is needed to create $(VENV)"; exit 1; }
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -qq --no-compile $(TORCH) numpy   # torch first, by pip (its configuration may point at a CPU wheel): not a CUDA build pulled in by a dependency
	$(PIP) install -qq --no-compile uv            # uv installs the rest, about 170 packages, in parallel
	$(UV) pip install -q --python $(PY) -e ".[dev]"
	$(UV) pip install -q --python $(PY) --no-deps k-diffusion torchsde trampoline torch-fidelity   # their own requirements would replace torch (torch-fidelity's torchvision; diffnb loads only its Inception-v3, which needs torch alone)
	$(PY) -m ipykernel install --sys-prefix --name diffnb --display-name "Python (diffnb)" >/dev/null
	@touch $@

install: $(STAMP)

# Fail fast, in order: sync, clean, README; then pytest, whose summary line is the last line printed (tests/test_docs.py runs
# nbdev's docs processing on every notebook as it builds the site, so `make checks` alone repeats it up front).
test: install
	@$(PY) tools/checks.py sync clean readme
	@$(PY) -m pytest tests --durations=15

# The main job: train on the 8-Gaussian ring (GPU if present, else CPU), compare samplers, write demo/report.html.
demo: install
	@$(PY) -m diffnb demo --out demo

# Image training throughput (benchmarks/gpu_train.py): the 'cifar10' U-Net on a GPU, the 'tiny' one on the CPU in seconds.
bench-gpu: install
	@$(PY) benchmarks/gpu_train.py

checks: install
	@$(PY) tools/checks.py

pytest: install
	@$(PY) -m pytest tests

export: install
	@$(VENV)/bin/nbdev_export

clean-nbs: install
	@$(VENV)/bin/nbdev_clean
	@$(PY) tools/checks.py strip

readme: install
	@$(PY) tools/readme.py

docs: install
	@$(PY) tools/docs.py

clean:
	rm -rf _docs _proc build .pytest_cache
