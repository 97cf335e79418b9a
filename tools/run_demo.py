"""`make demo`: the whole story on the embedded default (a synthetic celebrity world), offline, in minutes.

Generates the world (web pages + CelebA-format haystack), then runs the four notebooks top to bottom (papermill),
saving every figure and GIF under `results/demo/`. Ends with a summary table of counts, metrics and timings.

The demo's parameters are the notebooks' own defaults, so the full demo runs each notebook exactly as committed
(nothing injected) and saves it in place, with its outputs: the committed notebooks are what a reader's "Run All"
runs. When the parameters differ from a notebook's defaults (smoke runs, another --root, --param), papermill
injects the difference and the executed copy goes to `<results>/notebooks/`; the committed notebook is left alone.

    python -m tools.run_demo                          # full demo (about 12 min on a 2-core CPU); notebooks executed in place
    python -m tools.run_demo --smoke --root .tmp/smoke  # tiny world, a few steps, everything under .tmp/smoke (what CI runs)
    python -m tools.run_demo --stages vae --param vae.MAX_STEPS=50   # one stage again with a changed parameter

A second run resumes: the world, downloads, crops and checkpoints already on disk are reused.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# stage name -> notebook, in the order the story runs them
NOTEBOOKS = {
    "scraping": "scraping/01_scrape_and_crop.ipynb",
    "classification": "classification/02_classify.ipynb",
    "vae": "vae/03_vae.ipynb",
    "latent": "latent/04_latent.ipynb",
}

# Every file a demo run must leave under `<results>/` (the single list the tests and the README rely on).
EXPECTED_ARTIFACTS = (
    "synthetic_world.png",
    "scraping/summary.json",
    "scraping/detections.png",
    "scraping/contact_sheet.png",
    "scraping/counts.png",
    "classification/summary.json",
    "classification/comparison.md",
    "classification/comparison.json",
    "classification/scan/scores.csv",
    "classification/scan/contact_sheet.png",
    "classification/embed_scan/scores.csv",
    "classification/embed_scan/contact_sheet.png",
    "classification/search/scores.csv",
    "classification/search/method.json",
    "vae/summary.json",
    "vae/samples.png",
    "vae/reconstructions.png",
    "vae/traversal.png",
    "vae/smile.png",
    "vae/morph.gif",
    "vae/identity/candidates.png",
    "vae/before_after.png",
    "vae/before_after_morph.gif",
    "latent/summary.json",
    "latent/factor_levels.png",
    "latent/beta/traversal_beta1.png",
    "latent/transfer/vector_smile.png",
    "latent/transfer/cvae_smile.png",
    "latent/transfer/trvae_smile.png",
    "latent/transfer/trvae_glasses.png",
    "latent/transfer/smile_slide.gif",
    "demo_summary.json",
)

# Sizes of the tiny "smoke" world: three people, a haystack of 108 images; generated in a few seconds.
SMOKE_WORLD = dict(target_photos=8, other_photos=5, other_names=("Robin Whitcombe", "Sam Castellane"),
                   group_photos=2, haystack_identities=20, haystack_photos_per_identity=5, target_count=8)

# Notebook parameters that make each stage finish in well under a minute on the smoke world.
SMOKE_PARAMETERS = {
    "scraping": {},
    "classification": {"KS": [0, 1], "TRAIN": {"epochs": 1, "max_steps": 2, "image_size": 32}, "SCAN_TOP_K": 12,
                       "EMBED_TOP_N": 0,
                       "PRETRAIN": {"identities": 20, "photos_per_identity": 4, "epochs": 1, "max_steps": 2}},
    "vae": {"MAX_STEPS": 2, "FINETUNE_STEPS": 1, "TOP_K": 8, "EVAL_IMAGES": 16,
            "TRAIN_OVERRIDES": {"image_size": 32, "batch_size": 8}},
    "latent": {"BETAS": [1.0], "STEPS": 2, "TRAIN_IMAGES": 200, "POOL_IMAGES": 200,
               "TRANSFER": {"steps": 2, "train_images": 150, "judge_images": 100, "judge_steps": 5, "test_images": 8}},
}

# What the closing table shows from each stage's summary.json (missing keys are shown as "-").
TABLE_KEYS = {
    "scraping": ("saved", "duplicates", "faces_target", "faces_others", "rejected_crops"),
    "classification": ("weights", "best_k", "test_roc_auc", "test_f1", "scanned", "scan_images_per_second",
                       "scan_top_k_hits_target", "embed_scan_top_k_hits_target", "search_method"),
    "vae": ("train_steps", "heldout_mse", "heldout_ssim", "search_method", "picked_identity", "truth_identity",
            "precision_at_k", "recall", "verification", "finetune_steps"),
    "latent": ("mig_by_beta", "factor_vae_by_beta", "judge_accuracy", "first_layer_mmd"),
}


@dataclass
class DemoConfig:
    root: str = "."                    # everything below is relative to this folder (itself relative to the repo)
    results: str = "results/demo"      # figures, GIFs and per-stage summaries
    data: str = "data/demo"            # the generated world, scraped photos and face crops
    runs: str = "runs/demo"            # checkpoints and logs
    seed: int = 0                      # seeds the world and every stage
    smoke: bool = False                # tiny world and a few steps: what CI runs
    stages: tuple[str, ...] = tuple(NOTEBOOKS)  # which notebooks to run, by stage name
    params: dict = field(default_factory=dict)  # per-stage parameter overrides {"vae": {"MAX_STEPS": 10}}
    force: bool = False                # run every chosen notebook even when its last run is still up to date


def stage_paths(config: DemoConfig) -> dict[str, Path]:
    """The folders of one demo run, relative to the repo root when they lie inside it (keeps machine paths out of
    the committed notebooks)."""
    base = Path(config.root)
    paths = {name: base / getattr(config, name) for name in ("results", "data", "runs")}
    return {name: _relative_to_repo(path) for name, path in paths.items()}


def _relative_to_repo(path: Path) -> Path:
    resolved = (ROOT / path).resolve()
    try:
        return resolved.relative_to(ROOT)
    except ValueError:
        return resolved


def world_config(config: DemoConfig):
    """The synthetic world of this run: the default demo world, or the tiny smoke world."""
    from world.generate import WorldConfig

    return WorldConfig(seed=config.seed, **(SMOKE_WORLD if config.smoke else {}))


def notebook_parameters(config: DemoConfig, paths: dict[str, Path], target_slug: str = "ava_marlowe"
                        ) -> dict[str, dict]:
    """Parameters of each notebook (by stage) in this run: where it reads and writes, plus smoke sizes and user
    overrides. For the default demo they equal the notebooks' own defaults (`parameters_to_inject` is empty)."""
    data, results, runs = (paths[name].as_posix() for name in ("data", "results", "runs"))
    params = {
        "scraping": dict(DEMO=True, WORLD=f"{data}/world.json", RAW=f"{data}/raw", FACES=f"{data}/faces",
                         OUT=f"{results}/scraping", SEED=config.seed),
        "classification": dict(FACES=f"{data}/faces", CELEBA=f"{data}/celeba",
                               WORLD=f"{data}/world.json", OUT=f"{results}/classification",
                               RUNS=f"{runs}/classification", WEIGHTS="synthetic", SEED=config.seed,
                               PRETRAIN_CACHE=f"{paths['runs'].parent.as_posix()}/pretrained",
                               EMBED_CACHE=f"{data}/embeddings/dlib.sqlite"),
        "vae": dict(CELEBA=f"{data}/celeba", SCORES=f"{results}/classification/search/scores.csv",
                    WORLD=f"{data}/world.json", OUT=f"{results}/vae", RUNS=f"{runs}/vae", SEED=config.seed,
                    TARGET_FACES=f"{data}/faces/{target_slug}", EMBED_CACHE=f"{data}/embeddings/dlib.sqlite"),
        "latent": dict(OUT=f"{results}/latent", SEED=config.seed),
    }
    unknown = set(config.params) - set(params)
    if unknown:
        raise ValueError(f"unknown stage(s) in params: {sorted(unknown)}; choose from {sorted(params)}")
    for stage in params:
        if config.smoke:
            params[stage].update(SMOKE_PARAMETERS[stage])
        params[stage].update(config.params.get(stage, {}))
    return params


