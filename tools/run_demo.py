"""`make demo`: the whole story on a synthetic celebrity world, offline: the four notebooks run with papermill.

With their default parameters the notebooks run as committed and are saved in place; otherwise (--smoke, --root,
--param) papermill injects the difference and the executed copy goes to `<results>/notebooks/`. A stage whose
notebook, parameters, code and inputs are unchanged is not run again (--force runs it). CI runs
`python -m tools.run_demo --smoke --root .tmp/smoke` (a tiny world, a few steps).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]

# stage name -> notebook, in the order the story runs them
NOTEBOOKS = {
    "scraping": "scraping/01_scrape_and_crop.ipynb",
    "classification": "classification/02_classify.ipynb",
    "vae": "vae/03_vae.ipynb",
    "latent": "latent/04_latent.ipynb",
}

# Every file a demo run must leave under `<results>/`.
EXPECTED_ARTIFACTS = ("synthetic_world.png", "demo_summary.json", *(f"{stage}/{name}" for stage, names in {
    "scraping": "summary.json detections.png contact_sheet.png counts.png",
    "classification": "summary.json comparison.md comparison.json scan/scores.csv scan/contact_sheet.png "
                      "embed_scan/scores.csv embed_scan/contact_sheet.png search/scores.csv search/method.json",
    "vae": "summary.json samples.png reconstructions.png traversal.png smile.png morph.gif identity/candidates.png "
           "before_after.png before_after_morph.gif",
    "latent": "summary.json factor_levels.png beta/traversal_beta1.png transfer/vector_smile.png "
              "transfer/cvae_smile.png transfer/trvae_smile.png transfer/trvae_glasses.png transfer/smile_slide.gif",
}.items() for name in names.split()))

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

# The packages whose code each stage runs, and the stage whose result it reads (its fingerprint includes that
# stage's): a change in either makes the stage's last run stale. The latent stage depends on no earlier stage.
STAGE_PACKAGES = {"scraping": ("common", "world", "scraping"),
                  "classification": ("common", "world", "scraping", "classification"),
                  "vae": ("common", "world", "scraping", "classification", "vae"), "latent": ("common", "world", "vae")}
UPSTREAM = {"scraping": None, "classification": "scraping", "vae": "classification", "latent": None}
SLOWEST_CELLS = 3  # how many of each notebook's slowest cells timings.json names
RECOGNISED_SHARE = 0.9  # the payoff: this share of her reconstructions must be recognised as her
APP_SCREENSHOT = Path("results/app/screenshot.png")  # the README's picture of the web app


@dataclass
class DemoConfig:
    root: str = "."                    # holds results/demo, data/demo and runs/demo; relative to the repo
    seed: int = 0                      # seeds the world and every stage
    smoke: bool = False                # tiny world and a few steps: what CI runs
    stages: tuple[str, ...] = tuple(NOTEBOOKS)  # which notebooks to run, by stage name
    params: dict = field(default_factory=dict)  # per-stage parameter overrides {"vae": {"MAX_STEPS": 10}}
    force: bool = False                # run every chosen notebook even when its last run is still up to date


def _relative(path: Path, base: Path = ROOT) -> Path:
    """`path` (relative to the repo root) made relative to `base` when it lies inside it (no machine paths)."""
    resolved, base = (ROOT / path).resolve(), (ROOT / base).resolve()
    return resolved.relative_to(base) if resolved.is_relative_to(base) else resolved


def stage_paths(config: DemoConfig) -> dict[str, Path]:
    """The results, data and runs folders (`<root>/<name>/demo`), relative to the repo root when inside it."""
    return {name: _relative(Path(config.root) / name / "demo") for name in ("results", "data", "runs")}


def world_config(config: DemoConfig):
    """The synthetic world of this run: the default demo world, or the tiny smoke world."""
    from world.generate import WorldConfig

    return WorldConfig(seed=config.seed, **(SMOKE_WORLD if config.smoke else {}))


def notebook_parameters(config: DemoConfig, paths: dict, target_slug: str = "ava_marlowe") -> dict[str, dict]:
    """Each notebook's parameters (by stage): where it reads and writes, plus smoke sizes and user overrides. For
    the default demo they equal the notebooks' own defaults."""
    data, results, runs = (paths[name].as_posix() for name in ("data", "results", "runs"))
    params = {
        "scraping": dict(DEMO=True, WORLD=f"{data}/world.json", RAW=f"{data}/raw", FACES=f"{data}/faces",
                         OUT=f"{results}/scraping", SEED=config.seed),
        "classification": dict(FACES=f"{data}/faces", CELEBA=f"{data}/celeba", WORLD=f"{data}/world.json",
                               OUT=f"{results}/classification", RUNS=f"{runs}/classification", WEIGHTS="synthetic",
                               SEED=config.seed, PRETRAIN_CACHE=f"{paths['runs'].parent.as_posix()}/pretrained",
                               EMBED_CACHE=f"{data}/embeddings/dlib.sqlite"),
        "vae": dict(CELEBA=f"{data}/celeba", SCORES=f"{results}/classification/search/scores.csv",
                    WORLD=f"{data}/world.json", OUT=f"{results}/vae", RUNS=f"{runs}/vae", SEED=config.seed,
                    TARGET_FACES=f"{data}/faces/{target_slug}", EMBED_CACHE=f"{data}/embeddings/dlib.sqlite"),
        "latent": dict(OUT=f"{results}/latent", SEED=config.seed),
    }
    unknown = (set(config.params) | set(config.stages)) - set(params)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; choose from {list(params)}")
    for stage in params:
        params[stage].update({**(SMOKE_PARAMETERS[stage] if config.smoke else {}), **config.params.get(stage, {})})
    return params


