# make demo: create .venv, install xfads, run the main job on bundled data.
# make test: the same install, then the test suite (what CI runs).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Pinned so a fresh venv does not resolve a multi-GB CUDA build; override for your machine,
# e.g. `make demo TORCH=torch` on a CUDA workstation.
TORCH  ?= torch==2.13.0
DEMO   ?= demo_out
DEMO_MINUTES ?= 2

.PHONY: install test demo fixtures clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# Two pytest workers (pytest-xdist), one test file each at a time (module fixtures are built once): the
# suite takes about half the time of one process on 2 cores. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

test: install
	$(BIN)/python -m pytest tests $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

demo: install
	mkdir -p $(DEMO)
	$(BIN)/xfads simulate lorenz --out $(DEMO)/lorenz.nwb --neurons 40 --trials 120 --bins 100 --seed 1 --overwrite
	$(BIN)/xfads inspect $(DEMO)/lorenz.nwb
	$(BIN)/xfads fit $(DEMO)/lorenz.nwb --config sample_configs/lorenz.yaml --time-limit $(DEMO_MINUTES) --out $(DEMO)/run --overwrite --plot
	$(BIN)/xfads smooth $(DEMO)/run $(DEMO)/lorenz.nwb --out $(DEMO)/smooth.h5 --overwrite --plot
	$(BIN)/xfads forecast $(DEMO)/run $(DEMO)/lorenz.nwb --context 40 --horizon 20 --split test --out $(DEMO)/forecast.h5 --overwrite --plot
	$(BIN)/xfads inspect data_fixtures/mc_maze_2trials.nwb --set data.behavior=hand_vel

# Regenerate the synthetic fixtures (fixed seeds, so the files are reproducible).
fixtures: install
	$(BIN)/xfads simulate lorenz --out data_fixtures/lorenz_small.nwb --neurons 40 --trials 60 --bins 100 --seed 1 --overwrite
	$(BIN)/xfads simulate vdp --out data_fixtures/vdp_small.h5 --neurons 30 --trials 60 --bins 80 --seed 2 --overwrite
	$(BIN)/xfads simulate duffing --out data_fixtures/duffing_small.nwb --neurons 30 --trials 40 --bins 80 --seed 3 --overwrite

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