def notebook_defaults(notebook: str | Path) -> dict:
    """The values a notebook's `parameters` cell assigns: what a reader who opens it and runs all cells gets.
    A value that is not a plain literal is left out (papermill would have to inject it)."""
    cells = json.loads((ROOT / notebook).read_text(encoding="utf-8"))["cells"]
    cell = next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    defaults = {}
    for node in ast.parse("".join(cell["source"])).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                defaults[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return defaults


def parameters_to_inject(notebook: str | Path, parameters: dict) -> dict:
    """The parameters that differ from the notebook's defaults: what papermill must inject (nothing for the
    default demo, which therefore runs every notebook exactly as committed)."""
    defaults = notebook_defaults(notebook)
    return {name: value for name, value in parameters.items()
            if name not in defaults or json.dumps(defaults[name]) != json.dumps(value)}


def run_notebook(stage: str, parameters: dict, copies: Path) -> tuple[Path, list[dict]]:
    """Execute one notebook with papermill (cwd = repo root); return the executed notebook and its slowest cells.

    When `parameters` equal the notebook's defaults nothing is injected and the executed notebook replaces the
    committed one (only when every cell ran): the committed notebook is then the clean notebook with its outputs.
    Otherwise papermill injects the differences and the executed copy goes to `copies/<name>.ipynb`. A failing run
    is kept as `<name>.failed.ipynb` next to where it would have gone, so the error can be read.
    """
    import papermill

    source = Path(NOTEBOOKS[stage])
    inject = parameters_to_inject(source, parameters)
    target = copies / source.name if inject else source
    if inject:
        print(f"[demo] {stage}: parameters differ from the notebook's defaults ({', '.join(sorted(inject))}): "
              f"executed copy in {target}", flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.stem + ".running.ipynb")
    try:
        # log_level=ERROR: the kernel's own start-up notices (e.g. "running over TCP") are not the demo's output
        papermill.execute_notebook(str(source), str(partial), parameters=inject, cwd=str(ROOT),
                                   kernel_name="python3", progress_bar=False, log_output=False,
                                   extra_arguments=["--IPKernelApp.log_level=ERROR"])
    except Exception:
        failed = target.with_name(target.stem + ".failed.ipynb")
        if partial.exists():
            os.replace(partial, failed)
        print(f"[demo] {stage}: notebook failed; executed copy with the error: {failed}", file=sys.stderr)
        raise
    slowest = tidy_notebook(partial)
    os.replace(partial, target)
    return target, slowest


# The packages whose code each stage runs (a change in any of them makes the stage's last run stale).
STAGE_PACKAGES = {
    "scraping": ("common", "world", "scraping"),
    "classification": ("common", "world", "scraping", "classification"),
    "vae": ("common", "world", "scraping", "classification", "vae"),
    "latent": ("common", "world", "vae"),
}
# The stage whose result each stage reads (its fingerprint includes that stage's): the latent-space stage makes
# its own labelled portraits and depends on no earlier stage.
UPSTREAM = {"scraping": None, "classification": "scraping", "vae": "classification", "latent": None}


def stage_fingerprints(world_cfg, parameters: dict[str, dict]) -> dict[str, str]:
    """One fingerprint per stage over everything its result depends on: the world's config, the notebook's cells
    (not their outputs), its parameters, the code of the packages it runs, and the stages before it."""
    import hashlib
    from dataclasses import asdict

    from common.config import code_version

    fingerprints = {}
    for stage, notebook in NOTEBOOKS.items():
        upstream = fingerprints.get(UPSTREAM[stage], "")
        # a papermill injected-parameters cell (left by older runs) is left out: the parameters are fingerprinted
        # on their own
        cells = [(c["cell_type"], "".join(c["source"])) for c in json.loads((ROOT / notebook).read_text())["cells"]
                 if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
        payload = {"world": asdict(world_cfg), "cells": cells, "code": code_version(*STAGE_PACKAGES[stage]),
                   "parameters": parameters[stage],
                   "upstream": upstream}
        fingerprints[stage] = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return fingerprints


def stage_stamp(runs: Path, stage: str) -> Path:
    return runs / "stages" / f"{stage}.json"


def up_to_date(stage: str, fingerprint: str, paths: dict[str, Path]) -> str | None:
    """The executed notebook of the stage's last run when that run is still valid (same fingerprint, every
    artifact of the stage still there), else None."""
    stamp = stage_stamp(paths["runs"], stage)
    if not stamp.is_file():
        return None
    record = json.loads(stamp.read_text())
    artifacts = [paths["results"] / name for name in EXPECTED_ARTIFACTS if name.startswith(f"{stage}/")]
    if record.get("fingerprint") != fingerprint or not all(p.is_file() for p in artifacts):
        return None
    return record["notebook"] if (ROOT / record["notebook"]).is_file() else None


def _progress_bar_output(output: dict) -> bool:
    """A stderr stream made only of progress-bar frames (tqdm redraws: '\\r  40%|####      | 4/10 [...]')."""
    if output.get("output_type") != "stream" or output.get("name") != "stderr":
        return False
    text = "".join(output.get("text", ""))
    return all(not piece.strip() or "%|" in piece for piece in text.replace("\r", "\n").split("\n"))


SLOWEST_CELLS = 3  # how many of each notebook's slowest cells timings.json names


def slowest_cells(notebook: dict, n: int = SLOWEST_CELLS) -> list[dict]:
    """The `n` code cells of an executed notebook that took longest (papermill's per-cell durations), slowest
    first: `{cell, first_line, seconds}` with `cell` counted from 1 over all cells."""
    timed = []
    for number, cell in enumerate(notebook.get("cells", []), start=1):
        duration = cell.get("metadata", {}).get("papermill", {}).get("duration")
        if cell.get("cell_type") == "code" and duration is not None:
            source = "".join(cell.get("source", ""))
            first = next((line.strip() for line in source.splitlines() if line.strip()), "")
            timed.append({"cell": number, "first_line": first[:80], "seconds": round(float(duration), 1)})
    return sorted(timed, key=lambda row: -row["seconds"])[:n]


def tidy_notebook(path: Path) -> list[dict]:
    """Keep an executed notebook's results, drop what changes on every run: execution timestamps and durations,
    papermill's run metadata (except the parameters passed) and progress-bar frames. Returns its slowest cells
    (`slowest_cells`), read before the durations are dropped."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    slowest = slowest_cells(notebook)
    papermill = notebook.get("metadata", {}).get("papermill")
    if papermill is not None:
        notebook["metadata"]["papermill"] = {k: papermill[k] for k in ("parameters",) if k in papermill}
    for cell in notebook["cells"]:
        cell.get("metadata", {}).pop("execution", None)
        cell.get("metadata", {}).pop("papermill", None)
        if cell["cell_type"] == "code":
            cell["outputs"] = [o for o in cell.get("outputs", []) if not _progress_bar_output(o)]
    from common.files import atomic_write_text

    atomic_write_text(path, json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    return slowest


APP_SCREENSHOT = Path("results/app/screenshot.png")  # the README's picture of the web app


def app_screenshot(config: DemoConfig, paths: dict[str, Path], upstream: str) -> str:
    """After a full in-place demo: the web app's screenshot with the new models (`python -m app screenshot`), when
    Chromium is installed; redone only when the app's code or the stages before it changed. Returns what happened."""
    import hashlib
    import subprocess

    if config.smoke or Path(config.root).resolve() != ROOT:
        return "not made (only a full in-place demo makes it)"
    from app.screenshot import chromium_path
    from common.config import code_version

    if not Path(chromium_path()).exists():
        return f"not made: Chromium not found at {chromium_path()} (apt-get install chromium, or set CHROMIUM_PATH)"
    fingerprint = hashlib.sha256((upstream + code_version("app")).encode()).hexdigest()[:16]
    stamp = stage_stamp(paths["runs"], "app")
    if stamp.is_file() and APP_SCREENSHOT.is_file() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint:
        return "up to date, not made again"
    done = subprocess.run([sys.executable, "-m", "app", "screenshot", "--out", str(APP_SCREENSHOT)], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode != 0:
        return "failed: " + (done.stderr.strip().splitlines() or ["no message"])[-1]
    from common.files import atomic_write_text

    atomic_write_text(stamp, json.dumps({"fingerprint": fingerprint}) + "\n")
    return f"made {APP_SCREENSHOT}"


def read_stage_summary(results: Path, stage: str) -> dict:
    path = results / stage / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


def format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if value is None:
        return "-"
    return str(value)


def summary_table(summaries: dict[str, dict], seconds: dict[str, float], verdicts: list[dict] = ()) -> str:
    """A plain-text table: one block per stage with its headline numbers and wall time, then the verdicts."""
    lines = [f"{'stage':<16}{'metric':<32}value", "-" * 66]
    for stage, summary in summaries.items():
        lines.append(f"{stage:<16}{'wall seconds':<32}{seconds.get(stage, 0):.0f}")
        for key in TABLE_KEYS.get(stage, ()):
            lines.append(f"{'':<16}{key:<32}{format_value(summary.get(key))}")
    if verdicts:
        lines += ["-" * 66] + [f"{'✓' if v['ok'] else '✗'} {v['text']}" for v in verdicts]
    return "\n".join(lines)


RECOGNISED_SHARE = 0.9  # the payoff: this share of her reconstructions must be recognised as her


def stage_verdicts(world: dict, summaries: dict[str, dict], smoke: bool = False) -> list[dict]:
    """The story's headline results in words, each `{name, ok, headline, text}`; `--check` fails on a headline
    that is wrong. Stages that did not run give no verdict. A smoke run trains for a few steps only, so there the
    VAE's recognition verdict is shown but is no headline."""
    verdicts = []
    vae, classification = summaries.get("vae") or {}, summaries.get("classification") or {}
    planted = world.get("target_identity")
    if "picked_identity" in vae:
        picked = vae["picked_identity"]
        ok = picked == planted
        verdicts.append({"name": "identity", "ok": ok, "headline": True,
                         "text": f"identity: found {picked} = planted" if ok
                         else f"identity: picked {picked}, planted {planted}"})
    if vae.get("verification"):
        verdict = vae["verification"]
        verdicts.append({"name": "verification", "ok": verdict == "confirmed", "headline": True,
                         "text": f"verification of the picked identity: {verdict}"
                                 + (f" ({vae['verification_reason']})" if vae.get("verification_reason") else "")})
    quality = vae.get("quality") or {}
    if quality.get("finetuned_nearest_identity_accuracy") is not None:
        share = quality["finetuned_nearest_identity_accuracy"]
        verdicts.append({"name": "recognised", "ok": share >= RECOGNISED_SHARE, "headline": not smoke,
                         "text": f"the fine-tuned VAE's reconstructions are recognised as "
                                 f"{world.get('target_name', 'the target')}: {share:.0%}"
                                 + ("" if share >= RECOGNISED_SHARE else f" (target {RECOGNISED_SHARE:.0%})")})
    if "scan_top_k_hits_target" in classification:
        hits, k = classification["scan_top_k_hits_target"], classification.get("scan_top_k")
        verdicts.append({"name": "scan", "ok": bool(hits), "headline": False,
                         "text": f"MobileNetV2 scan: {hits} of the top {k} photos are the target"})
    if classification.get("embed_scan_top_k_hits_target") is not None:
        hits, k = classification["embed_scan_top_k_hits_target"], classification.get("scan_top_k")
        verdicts.append({"name": "embedding scan", "ok": bool(hits), "headline": False,
                         "text": f"face-embedding scan: {hits} of the top {k} photos are the target"})
    return verdicts


def run_demo(config: DemoConfig) -> dict:
    """Generate the world, run the chosen notebooks in order (notebook 01 serves the world's web itself), write
    `<results>/demo_summary.json`.

    Returns the summary: per-stage summaries (from each notebook's `summary.json`), wall seconds per stage, the
    world's headline numbers, and the executed notebooks' paths.
    """
    from common.files import atomic_write_text, only_timings, without_timings
    from world.generate import generate_world, world_figure

    os.chdir(ROOT)  # notebooks and papermill resolve the relative paths from the repo root
    # Few progress-bar refreshes: keeps the committed notebooks' outputs short while still showing progress.
    os.environ.setdefault("TQDM_MININTERVAL", "30")
    # tqdm.auto (imported by facenet-pytorch) warns that ipywidgets is missing, naming its own install path.
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"),
                                                          "ignore:IProgress not found"]))
    paths = stage_paths(config)
    unknown = [s for s in config.stages if s not in NOTEBOOKS]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; choose from {list(NOTEBOOKS)}")
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    world_cfg = world_config(config)
    try:
        world = generate_world(world_cfg, paths["data"], progress=False)
    except FileExistsError as error:  # e.g. a demo folder made by an older version of the world
        raise FileExistsError(
            f"{error}. For the demo: delete {paths['data']} and {paths['runs']} (the demo makes them again), or "
            "run it in a fresh folder with --root"
        ) from None
    world_figure(paths["results"] / "synthetic_world.png", world_cfg)
    seconds["world"] = round(time.perf_counter() - started, 1)
    print(f"[demo] world: {world['haystack_images']} haystack photos, {world['web_photos']} web photos "
          f"({'reused' if world.get('reused') else 'generated'}, {seconds['world']:.0f} s)", flush=True)
    executed, slowest = {}, {}
    parameters = notebook_parameters(config, paths, world["target_slug"])
    fingerprints = stage_fingerprints(world_cfg, parameters)
    for stage in config.stages:
        begin = time.perf_counter()
        previous = None if config.force else up_to_date(stage, fingerprints[stage], paths)
        if previous:  # a rerun that changes nothing rewrites nothing
            executed[stage] = _relative_to(Path(previous), Path(config.root))
            seconds[stage] = 0.0
            print(f"[demo] {stage}: up to date, not run again (same notebook, parameters, code and inputs; "
                  "--force runs it anyway)", flush=True)
            continue
        stamp = stage_stamp(paths["runs"], stage)
        stamp.unlink(missing_ok=True)
        notebook, slowest[stage] = run_notebook(stage, parameters[stage], paths["results"] / "notebooks")
        executed[stage] = _relative_to(notebook, Path(config.root))
        stamp.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(stamp, json.dumps({"fingerprint": fingerprints[stage],
                                             "notebook": _relative_to_repo(notebook).as_posix()}) + "\n")
        seconds[stage] = round(time.perf_counter() - begin, 1)
        print(f"[demo] {stage}: ran {notebook.as_posix()} ({seconds[stage]:.0f} s)", flush=True)
    begin = time.perf_counter()
    print(f"[demo] app screenshot: {app_screenshot(config, paths, fingerprints['vae'])}", flush=True)
    seconds["app_screenshot"] = round(time.perf_counter() - begin, 1)
    summaries = {stage: read_stage_summary(paths["results"], stage) for stage in NOTEBOOKS}
    seconds["total"] = round(time.perf_counter() - started, 1)
    world_numbers = {k: world[k] for k in ("target_name", "target_identity", "target_count", "haystack_images",
                                           "web_photos")}
    verdicts = stage_verdicts(world_numbers, {s: summaries[s] for s in config.stages}, config.smoke)
    summary = {
        "world": world_numbers,
        "stages": without_timings(summaries),
        "verdicts": verdicts,
        "smoke": config.smoke,
        "notebooks": executed,
    }
    # Results and timings apart: a rerun that changes nothing rewrites demo_summary.json byte for byte.
    atomic_write_text(paths["results"] / "demo_summary.json", json.dumps(summary, indent=1) + "\n")
    timings = {"seconds": seconds, "stages": only_timings(summaries) or {}, "slowest_cells": slowest}
    atomic_write_text(paths["results"] / "timings.json", json.dumps(timings, indent=1) + "\n")
    print(summary_table({s: summaries[s] for s in config.stages}, seconds, verdicts))
    return {**summary, "seconds": seconds}