def notebook_defaults(notebook: str | Path) -> dict:
    """The literal values a notebook's `parameters` cell assigns: what a reader's "Run All" gets."""
    cells = json.loads((ROOT / notebook).read_text(encoding="utf-8"))["cells"]
    cell = next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    defaults = {}
    for node in ast.parse("".join(cell["source"])).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            with contextlib.suppress(ValueError):  # not a plain literal: papermill would have to inject it
                defaults[node.targets[0].id] = ast.literal_eval(node.value)
    return defaults


def parameters_to_inject(notebook: str | Path, parameters: dict) -> dict:
    """The parameters that differ from the notebook's defaults: what papermill must inject."""
    defaults = notebook_defaults(notebook)
    return {name: value for name, value in parameters.items()
            if name not in defaults or json.dumps(defaults[name]) != json.dumps(value)}


def run_notebook(stage: str, parameters: dict, copies: Path) -> tuple[Path, list[dict]]:
    """Execute one notebook with papermill; return the executed notebook (in place when nothing is injected, else
    in `copies/`) and its slowest cells. A failing run is kept as `<name>.failed.ipynb`, to read the error."""
    import papermill

    source = Path(NOTEBOOKS[stage])
    inject = parameters_to_inject(source, parameters)
    target = copies / source.name if inject else source
    if inject:
        print(f"[demo] {stage}: parameters {', '.join(sorted(inject))} differ from the notebook's: executed copy "
              f"in {target}", flush=True)
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


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_fingerprints(world_cfg, parameters: dict[str, dict]) -> dict[str, str]:
    """One fingerprint per stage over everything its result depends on: the world's config, the notebook's cells
    (not their outputs, nor a papermill injected-parameters cell), its parameters, its code, the stage before."""
    from common.config import code_version

    fingerprints = {}
    for stage, notebook in NOTEBOOKS.items():
        cells = [(c["cell_type"], "".join(c["source"])) for c in json.loads((ROOT / notebook).read_text())["cells"]
                 if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
        fingerprints[stage] = _digest({"world": asdict(world_cfg), "cells": cells, "parameters": parameters[stage],
                                       "code": code_version(*STAGE_PACKAGES[stage]),
                                       "upstream": fingerprints.get(UPSTREAM[stage], "")})
    return fingerprints


def up_to_date(stage: str, fingerprint: str, paths: dict[str, Path]) -> str | None:
    """The executed notebook of the stage's last run if it is still valid (same fingerprint, artifacts there)."""
    record = _read_json(paths["runs"] / "stages" / f"{stage}.json")
    artifacts = [paths["results"] / name for name in EXPECTED_ARTIFACTS if name.startswith(f"{stage}/")]
    fresh = record.get("fingerprint") == fingerprint and all(p.is_file() for p in artifacts)
    return record["notebook"] if fresh and (ROOT / record["notebook"]).is_file() else None


def slowest_cells(notebook: dict, n: int = SLOWEST_CELLS) -> list[dict]:
    """The `n` slowest code cells of an executed notebook, `{cell (from 1), first_line, seconds}`."""
    timed = []
    for number, cell in enumerate(notebook.get("cells", []), start=1):
        duration = cell.get("metadata", {}).get("papermill", {}).get("duration")
        if cell.get("cell_type") == "code" and duration is not None:
            first = next((line.strip() for line in "".join(cell.get("source", "")).splitlines() if line.strip()), "")
            timed.append({"cell": number, "first_line": first[:80], "seconds": round(float(duration), 1)})
    return sorted(timed, key=lambda row: -row["seconds"])[:n]


def _progress_bar_output(output: dict) -> bool:
    """A stderr stream made only of progress-bar frames (tqdm redraws: '\\r  40%|####      | 4/10 [...]')."""
    text = "".join(output.get("text", "")).replace("\r", "\n")
    return output.get("name") == "stderr" and all(not piece.strip() or "%|" in piece for piece in text.split("\n"))


def tidy_notebook(path: Path) -> list[dict]:
    """Drop what changes on every run from an executed notebook: execution timestamps and durations, papermill's
    run metadata (but the parameters) and progress-bar frames. Returns its slowest cells, read before."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    slowest = slowest_cells(notebook)
    if "papermill" in notebook.get("metadata", {}):  # papermill always records the parameters
        notebook["metadata"]["papermill"] = {"parameters": notebook["metadata"]["papermill"]["parameters"]}
    for cell in notebook["cells"]:
        cell.get("metadata", {}).pop("execution", None)
        cell.get("metadata", {}).pop("papermill", None)
        if cell["cell_type"] == "code":
            cell["outputs"] = [o for o in cell.get("outputs", []) if not _progress_bar_output(o)]
    atomic_write_text(path, json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    return slowest


def app_screenshot(config: DemoConfig, paths: dict[str, Path], upstream: str) -> str:
    """After a full in-place demo, when Chromium is installed: the web app's screenshot with the new models, redone
    only when the app's code or the stages before it changed. Returns what happened."""
    if config.smoke or Path(config.root).resolve() != ROOT:
        return "not made (only a full in-place demo makes it)"
    from app.screenshot import chromium_path
    from common.config import code_version

    if not Path(chromium_path()).exists():
        return f"not made: Chromium not found at {chromium_path()} (apt-get install chromium, or set CHROMIUM_PATH)"
    fingerprint, stamp = _digest(upstream + code_version("app")), paths["runs"] / "stages" / "app.json"
    if APP_SCREENSHOT.is_file() and _read_json(stamp).get("fingerprint") == fingerprint:
        return "up to date, not made again"
    done = subprocess.run([sys.executable, "-m", "app", "screenshot", "--out", str(APP_SCREENSHOT)], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode != 0:
        return "failed: " + (done.stderr.strip().splitlines() or ["no message"])[-1]
    atomic_write_text(stamp, json.dumps({"fingerprint": fingerprint}) + "\n")
    return f"made {APP_SCREENSHOT}"


def stage_verdicts(world: dict, summaries: dict[str, dict], smoke: bool = False) -> list[dict]:
    """The story's headline results in words, each `{name, ok, headline, text}`; `--check` fails on a wrong
    headline. Stages that did not run give no verdict; in a smoke run (a few steps) recognition is no headline."""
    verdicts = []
    vae, classification = summaries.get("vae") or {}, summaries.get("classification") or {}

    def add(name: str, ok: bool, headline: bool, text: str) -> None:
        verdicts.append({"name": name, "ok": ok, "headline": headline, "text": text})

    if "picked_identity" in vae:
        picked, planted = vae["picked_identity"], world.get("target_identity")
        add("identity", picked == planted, True, f"identity: found {picked} = planted" if picked == planted
            else f"identity: picked {picked}, planted {planted}")
    if vae.get("verification"):
        reason = f" ({vae['verification_reason']})" if vae.get("verification_reason") else ""
        add("verification", vae["verification"] == "confirmed", True,
            f"verification of the picked identity: {vae['verification']}{reason}")
    share = (vae.get("quality") or {}).get("finetuned_nearest_identity_accuracy")
    if share is not None:
        add("recognised", share >= RECOGNISED_SHARE, not smoke,
            f"the fine-tuned VAE's reconstructions are recognised as {world.get('target_name', 'the target')}: "
            f"{share:.0%}" + ("" if share >= RECOGNISED_SHARE else f" (target {RECOGNISED_SHARE:.0%})"))
    for key, label in (("scan_top_k_hits_target", "MobileNetV2 scan"),
                       ("embed_scan_top_k_hits_target", "face-embedding scan")):
        if classification.get(key) is not None:
            add("scan" if key.startswith("scan") else "embedding scan", bool(classification[key]), False,
                f"{label}: {classification[key]} of the top {classification.get('scan_top_k')} photos are the target")
    return verdicts


def run_demo(config: DemoConfig) -> dict:
    """Generate the world, run the chosen notebooks in order, write `<results>/demo_summary.json` (stage summaries,
    world numbers, verdicts, executed notebooks) and `timings.json` (`full_run_timings.json` when every stage ran);
    return the summary with the wall seconds."""
    from common.files import only_timings, without_timings
    from world.generate import generate_world, world_figure

    os.chdir(ROOT)  # notebooks and papermill resolve the relative paths from the repo root
    os.environ.setdefault("TQDM_MININTERVAL", "30")  # few progress-bar refreshes keep the notebooks' outputs short
    # tqdm.auto (imported by facenet-pytorch) warns that ipywidgets is missing, naming its own install path.
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"),
                                                          "ignore:IProgress not found"]))
    paths = stage_paths(config)
    seconds, executed, slowest = {}, {}, {}
    started = time.perf_counter()
    world_cfg = world_config(config)
    try:
        world = generate_world(world_cfg, paths["data"], progress=False)
    except FileExistsError as error:  # e.g. a demo folder made by an older version of the world
        raise FileExistsError(f"{error}. For the demo: delete {paths['data']} and {paths['runs']} (the demo makes "
                              "them again), or run it in a fresh folder with --root") from None
    world_figure(paths["results"] / "synthetic_world.png", world_cfg)
    seconds["world"] = round(time.perf_counter() - started, 1)
    print(f"[demo] world: {world['haystack_images']} haystack photos, {world['web_photos']} web photos "
          f"({'reused' if world.get('reused') else 'generated'}, {seconds['world']:.0f} s)", flush=True)
    parameters = notebook_parameters(config, paths, world["target_slug"])
    fingerprints = stage_fingerprints(world_cfg, parameters)
    for stage in config.stages:
        begin, stamp = time.perf_counter(), paths["runs"] / "stages" / f"{stage}.json"  # the last run's fingerprint
        previous = None if config.force else up_to_date(stage, fingerprints[stage], paths)
        if previous:  # a rerun that changes nothing rewrites nothing
            executed[stage], seconds[stage] = _relative(Path(previous), Path(config.root)).as_posix(), 0.0
            print(f"[demo] {stage}: up to date, not run again (--force runs it anyway)", flush=True)
            continue
        stamp.unlink(missing_ok=True)
        notebook, slowest[stage] = run_notebook(stage, parameters[stage], paths["results"] / "notebooks")
        executed[stage] = _relative(notebook, Path(config.root)).as_posix()
        atomic_write_text(stamp, json.dumps({"fingerprint": fingerprints[stage],
                                             "notebook": _relative(notebook).as_posix()}) + "\n")
        seconds[stage] = round(time.perf_counter() - begin, 1)
        print(f"[demo] {stage}: ran {notebook.as_posix()} ({seconds[stage]:.0f} s)", flush=True)
    summaries = {stage: _read_json(paths["results"] / stage / "summary.json") for stage in NOTEBOOKS}
    world_numbers = {k: world[k] for k in ("target_name", "target_identity", "target_count", "haystack_images",
                                           "web_photos")}
    verdicts = stage_verdicts(world_numbers, {s: summaries[s] for s in config.stages}, config.smoke)
    summary = {"world": world_numbers, "stages": without_timings(summaries), "verdicts": verdicts,
               "smoke": config.smoke, "notebooks": executed}
    # Results and timings apart: a rerun that changes nothing rewrites demo_summary.json byte for byte.
    atomic_write_text(paths["results"] / "demo_summary.json", json.dumps(summary, indent=1) + "\n")
    begin = time.perf_counter()  # the app reads the models named by demo_summary.json: it comes after
    print(f"[demo] app screenshot: {app_screenshot(config, paths, fingerprints['vae'])}", flush=True)
    seconds["app_screenshot"] = round(time.perf_counter() - begin, 1)
    seconds["total"] = round(time.perf_counter() - started, 1)
    timings = {"seconds": seconds, "stages": only_timings(summaries) or {}, "slowest_cells": slowest}
    atomic_write_text(paths["results"] / "timings.json", json.dumps(timings, indent=1) + "\n")
    if set(slowest) == set(NOTEBOOKS) and not config.smoke:  # every stage ran: the times the README quotes
        atomic_write_text(paths["results"] / "full_run_timings.json", json.dumps(timings, indent=1) + "\n")
    for verdict in verdicts:  # every stage's numbers are in demo_summary.json
        print(f"{'✓' if verdict['ok'] else '✗'} {verdict['text']}")
    return {**summary, "seconds": seconds}


