"""Which ranking of the haystack goes on to stage 3: the scan of the method chosen on validation F1.

Stage 2 ranks the haystack twice — MobileNetV2's scan (`scan/scores.csv`) and the face embedding's
(`embed_scan/scores.csv`) — and `add_comparison_row` picks one method for the identity search on validation F1
(never test), recording it in `comparison.json`. `choose_search_ranking` copies that method's ranking to
`search/scores.csv` and writes the choice to `search/method.json`: the two files notebook 03 reads.

    python -m classification choose-search --src results/demo/classification
"""
from __future__ import annotations

import json
from pathlib import Path

from .scan import write_ranked_scores
from common.errors import InputError
from common.files import atomic_write_text, read_csv

# the folder (under stage 2's results) holding each kind of method's ranking of the haystack
RANKING_FOLDERS = {"MobileNetV2": "scan", "embedding": "embed_scan"}


def chosen_method(comparison: dict) -> str:
    """The method `comparison.json` chose for the identity search; before a face-embedding row was added, the
    MobileNetV2 run picked on validation F1."""
    if comparison.get("search_method"):
        return comparison["search_method"]
    return next(r["method"] for r in comparison["rows"] if r.get("unfreeze") == comparison["best_k"])


def choose_search_ranking(results_dir: str | Path, out_dir: str | Path | None = None) -> dict:
    """Copy the ranking of the method chosen on validation F1 to `<out_dir>/scores.csv` (`rank, file, score`) and
    record the choice in `<out_dir>/method.json` (`method`, `scores_from`, `chosen_on`).

    results_dir: stage 2's results (`comparison.json`, `scan/scores.csv`, `embed_scan/scores.csv`).
    out_dir: default `<results_dir>/search`. Returns the record plus `scores` (the written file) and `ranked`.
    """
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir / "search"
    comparison_file = results_dir / "comparison.json"
    if not comparison_file.is_file():
        raise InputError(f"{comparison_file} not found: run `python -m classification compare` (and embed-scorer) "
                         "into that folder first")
    method = chosen_method(json.loads(comparison_file.read_text(encoding="utf-8")))
    folder = RANKING_FOLDERS[method.split()[0]]
    scores_file = results_dir / folder / "scores.csv"
    if not scores_file.is_file():
        command = "embed-scan" if folder == "embed_scan" else "scan"
        raise InputError(f"{method} was chosen but {scores_file} does not exist: run `python -m classification "
                         f"{command} --out {results_dir / folder}` first")
    rows = write_ranked_scores({row["file"]: float(row["score"]) for row in read_csv(scores_file)},
                               out_dir / "scores.csv")
    record = {"method": method, "scores_from": folder, "chosen_on": "validation F1"}
    atomic_write_text(out_dir / "method.json", json.dumps(record, indent=1) + "\n")
    return {**record, "scores": str(out_dir / "scores.csv"), "ranked": len(rows)}


# --------------------------------------------------------------------------------------------------- CLI


def cli_add_arguments(parser) -> None:
    parser.add_argument("--src", required=True,
                        help="stage 2's results folder (comparison.json, scan/ and embed_scan/ scores)")
    parser.add_argument("--out", help="folder for scores.csv and method.json (default: <src>/search)")


def cli_run(args) -> dict:
    return choose_search_ranking(args.src, args.out)