def _relative_to(path: Path, base: Path) -> str:
    """`path` relative to `base` when inside it (no machine paths in the summary), else as given."""
    try:
        return (ROOT / path).resolve().relative_to((ROOT / base).resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def parse_params(items: list[str]) -> dict[str, dict]:
    """`["vae.MAX_STEPS=50", "classification.KS=[0,1]"]` -> {"vae": {"MAX_STEPS": 50}, ...}; values are JSON
    when they parse as JSON, else strings."""
    params: dict[str, dict] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        stage, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise ValueError(f"--param wants stage.NAME=value, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        params.setdefault(stage, {})[name] = value
    return params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="folder holding results/, data/, runs/ of this run")
    parser.add_argument("--smoke", action="store_true", help="tiny world and a few steps (what CI runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", nargs="+", default=list(NOTEBOOKS), choices=list(NOTEBOOKS))
    parser.add_argument("--param", action="append", default=[], metavar="STAGE.NAME=VALUE",
                        help="override a notebook parameter, e.g. vae.MAX_STEPS=50 (repeatable)")
    parser.add_argument("--force", action="store_true",
                        help="run the chosen notebooks even when their last run is up to date")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a headline result is wrong (e.g. the wrong identity was found)")
    args = parser.parse_args(argv)
    config = DemoConfig(root=args.root, seed=args.seed, smoke=args.smoke, stages=tuple(args.stages),
                        params=parse_params(args.param), force=args.force)
    summary = run_demo(config)
    failed = [v["name"] for v in summary["verdicts"] if v["headline"] and not v["ok"]]
    print(json.dumps({"seconds": summary["seconds"], "smoke": summary["smoke"], "failed": failed}))
    if args.check and failed:
        print(f"[demo] check failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
