"""The layout's promises: imports flow one way (common <- world <- scraping <- identity <- classification <- vae <- generative <- latent <- app <- tools), no
module imports another that imports it back, and every CLI turns bad input into one line and exit code 2.

The import check parses the source (ast), so it sees function-level imports too.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Each package may import only from the packages before it.
ORDER = ["common", "world", "scraping", "identity", "classification", "vae", "generative", "latent", "app", "tools"]


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the project modules imported by `path` (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] in ORDER}


def project_files() -> list[Path]:
    return sorted(p for package in ORDER for p in (ROOT / package).glob("*.py"))


def test_imports_flow_one_way():
    wrong = []
    for path in project_files():
        own = ORDER.index(path.relative_to(ROOT).parts[0])
        for name in imported_modules(path):
            if ORDER.index(name.split(".")[0]) > own:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "imports against the pipeline's direction:\n" + "\n".join(wrong)


def test_no_import_cycles_between_modules():
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts): p for p in project_files()}
    graph = {m: {n for n in imported_modules(p) if n in modules and n != m} for m, p in modules.items()}
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for other in graph[module]:
            if state.get(other) == 1:
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(other):] + [other]))
            if other not in state:
                visit(other, trail + [other])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_the_checker_sees_a_backward_import(tmp_path, monkeypatch):
    """The direction test would fail on a stage-1 module importing stage 3 (function-level import included)."""
    fake = ROOT / "scraping" / "_direction_probe.py"
    source = "def f():\n    from vae.train import load_vae\n    from .faces import crop_faces\n"
    names = None
    try:
        fake.write_text(source)
        names = imported_modules(fake)
    finally:
        fake.unlink()
    assert "vae.train" in names and "scraping.faces" in names


# ------------------------------------------------------------------------------------------- CLI errors
@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    (folder / "garbage.pt").write_bytes(b"not a checkpoint at all")
    (folder / "photos").mkdir()
    from PIL import Image

    Image.new("RGB", (120, 120), "white").save(folder / "photos" / "a.jpg")
    (folder / "bad_identities.txt").write_text("a.jpg\n")  # the identity column is missing
    (folder / "bad_scores.csv").write_text("rank,file,score\n1,000001.jpg,high\n")
    (folder / "celeba" / "img_align_celeba").mkdir(parents=True)
    (folder / "celeba" / "identity_CelebA.txt").write_text("000001.jpg 1\n")
    return folder


# (stage, arguments, a word the one-line message must contain)
CASES = [
    ("world", ["generate", "--out", "w", "--set", "no_such_field=1"], "no_such_field"),
    ("world", ["generate", "--out", "w", "--set", "missing-equals-sign"], "KEY=VALUE"),
    ("world", ["generate", "--seed", "abc"], "--seed"),
    ("scraping", ["crop", "--src", "missing_folder", "--out", "o"], "missing_folder"),
    ("scraping", ["crop", "--src", "photos", "--identities", "bad_identities.txt", "--out", "o"], "bad_identities"),
    ("scraping", ["crop", "--src", "photos", "--out", "o", "--set", "no_such_field=1"], "no_such_field"),
    ("scraping", ["sheet", "--src", "missing_folder", "--out", "s.png"], "missing_folder"),
    ("scraping", ["fetch", "--person", "x", "--source", "page", "--url", "ftp://example.org/a"], "ftp"),
    ("classification", ["train", "--src", "missing_folder", "--target", "t", "--out", "r"], "missing_folder"),
    ("classification", ["evaluate", "--checkpoint", "garbage.pt"], "garbage.pt"),
    ("classification", ["scan", "--checkpoint", "garbage.pt", "--src", "photos", "--out", "s"], "garbage.pt"),
    ("classification", ["train", "--set", "no_such_field=1"], "no_such_field"),
    ("classification", ["embed-scan", "--checkpoint", "garbage.pt", "--src", "photos", "--out", "e"], "garbage.pt"),
    ("vae", ["train", "--src", "missing_folder", "--out", "r"], "missing_folder"),
    ("vae", ["sample", "--checkpoint", "garbage.pt", "--out", "f"], "garbage.pt"),
    ("vae", ["train", "--src", "photos", "--out", "r", "--set", "no_such_field=1"], "no_such_field"),
    ("vae", ["find-identity", "--scores", "bad_scores.csv", "--src", "celeba", "--out", "i"], "bad_scores.csv"),
    ("vae", ["morph", "--checkpoint", "missing.pt", "--src", "photos", "--out", "m"], "missing.pt"),
    ("app", ["serve", "--summary", "missing_summary.json"], "missing_summary.json"),
]


def _check_one_error_line(code: int, stderr: str, word: str) -> None:
    assert code == 2, stderr[-1500:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-1500:]
    assert "Traceback" not in stderr and word in lines[0]


@pytest.mark.parametrize("stage,argv,word", CASES, ids=[f"{c[0]}-{c[1][0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_gives_one_line_and_exit_2(inputs, stage, argv, word, monkeypatch, capsys):
    # in this process, through the same `main` that `python -m <stage>` runs (the exit code it returns or raises)
    import importlib

    monkeypatch.chdir(inputs)
    try:
        code = importlib.import_module(f"{stage}.__main__").main(argv)
    except SystemExit as stop:  # argparse's own errors exit from inside the parser
        code = stop.code
    _check_one_error_line(code, capsys.readouterr().err, word)


# one case per stage again as a real process: nothing else (an import warning, a log line) reaches stderr
SUBPROCESS_CASES = [next(c for c in CASES if c[0] == stage) for stage in dict.fromkeys(c[0] for c in CASES)]


@pytest.mark.parametrize("stage,argv,word", SUBPROCESS_CASES, ids=[c[0] for c in SUBPROCESS_CASES])
def test_bad_input_in_a_real_process_gives_one_line_and_exit_2(inputs, stage, argv, word):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", stage, *argv], cwd=inputs, env=env, capture_output=True, text=True,
                          timeout=120)
    _check_one_error_line(done.returncode, done.stderr, word)


def test_debug_flag_shows_the_traceback(inputs):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "vae", "--debug", "sample", "--checkpoint", "garbage.pt", "--out",
                           "f"], cwd=inputs, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" in done.stderr
