# Two entry points: `make demo` (end-to-end demo on embedded data) and `make test`.
# Each creates .venv if missing and installs the package (pinned deps) into it; the demo
# needs only the package, the tests also its `test` extra (pytest, keras-hub, ...).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test test-slow docs install clean

# --no-compile: Python compiles the modules a run imports on first use instead of pip compiling
# every file of every dependency (~12,000, most never imported) at install time.
PIP_INSTALL := $(BIN)/python -m pip install --quiet --no-compile

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(PIP_INSTALL) -e .
	touch $(STAMP)

# The test extra in one resolve (it includes the package's own dependencies).
$(TEST_STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -f $(STAMP) || $(BIN)/python -m pip install --quiet --upgrade pip
	$(PIP_INSTALL) -e '.[test]'
	touch $(STAMP) $(TEST_STAMP)

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
