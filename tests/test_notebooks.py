"""The committed notebooks run as committed (STYLE rule 13): notebook 01 runs top to bottom as a reader's "Run All"
does, with nothing injected, and no committed notebook carries a papermill injected-parameters cell, an error
output or a code cell longer than the story's 15 lines."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from tools import run_demo
from tools.run_demo import NOTEBOOKS

ROOT = Path(run_demo.__file__).resolve().parents[1]
MAX_CODE_CELL_LINES = 15


@pytest.mark.parametrize("notebook", list(NOTEBOOKS.values()))
def test_committed_notebook_is_the_clean_notebook_with_short_cells(notebook):
    cells = nbformat.read(ROOT / notebook, as_version=4).cells
    injected = [n for n, c in enumerate(cells, 1) if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected == [], f"{notebook}: papermill's injected-parameters cell (cell {injected}) is committed"
    errors = [f"cell {n}: {o.get('ename')}: {o.get('evalue')}" for n, c in enumerate(cells, 1)
              if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == [], f"{notebook} holds error outputs"
    long = {n: len(c.source.splitlines()) for n, c in enumerate(cells, 1)
            if c.cell_type == "code" and len(c.source.splitlines()) > MAX_CODE_CELL_LINES}
    assert long == {}, f"{notebook}: code cells over {MAX_CODE_CELL_LINES} lines (cell: lines)"


def test_the_default_demo_injects_nothing_so_it_runs_the_notebooks_as_committed():
    config = run_demo.DemoConfig()
    params = run_demo.notebook_parameters(config, run_demo.stage_paths(config))
    for stage, notebook in NOTEBOOKS.items():
        assert run_demo.parameters_to_inject(notebook, params[stage]) == {}, f"{notebook}: defaults != demo's"
    smoke = run_demo.DemoConfig(smoke=True, root="elsewhere")
    injected = run_demo.parameters_to_inject(
        NOTEBOOKS["classification"], run_demo.notebook_parameters(smoke, run_demo.stage_paths(smoke))["classification"])
    assert injected["OUT"] == "elsewhere/results/demo/classification" and injected["KS"] == [0, 1]
    assert "TARGET" not in injected  # equal to the default: not injected


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_notebook_01_runs_as_committed_in_a_checkout_without_a_web_server(tmp_path):
    """nbclient runs the committed notebook unchanged (no parameters), in a checkout-shaped folder whose
    data/demo/world.json the test made (the smoke world, for speed): the notebook serves the web itself."""
    from nbclient import NotebookClient

    from world.generate import WorldConfig, generate_world

    (tmp_path / "pyproject.toml").write_text("")  # marks the root the notebook works from
    notebook_path = tmp_path / NOTEBOOKS["scraping"]
    notebook_path.parent.mkdir()
    shutil.copy(ROOT / NOTEBOOKS["scraping"], notebook_path)
    world = generate_world(WorldConfig(seed=0, **run_demo.SMOKE_WORLD), tmp_path / "data/demo", progress=False)
    notebook = nbformat.read(notebook_path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(notebook_path.parent)}}).execute()  # raises on an error

    summary = json.loads((tmp_path / "results/demo/scraping/summary.json").read_text())
    assert summary["people"] == len(world["people"]) == 3
    assert summary["faces_target"] > 0 and summary["faces_others"] > 0
    assert summary["rejected_by_reason"] == {"http_404": 3}  # each gallery's broken link, fetched over HTTP
    for name in ("detections.png", "contact_sheet.png", "counts.png"):
        assert (tmp_path / "results/demo/scraping" / name).stat().st_size > 0
    kept = {p.name for p in (tmp_path / "data/demo/faces").iterdir() if p.is_dir()}
    assert kept == {p["slug"] for p in world["people"]}
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert f"target: {world['target_name']}" in printed


def test_the_demo_web_is_generated_when_missing_and_moves_off_a_busy_port(tmp_path, capsys):
    import socket

    import requests

    from scraping.demo_web import open_demo_web
    from world.generate import WorldConfig

    world_json = tmp_path / "demo" / "world.json"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        world, server = open_demo_web(world_json, port=port, config=WorldConfig(seed=0, **run_demo.SMOKE_WORLD))
    try:
        assert world_json.is_file() and server.port != port
        assert f"port {port} is busy: serving the world's web on port {server.port} instead" in capsys.readouterr().out
        page = requests.get(server.url + world["people"][0]["gallery"], timeout=10)
        assert page.status_code == 200 and "<img" in page.text
    finally:
        server.stop()
    again, server = open_demo_web(world_json, port=0)  # on disk now: read as it is, not generated again
    server.stop()
    assert again["target_identity"] == world["target_identity"]
