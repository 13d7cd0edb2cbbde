# The README's two commands: `make demo` and `make test`. Both create .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -c constraints.txt

.PHONY: demo test bench install clean

$(BIN)/lmforge: pyproject.toml constraints.txt
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(PIP) -q --upgrade pip
	$(PIP) -q -e '.[test,hf]'
	touch $@

install: $(BIN)/lmforge

demo: install
	$(BIN)/lmforge demo --out runs/demo

test: install
	$(BIN)/pytest -q

bench: install
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf runs build dist src/*.egg-info .pytest_cache
