"""End to end: `run_demo.py --smoke` runs the four notebooks on a tiny synthetic world and leaves every expected
artifact; the demo's parameters reach every notebook; the committed notebooks are clean (see also
test_notebooks.py)."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

from tools import run_demo
from tools.run_demo import EXPECTED_ARTIFACTS, NOTEBOOKS, DemoConfig, notebook_parameters, parse_params, stage_paths

ROOT = Path(run_demo.__file__).resolve().parents[1]


def parameters_cell_names(notebook_path: Path) -> set[str]:
    """Names assigned in the notebook's cell tagged `parameters`."""
    notebook = nbformat.read(notebook_path, as_version=4)
    cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{notebook_path} needs exactly one cell tagged 'parameters'"
    tree = ast.parse(cells[0].source)
    return {target.id for node in tree.body if isinstance(node, ast.Assign) for target in node.targets
            if isinstance(target, ast.Name)}


def error_outputs(notebook) -> list[str]:
    return [f"{o.get('ename')}: {o.get('evalue')}" for cell in notebook.cells if cell.cell_type == "code"
            for o in cell.get("outputs", []) if o.get("output_type") == "error"]


@pytest.mark.parametrize("smoke", [False, True])
def test_every_parameter_the_demo_passes_is_declared_by_its_notebook(smoke):
    # papermill only warns about unknown parameters, so a renamed parameter would silently be ignored
    config = DemoConfig(smoke=smoke)
    params = notebook_parameters(config, stage_paths(config))
    for stage, notebook in NOTEBOOKS.items():
        missing = set(params[stage]) - parameters_cell_names(ROOT / notebook)
        assert not missing, f"{notebook} does not declare {sorted(missing)}"


@pytest.mark.parametrize("notebook", list(NOTEBOOKS.values()))
def test_papermill_reads_every_line_of_the_parameters_cell(notebook, caplog):
    # papermill infers parameter names and types line by line; a line it cannot parse (e.g. "=" inside a
    # comment) is dropped from `papermill --help-notebook` with only a logged warning
    import papermill

    with caplog.at_level("WARNING", logger="papermill"):
        inferred = papermill.inspect_notebook(str(ROOT / notebook))
    assert not [r.getMessage() for r in caplog.records if "Unable to parse" in r.getMessage()]
    assert set(inferred) == parameters_cell_names(ROOT / notebook)


def test_a_world_from_another_config_stops_the_demo_with_instructions(tmp_path):
    from world.generate import WorldConfig, generate_world

    generate_world(WorldConfig(seed=1, **run_demo.SMOKE_WORLD), tmp_path / "data" / "demo", progress=False)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    config = DemoConfig(root=str(tmp_path), seed=0, smoke=True, stages=())
    with pytest.raises(FileExistsError, match="delete .*data/demo and .*runs/demo"):
        run_demo.run_demo(config)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing touched


def test_parameter_overrides_are_parsed_and_unknown_stages_rejected():
    assert parse_params(["vae.MAX_STEPS=50", "classification.KS=[0,1]", "scraping.RAW=x/raw"]) == {
        "vae": {"MAX_STEPS": 50}, "classification": {"KS": [0, 1]}, "scraping": {"RAW": "x/raw"}}
    with pytest.raises(ValueError, match="stage.NAME=value"):
        parse_params(["MAX_STEPS=5"])
    config = DemoConfig(params={"vea": {"MAX_STEPS": 1}})
    with pytest.raises(ValueError, match="unknown stage"):
        notebook_parameters(config, stage_paths(config))


def test_paths_inside_the_repo_stay_relative_so_no_machine_path_reaches_a_notebook():
    params = notebook_parameters(DemoConfig(), stage_paths(DemoConfig()))
    assert params["vae"]["SCORES"] == "results/demo/classification/search/scores.csv"
    assert params["scraping"]["FACES"] == params["classification"]["FACES"] == "data/demo/faces"


