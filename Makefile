# Every target that runs code depends on the venv, so `make test` alone sets up a fresh machine.
PYTHON  ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
VARIANT ?= S
OUT     ?= artifacts/$(VARIANT)
CKPT    ?=
THREADS ?= 2

.PHONY: install lint test test-fast test-campaign arm64 test-arm64 export bench diagnose kernels robustness clean

# pip's own chatter goes to $(VENV)/install.log; on a failure its tail is printed.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (set PYTHON=...)"; exit 2; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "setting up $(VENV) from pyproject.toml (once; log: $(VENV)/install.log)"
	@{ $(BIN)/pip install --upgrade pip && $(BIN)/pip install -e '.[test]'; } > $(VENV)/install.log 2>&1 \
		|| { tail -n 30 $(VENV)/install.log; echo "install failed: see $(VENV)/install.log"; exit 1; }
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .

test: install
	$(BIN)/pytest -q -m "not campaign and not arm64"

# The campaign slices (minutes each): CI runs them after `make test`.
test-campaign: install
	$(BIN)/pytest -q -m campaign

test-fast: install
	$(BIN)/pytest -q -m "not e2e and not slow and not campaign and not arm64"

# The emulated phone cores (qemu user mode, an aarch64 Python, the runtimes' arm64 wheels) in
# artifacts/cache/arm64: once ~3.5 min (it builds the counting qemu from Debian's source), then a self-check.
# Installs Debian's qemu-user and build tools (apt-get, as root).
arm64: install
	$(BIN)/python -m runtimes.arm64.setup

# Every .tflite/.onnx of an XS export judged and counted on the emulated cores (minutes); CI runs it.
test-arm64: arm64
	$(BIN)/pytest -q -m arm64

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
	rm -rf $(VENV) build *.egg-info
