# One-command entry points. Every target that needs the environment builds it first (idempotent: a stamp file
# records that .venv matches requirements*.txt and pyproject.toml, so a second `make setup` returns at once).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test demo lab bench readme app screenshot clean

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
	$(BIN)/python -m tools.run_demo

# JupyterLab on the repo; it prints the URL to open (with its token). On a machine without a browser:
# `make lab LAB_ARGS="--no-browser --port 8888"`. As root (e.g. in a container) Jupyter wants --allow-root.
LAB_ARGS ?=
lab: setup
	$(BIN)/jupyter lab --ServerApp.root_dir=. $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

app: setup
	$(BIN)/python -m app serve

screenshot: setup
	$(BIN)/python -m app screenshot --out results/app/screenshot.png

readme: setup
	$(BIN)/python -m tools.readme_numbers

bench: setup
	@for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done
	$(BIN)/python benchmarks/bench_app.py --visitors 1,4,16

clean:
	rm -rf .pytest_cache .tmp
