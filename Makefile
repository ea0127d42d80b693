# The two commands a user needs: `make demo` and `make test`. Everything else is their plumbing.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
EXTRAS ?= torch,retinaface,openvino

.PHONY: demo test install install-dev models system-deps bench lint clean

$(VENV)/.installed-$(EXTRAS): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[$(EXTRAS)]'
	@touch $@

install: $(VENV)/.installed-$(EXTRAS)

install-dev:
	@$(MAKE) --no-print-directory install EXTRAS=$(EXTRAS),dev

models: install
	$(VENV)/bin/facetrail models fetch

demo: install models
	$(VENV)/bin/facetrail demo
	@echo "facetrail is installed in $(VENV), not on your PATH: run $(VENV)/bin/facetrail ... (or '. $(VENV)/bin/activate' once per shell)"

system-deps:
	bash .ci/system-deps.sh

# pytest's exit code 5 (no test collected) is a failure too, said in words
test: system-deps install-dev models
	@$(PY) -m pytest -q -ra $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

bench: install models
	$(PIP) install -q -e '.[$(EXTRAS),bench]'
	$(PY) bench/run_all.py

# ruff and mypy (pyproject [tool.ruff], [tool.mypy]) and the structure check (tools/structure.py: import cycles,
# arrows back up, big modules and functions; known offenders in tools/structure_allow.txt, a list that only
# shrinks). .ci/run runs it before the tests; .pre-commit-config.yaml runs the same three on commit.
lint: install-dev
	$(VENV)/bin/ruff check pipeline workers index bench tests tools
	$(VENV)/bin/mypy
	$(PY) tools/structure.py --check

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache build *.egg-info
