"""`python -m classification choose-search`: the ranking of the method chosen on validation F1 becomes
`search/scores.csv` + `search/method.json` (what notebook 03 reads), and bad input is one line with exit code 2."""
from __future__ import annotations

import json

import pytest

from classification.__main__ import main
from common.files import read_csv


def results_folder(tmp_path, search_method: str | None):
    """Stage 2's results as `compare_unfreezing` + `add_comparison_row` + both scans leave them (only the fields
    the choice reads)."""
    rows = [{"method": "MobileNetV2 k=0", "unfreeze": 0, "val_f1": 0.8},
            {"method": "MobileNetV2 k=1", "unfreeze": 1, "val_f1": 0.9}]
    comparison = {"rows": rows, "best_k": 1, "weights": "synthetic"}
    if search_method:
        comparison["search_method"] = search_method
    (tmp_path / "comparison.json").write_text(json.dumps(comparison))
    for folder, scores in (("scan", {"a.jpg": 0.9, "b.jpg": 0.2, "c.jpg": 0.5}),
                           ("embed_scan", {"a.jpg": -0.7, "b.jpg": -0.1, "c.jpg": -0.4})):
        (tmp_path / folder).mkdir()
        lines = ["rank,file,score"] + [f"{n},{f},{s}" for n, (f, s) in enumerate(scores.items(), 1)]
        (tmp_path / folder / "scores.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def run(argv, capsys) -> tuple[int, dict | None, str]:
    code = main(argv)
    captured = capsys.readouterr()
    last = captured.out.strip().splitlines()[-1] if captured.out.strip() else ""
    return code, (json.loads(last) if code == 0 else None), captured.err


def test_the_embedding_chosen_on_validation_gives_its_ranking_to_stage_3(tmp_path, capsys):
    folder = results_folder(tmp_path, "embedding dlib centroid")
    code, summary, _ = run(["choose-search", "--src", str(folder)], capsys)
    assert code == 0
    assert summary["method"] == "embedding dlib centroid" and summary["scores_from"] == "embed_scan"
    assert summary["ranked"] == 3
    ranked = read_csv(folder / "search" / "scores.csv")
    assert [(r["rank"], r["file"]) for r in ranked] == [("1", "b.jpg"), ("2", "c.jpg"), ("3", "a.jpg")]
    assert json.loads((folder / "search" / "method.json").read_text()) == {
        "method": "embedding dlib centroid", "scores_from": "embed_scan", "chosen_on": "validation F1"}


def test_without_an_embedding_row_the_mobilenet_run_picked_on_validation_is_used(tmp_path, capsys):
    folder = results_folder(tmp_path, None)
    code, summary, _ = run(["choose-search", "--src", str(folder), "--out", str(tmp_path / "elsewhere")], capsys)
    assert code == 0 and summary["method"] == "MobileNetV2 k=1" and summary["scores_from"] == "scan"
    assert [r["file"] for r in read_csv(tmp_path / "elsewhere" / "scores.csv")] == ["a.jpg", "c.jpg", "b.jpg"]
    assert not (folder / "search").exists()


@pytest.mark.parametrize("missing", ["comparison.json", "embed_scan/scores.csv"])
def test_a_missing_input_is_one_line_and_exit_2(tmp_path, capsys, missing):
    folder = results_folder(tmp_path, "embedding dlib centroid")
    (folder / missing).unlink()
    code, _, err = run(["choose-search", "--src", str(folder)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and missing in err
    assert not (folder / "search").exists()  # nothing half-written
