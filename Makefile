# Quick start:  make demo   (runs `evalkit run` on the embedded digits)
#               make test   (the test suite)
# Both create .venv and install evalkit (distribution evalkit-gen, editable) with pinned dependencies
# (constraints.txt) first; pyproject.toml declares the torch range, the exact pin is here and there.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean-venv

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: on a CPU machine pip takes the local CPU build of 2.13.0.
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/evalkit run

# one pytest worker per core, at most 4 (pytest-xdist); `pytest -q -p no:xdist` runs in one process
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4

clean-venv:
	rm -rf $(VENV)
