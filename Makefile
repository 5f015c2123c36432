# Two entry points: `make demo` (end-to-end demo on embedded data) and `make test`.
# Each creates .venv if missing and installs the package (pinned deps) into it; the demo
# needs only the package, the tests also its `test` extra (pytest, keras-hub, ...).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test test-slow docs install clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(TEST_STAMP)

install: $(TEST_STAMP)

demo: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/tfmot-mtl demo

# -n 2: the tests run in two pytest-xdist processes (the CI machine has two cores).
test: $(TEST_STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python -m pytest -q -n 2

test-slow: $(TEST_STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python -m pytest -q -n 2 -m slow

# The guide in docs/ and the API reference from the docstrings, into site/ (--strict: a renamed
# function breaks the build).
docs: $(TEST_STAMP)
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) build site *.egg-info