def parse_params(items: list[str]) -> dict[str, dict]:
    """`["vae.MAX_STEPS=50"]` -> {"vae": {"MAX_STEPS": 50}}; values are JSON when they parse as JSON, else strings."""
    from common.config import parse_set_options

    params: dict[str, dict] = {}
    for item in items:
        stage, _, assignment = item.partition(".")
        if "=" not in assignment or assignment.startswith("="):
            raise ValueError(f"--param wants stage.NAME=value, got {item!r}")
        params.setdefault(stage, {}).update(parse_set_options([assignment]))
    return params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="folder holding results/, data/, runs/ of this run")
    parser.add_argument("--smoke", action="store_true", help="tiny world and a few steps (what CI runs)")
    parser.add_argument("--stages", nargs="+", default=list(NOTEBOOKS), choices=list(NOTEBOOKS))
    parser.add_argument("--param", action="append", default=[], metavar="STAGE.NAME=VALUE",
                        help="override a notebook parameter, e.g. vae.MAX_STEPS=50 (repeatable)")
    parser.add_argument("--force", action="store_true", help="run the chosen notebooks even when up to date")
    parser.add_argument("--check", action="store_true", help="exit 1 when a headline result is wrong")
    args = parser.parse_args(argv)
    summary = run_demo(DemoConfig(root=args.root, smoke=args.smoke, stages=tuple(args.stages),
                                  params=parse_params(args.param), force=args.force))
    failed = [v["name"] for v in summary["verdicts"] if v["headline"] and not v["ok"]]
    print(json.dumps({"seconds": summary["seconds"], "smoke": summary["smoke"], "failed": failed}))
    if args.check and failed:
        print(f"[demo] check failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