@pytest.mark.parametrize("notebook", list(NOTEBOOKS.values()))
def test_committed_notebooks_have_no_errors_and_no_machine_paths(notebook):
    text = (ROOT / notebook).read_text()
    # this checkout's own location, the home folder and the temp folder: where a leaked path would point
    for marker in {str(ROOT.parent), str(Path.home()), tempfile.gettempdir()}:
        assert f"{marker}/" not in text, f"{notebook} contains a machine path ({marker})"
    assert error_outputs(nbformat.reads(text, as_version=4)) == []


def executed_notebook(root: Path, stage: str):
    """The executed copy of a stage's notebook from a smoke run (its parameters differ from the defaults)."""
    return nbformat.read(root / "results/demo/notebooks" / Path(NOTEBOOKS[stage]).name, as_version=4)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """Run the smoke demo once, as a user would (a subprocess)."""
    root = tmp_path_factory.mktemp("smoke")
    result = subprocess.run(cwd=ROOT, args=[sys.executable, "-m", "tools.run_demo", "--smoke", "--root", str(root)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return root, result


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_smoke_demo_leaves_every_expected_artifact(smoke_run):
    root, result = smoke_run
    missing = [name for name in EXPECTED_ARTIFACTS if not (root / "results/demo" / name).is_file()]
    assert missing == []
    empty = [name for name in EXPECTED_ARTIFACTS if (root / "results/demo" / name).stat().st_size == 0]
    assert empty == []
    assert json.loads(result.stdout.strip().splitlines()[-1])["smoke"] is True


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_smoke_notebooks_ran_clean_with_the_demo_parameters(smoke_run):
    root, _ = smoke_run
    summary = json.loads((root / "results/demo/demo_summary.json").read_text())
    for stage, notebook in NOTEBOOKS.items():
        executed = executed_notebook(root, stage)
        assert error_outputs(executed) == []
        # what the notebook ran with: its own defaults, and what papermill injected where the smoke run differs
        effective = {**run_demo.notebook_defaults(notebook), **executed.metadata["papermill"]["parameters"]}
        assert effective["OUT"] == str(root / "results/demo" / stage)
        for name, value in run_demo.SMOKE_PARAMETERS[stage].items():
            assert effective[name] == value
        # the stage really wrote its own summary where it was told to
        assert summary["stages"][stage], f"{stage} wrote no summary.json"
    timings = json.loads((root / "results/demo/timings.json").read_text())
    parts = {stage: seconds for stage, seconds in timings["seconds"].items() if stage != "total"}
    assert set(NOTEBOOKS) <= set(parts) and "seconds" not in summary
    # each part is timed inside the total (every figure rounded to 0.1 s)
    assert sum(parts.values()) <= timings["seconds"]["total"] + 0.05 * (len(parts) + 1)
    assert set(timings["slowest_cells"]) == set(NOTEBOOKS)  # every stage ran and names where its time went
    assert all(0 < len(cells) <= run_demo.SLOWEST_CELLS for cells in timings["slowest_cells"].values())
    assert not any(key.endswith("seconds") for key in summary["stages"]["classification"])


# ------------------------------------------------------------------------------------ reproducible results
def _file_digests(root: Path) -> dict[str, str]:
    import hashlib

    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / "results").rglob("*")) if p.is_file()
            and p.name != "timings.json"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_rerun_that_changes_nothing_changes_no_byte(smoke_run):
    root, _ = smoke_run
    before = _file_digests(root)
    again = subprocess.run(cwd=ROOT, args=[sys.executable, "-m", "tools.run_demo", "--smoke", "--root", str(root)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("up to date, not run again") == len(NOTEBOOKS)
    assert _file_digests(root) == before


def test_the_stage_fingerprint_follows_code_parameters_and_the_stages_before(tmp_path, monkeypatch):
    from common import config as common_config

    config = DemoConfig()
    world = run_demo.world_config(config)
    params = notebook_parameters(config, stage_paths(config))
    base = run_demo.stage_fingerprints(world, params)
    changed = {**params, "classification": {**params["classification"], "SEED": 1}}
    after = run_demo.stage_fingerprints(world, changed)
    assert after["scraping"] == base["scraping"]
    assert after["classification"] != base["classification"] and after["vae"] != base["vae"]
    assert after["latent"] == base["latent"]  # the latent-space stage reads no earlier stage
    real = common_config.code_version
    monkeypatch.setattr(common_config, "code_version",
                        lambda *packages: real(*packages) + ("x" if "vae" in packages else ""))
    edited = run_demo.stage_fingerprints(world, params)
    assert edited["classification"] == base["classification"] and edited["vae"] != base["vae"]


def test_papermills_injected_cell_is_not_part_of_the_fingerprint(tmp_path, monkeypatch):
    # a notebook executed in place by an older demo carries the parameters as a cell; the fingerprint ignores it
    config = DemoConfig()
    world = run_demo.world_config(config)
    params = notebook_parameters(config, stage_paths(config))
    base = run_demo.stage_fingerprints(world, params)
    source = ROOT / NOTEBOOKS["scraping"]
    notebook = json.loads(source.read_text())
    cells = [c for c in notebook["cells"] if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    injected = {"cell_type": "code", "execution_count": 1, "id": "injected", "outputs": [],
                "metadata": {"tags": ["injected-parameters"]}, "source": "# Parameters\nSEED = 12345\n"}
    notebook["cells"] = cells[:2] + [injected] + cells[2:]
    copy = tmp_path / "01.ipynb"
    copy.write_text(json.dumps(notebook))
    monkeypatch.setitem(run_demo.NOTEBOOKS, "scraping", str(copy))
    assert run_demo.stage_fingerprints(world, params) == base


def test_tidy_notebook_keeps_results_and_drops_what_changes_every_run(tmp_path):
    cell = {"cell_type": "code", "execution_count": 1, "source": "print(1)", "id": "a",
            "metadata": {"tags": ["x"], "execution": {"iopub.execute_input": "2026-01-01T00:00:00Z"},
                         "papermill": {"duration": 1.5}},
            "outputs": [{"output_type": "stream", "name": "stderr", "text": ["\rscan:  40%|####  | 4/10 [00:01<?]"]},
                        {"output_type": "stream", "name": "stderr", "text": ["UserWarning: something real\n"]},
                        {"output_type": "stream", "name": "stdout", "text": ["1\n"]}]}
    notebook = {"cells": [cell], "metadata": {"papermill": {"parameters": {"A": 1}, "duration": 9.0,
                                                            "start_time": "2026"}}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(notebook))
    slowest = run_demo.tidy_notebook(path)
    tidied = json.loads(path.read_text())
    assert slowest == [{"cell": 1, "first_line": "print(1)", "seconds": 1.5}]  # read before the durations go
    assert tidied["metadata"]["papermill"] == {"parameters": {"A": 1}}
    assert tidied["cells"][0]["metadata"] == {"tags": ["x"]}
    assert [o["text"] for o in tidied["cells"][0]["outputs"]] == [["UserWarning: something real\n"], ["1\n"]]


def test_slowest_cells_ranks_code_cells_by_duration():
    def cell(kind, source, duration=None):
        return {"cell_type": kind, "source": source, "metadata": {} if duration is None
                else {"papermill": {"duration": duration}}}

    notebook = {"cells": [cell("markdown", "# title", 50.0), cell("code", "\n  fast()\n", 0.2),
                          cell("code", "train(model)  # long\nmore()", 30.04), cell("code", "never_ran()"),
                          cell("code", "scan()", 4.0)]}
    assert run_demo.slowest_cells(notebook, n=2) == [
        {"cell": 3, "first_line": "train(model)  # long", "seconds": 30.0},
        {"cell": 5, "first_line": "scan()", "seconds": 4.0}]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_fresh_smoke_demos_tell_the_same_story(smoke_run, tmp_path):
    first_root, _ = smoke_run
    second = subprocess.run(cwd=ROOT, args=[sys.executable, "-m", "tools.run_demo", "--smoke", "--root", str(tmp_path),
                             "--check"], capture_output=True, text=True, timeout=800)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    summaries = [json.loads((root / "results/demo/demo_summary.json").read_text()) for root in (first_root, tmp_path)]
    assert summaries[0] == summaries[1]  # demo_summary.json holds no timings (they go to timings.json)
    assert all(v["ok"] for v in summaries[1]["verdicts"] if v["headline"])  # the planted identity, verified
    # one progress line per stage and the verdicts: no kernel notices, no progress-bar floods
    assert "Kernel is running" not in second.stderr and second.stderr.count("\r") < 50


def test_readme_and_docs_numbers_match_the_committed_results():
    from tools import readme_numbers

    blocks = readme_numbers.readme_blocks()
    for document in readme_numbers.DOCUMENTS:
        text = (ROOT / document).read_text(encoding="utf-8")
        assert readme_numbers.BLOCK.findall(text), f"{document} has no generated blocks"
        assert readme_numbers.fill_readme(text, blocks, document) == text, f"{document} is out of date: make readme"
    assert set(blocks) == {m[1] for d in readme_numbers.DOCUMENTS
                           for m in readme_numbers.BLOCK.findall((ROOT / d).read_text())}, "a block is never shown"


def test_readme_is_a_short_guide_whose_links_resolve():
    from tools import readme_numbers

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= readme_numbers.README_MAX_LINES
    for document in readme_numbers.DOCUMENTS:
        folder = (ROOT / document).parent
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", (ROOT / document).read_text(encoding="utf-8")):
            assert (folder / target).exists(), f"{document} links to missing {target}"


def test_committed_notebooks_and_demo_results_stay_light():
    listed = subprocess.run(["git", "ls-files", "results/demo", *NOTEBOOKS.values()], cwd=ROOT,
                            capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the committed files cannot be listed")
    files = [ROOT / name for name in listed.stdout.split()]
    for notebook in NOTEBOOKS.values():
        assert (ROOT / notebook).stat().st_size <= 400_000, f"{notebook} is over 400 KB"
    demo = [f for f in files if "results/demo" in f.as_posix() and f.is_file()]
    assert sum(f.stat().st_size for f in demo) <= 6_000_000, "committed results/demo is over 6 MB"
    assert all(f.stat().st_size <= 2_000_000 for f in demo if f.suffix == ".gif"), "a GIF is over 2 MB"


def test_committed_json_has_no_machine_paths():
    listed = subprocess.run(["git", "ls-files", "*.json"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the committed files cannot be listed")
    markers = {str(ROOT), str(Path.home()), tempfile.gettempdir()}
    for name in listed.stdout.split():
        text = (ROOT / name).read_text(encoding="utf-8")
        leaked = [m for m in markers if f"{m}/" in text]
        assert not leaked, f"{name} contains a machine path"


def test_every_command_the_docs_show_parses(monkeypatch, capsys):
    """Each `python -m <package> <command> ...` line of README.md and docs/ is accepted by that command's parser
    (nothing runs: the command's work is replaced by a no-op), so no documented flag is stale."""
    import importlib
    import shlex

    from common import command_line
    from tools import readme_numbers

    real = command_line.command_handler
    monkeypatch.setattr(command_line, "command_handler", lambda module, prefix, command: (
        (lambda args: {}) if prefix == "cli_run" else real(module, prefix, command)))
    packages = {"world", "scraping", "classification", "vae", "generative", "latent", "app"}
    checked = 0
    for document in readme_numbers.DOCUMENTS:
        for line in (ROOT / document).read_text(encoding="utf-8").splitlines():
            words = shlex.split(line.split("  #")[0]) if line.startswith("python -m ") else []
            if len(words) > 3 and words[2] in packages:
                try:
                    code = importlib.import_module(f"{words[2]}.__main__").main(words[3:])
                except SystemExit as stop:
                    code = stop.code
                assert code == 0, f"{document}: `{line}` -> {capsys.readouterr().err}"
                checked += 1
    assert checked >= 15
