# One-command entry points. Every target that needs the environment builds it first (idempotent: a stamp file
# records that .venv matches requirements*.txt and pyproject.toml, so a second `make setup` returns at once).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test demo bench readme app screenshot clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/python run_demo.py

app: setup
	$(BIN)/python -m app serve

screenshot: setup
	$(BIN)/python -m app screenshot --out results/app/screenshot.png

readme: setup
	$(BIN)/python readme_numbers.py

bench: setup
	@for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf .pytest_cache .tmp
