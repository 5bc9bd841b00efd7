# biaslab: every target does its own set-up, so `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BIN := target/release/biaslab
# tch 0.24 builds against the PyTorch wheel in the project virtualenv (shared/DESIGN.md: Build).
export LIBTORCH_USE_PYTORCH := 1
export VIRTUAL_ENV := $(CURDIR)/$(VENV)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
CARGO_FLAGS := --release --locked

.PHONY: setup build demo test test-rust test-notebooks bench clean-data

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

build: setup
	cargo build $(CARGO_FLAGS)

test: build
	cargo test $(CARGO_FLAGS)
	bash tests/notebooks.sh

demo: build
	bash experiments/demo.sh

bench: build
	bash benches/run.sh
