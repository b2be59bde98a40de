# Every target that runs code depends on the venv, so `make test` alone sets up a fresh machine.
PYTHON  ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
VARIANT ?= S
OUT     ?= artifacts/$(VARIANT)
CKPT    ?=
THREADS ?= 2
# Every package of the venv, transitive ones too, pinned with hashes (docs/development.md, "Dependencies"); `make lock` rewrites them.
LOCK      := requirements/lock.txt
BOOTSTRAP := requirements/bootstrap.txt
LOCK_VENV := .venv-lock
LOCK_TOOLS := pip==26.3 pip-tools==7.6.2
COMPILE   := CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe \
	--strip-extras --no-emit-index-url --no-emit-find-links

.PHONY: install lock lint test test-fast test-campaign arm64 test-arm64 gpu test-gpu export bench diagnose kernels \
	robustness clean

# Only pip, and only what the lock names, each file checked against its hashes: first the installers, then the
# whole set, then the project without deps. The two source builds (antlr4's sdist, the project) use the locked
# setuptools (--no-build-isolation), not the newest one an isolated build would fetch.
# pip's own chatter goes to $(VENV)/install.log; on a failure its tail is printed.
$(STAMP): pyproject.toml $(LOCK) $(BOOTSTRAP)
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (set PYTHON=...)"; exit 2; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "setting up $(VENV) from $(LOCK) (once; log: $(VENV)/install.log)"
	@{ $(BIN)/python -m pip install --require-hashes --no-deps -r $(BOOTSTRAP) \
		&& $(BIN)/pip install --require-hashes --no-build-isolation -r $(LOCK) \
		&& $(BIN)/pip install --no-deps --no-build-isolation -e . && $(BIN)/pip check; } > $(VENV)/install.log 2>&1 \
		|| { tail -n 30 $(VENV)/install.log; echo "install failed: see $(VENV)/install.log"; exit 1; }
	@touch $(STAMP)

install: $(STAMP)

# Rewrites the lock from pyproject.toml's pins (needs the index; a few minutes), with pip-tools in a venv of its own.
# pip-compile keeps the transitive pins that still fit; LOCK_ARGS=--upgrade moves them all to the newest that fit.
lock:
	@test -x $(LOCK_VENV)/bin/pip-compile \
		|| { $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install -q $(LOCK_TOOLS); }
	$(COMPILE) --extra test $(LOCK_ARGS) -o $(LOCK) pyproject.toml requirements/bootstrap.in
	$(COMPILE) -c $(LOCK) -o $(BOOTSTRAP) requirements/bootstrap.in

lint: install
	$(BIN)/ruff check .

test: install
	$(BIN)/pytest -q -m "not campaign and not arm64 and not gpu"

# The campaign slices (minutes each): CI runs them after `make test`.
test-campaign: install
	$(BIN)/pytest -q -m campaign

test-fast: install
	$(BIN)/pytest -q -m "not e2e and not slow and not campaign and not arm64 and not gpu"

# The emulated phone cores (qemu user mode, an aarch64 Python, the runtimes' arm64 wheels) in
# artifacts/cache/arm64: once ~3.5 min (it builds the counting qemu from Debian's source), then a self-check.
# Installs Debian's qemu-user and build tools (apt-get, as root).
arm64: install
	$(BIN)/python -m runtimes.arm64.setup

# Every .tflite/.onnx of an XS export judged and counted on the emulated cores (minutes); CI runs it.
test-arm64: arm64
	$(BIN)/pytest -q -m arm64

# LiteRT's GPU accelerator on a software Vulkan device (Mesa 25's lavapipe, unpacked from bookworm-backports)
# in artifacts/cache/gpu: once ~25 s, then ~4 s (a self-check). Installs Debian's Vulkan loader, Mesa and
# vulkan-tools (apt-get, as root).
gpu: install
	$(BIN)/python -m runtimes.gpu.setup

# The GPU accelerator's two precisions, its failure paths and an XS export's .tflite files on it (~1.5 min); CI runs it.
test-gpu: gpu
	$(BIN)/pytest -q -m gpu

export: install
	$(BIN)/convnextpose export --variant $(VARIANT) --out $(OUT) $(if $(CKPT),--checkpoint $(CKPT))

bench: install
	@test -f $(OUT)/manifest.json || { echo "no export in $(OUT): run 'make export VARIANT=$(VARIANT)' first"; exit 2; }
	$(BIN)/convnextpose bench $(OUT) --threads $(THREADS)

diagnose: install
	@test -f $(OUT)/manifest.json || { echo "no export in $(OUT): run 'make export VARIANT=$(VARIANT)' first"; exit 2; }
	$(BIN)/convnextpose diagnose $(OUT) --threads $(THREADS)

kernels: install
	$(BIN)/convnextpose kernels --variant $(VARIANT) --threads $(THREADS)

robustness: install
	$(BIN)/python -m robustness

clean:
	rm -rf $(VENV) $(LOCK_VENV) build *.egg-info
