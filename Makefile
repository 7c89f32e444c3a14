PY ?= python3
PY39 ?= $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)/versions/3.9.18/bin/python
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VENV39 := $(VENV)/py39
STAMP39 := $(VENV39)/.installed
# slicer-core 5.12.4.0 (the newest release line's MRML, with its own VTK) beside the main venv's 5.13:
# the MRML tests run against both.
SLICER512 := 5.12.4.0
VENV512 := $(VENV)/slicer512
STAMP512 := $(VENV512)/.installed

.PHONY: venv demo test lint typecheck clean

venv: $(STAMP) $(STAMP39) $(STAMP512)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,bench,docs]'
	touch $(STAMP)

# Python 3.9, as Slicer 5.8 runs, with the dependencies that have a small 3.9 build (all but torch),
# for Testing/test_python39.py; without pyenv's 3.9.18 that test uses stand-ins or skips.
$(STAMP39): pyproject.toml | $(STAMP)
	@if [ -x "$(PY39)" ]; then \
	  set -e; test -x $(VENV39)/bin/python || $(PY39) -m venv $(VENV39); \
	  $(BIN)/python -c 'import tomllib; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; \
	    print("\n".join(d for d in deps if not d.startswith("torch")))' | $(VENV39)/bin/pip install --quiet -r /dev/stdin; \
	  touch $(STAMP39); \
	else echo "no Python 3.9.18 at $(PY39): Testing/test_python39.py uses stand-ins or skips"; fi

$(STAMP512): pyproject.toml | $(STAMP)
	test -x $(VENV512)/bin/python || $(PY) -m venv $(VENV512)
	$(VENV512)/bin/pip install --quiet --upgrade pip
	$(VENV512)/bin/pip install --quiet torch==2.13.0
	$(VENV512)/bin/pip install --quiet -e '.[test]' 'slicer-core==$(SLICER512)'
	touch $(STAMP512)

demo: venv
	$(BIN)/fsdiffreg demo

test: venv
	$(BIN)/python -m pytest -q
	$(VENV512)/bin/python -m pytest -q -p no:cacheprovider Testing/test_slicer_*.py

# ruff, then the import contracts of pyproject.toml (layers, no cycles, a torch-free Slicer layer).
lint: venv
	$(BIN)/ruff check .
	PYTHONPATH=.:FSDiffReg PYTHONIOENCODING=utf-8 $(BIN)/lint-imports

# mypy on FSDiffRegLib and FSDiffRegMRML, as pyproject.toml's [tool.mypy] says.
typecheck: venv
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info

# The documentation site (mkdocs.yml, docs/) into site/; strict: a broken link, anchor or include fails. Offline.
.PHONY: docs
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
