"""The classifier sweep (issue 13): a 2-trial Optuna sweep runs, is interrupted, resumes from its SQLite file
without repeating finished trials, never loads a test photo, and the CLI retrains the best once for test."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from toy_faces import make_toy_faces
from classification import sweep as sweep_module
from classification.data import FacePhotos, read_split
from classification.sweep import SweepConfig, open_study, run_sweep

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return make_toy_faces(tmp_path_factory.mktemp("faces"), n_target=12, n_per_other=6, n_others=2, size=32)


def tiny_sweep(faces, out, **changes) -> SweepConfig:
    base = dict(faces_root=str(faces), out_dir=str(out), trials=2, epochs=2, patience=2, weights="none",
                image_size_choices=(32,), unfreeze_choices=(0, 1), batch_size=8, max_steps=4, retrain=False,
                pruner_startup_trials=1, val_fraction=0.2, test_fraction=0.2)
    return SweepConfig(**{**base, **changes})


def snapshot(study) -> list[tuple]:
    return [(t.number, t.state.name, t.value, tuple(sorted(t.params.items())), t.datetime_complete)
            for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]


@pytest.mark.timeout(180)
def test_sweep_is_interrupted_and_resumes_without_repeating_trials_and_never_reads_test_photos(faces, tmp_path,
                                                                                             monkeypatch):
    opened: list[Path] = []
    original_getitem = FacePhotos.__getitem__

    def recording_getitem(self, index):
        opened.append((self.root / self.rows[index]["file"]).resolve())
        return original_getitem(self, index)

    monkeypatch.setattr(FacePhotos, "__getitem__", recording_getitem)
    config = tiny_sweep(faces, tmp_path / "sweep")
    first = run_sweep(config, progress=False)
    assert first["trials_finished"] == 2 and first["trials_run_now"] == 2
    assert (tmp_path / "sweep" / "study.sqlite").is_file()
    before = snapshot(open_study(config))
    assert len(before) == 2 and before[0][3] == tuple(sorted(sweep_module.default_parameters(config).items()))

    # interrupt the third trial (Ctrl-C in its first epoch)
    real_trial = sweep_module.run_trial
    calls = []

    def interrupted(trial, *args):
        calls.append(trial.number)
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_module, "run_trial", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(tiny_sweep(faces, tmp_path / "sweep", trials=3), progress=False)
    assert calls == [2]

    def counting(trial, *args):
        calls.append(trial.number)
        return real_trial(trial, *args)

    monkeypatch.setattr(sweep_module, "run_trial", counting)
    resumed = run_sweep(tiny_sweep(faces, tmp_path / "sweep", trials=3), progress=False)
    assert calls == [2, 3]  # one new trial; the two finished ones were not run again
    assert resumed["trials_finished"] == 3 and resumed["trials_run_now"] == 1
    after = snapshot(open_study(config))
    assert after[:2] == before  # same numbers, params, values and completion times
    states = [t.state.name for t in open_study(config).trials]
    assert states.count("FAIL") == 1
    assert Path(resumed["figure"]).is_file() and Path(resumed["trials_table"]).is_file()

    # the data loaders opened training and validation photos only
    split = read_split(tmp_path / "sweep" / "split.csv")
    by_split = {name: {(Path(faces) / r["file"]).resolve() for r in split if r["split"] == name}
                for name in ("train", "val", "test")}
    assert by_split["test"] and not set(opened) & by_split["test"]
    assert by_split["val"] <= set(opened) and set(opened) <= by_split["train"] | by_split["val"]


@pytest.mark.timeout(180)
def test_sweep_command_retrains_the_best_once_and_reports_per_class_on_test(faces, tmp_path):
    out = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "-m", "classification", "sweep", "--src", str(faces), "--out", str(out), "--trials", "1",
         "--weights", "none", "--set", "epochs=1", "--set", "max_steps=2", "--set", "image_size_choices=[32]",
         "--set", "unfreeze_choices=[0]", "--set", "batch_size=8", "--set", "val_fraction=0.2",
         "--set", "test_fraction=0.2"],
        cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["command"] == "sweep" and summary["trials_finished"] == 1
    report = json.loads((out / "test_report.json").read_text())
    for name in ("others", "target", "macro avg"):
        assert set(report["per_class"][name]) >= {"precision", "recall", "f1-score", "support"}
    assert report["per_class"]["target"]["support"] + report["per_class"]["others"]["support"] == sum(
        report["confusion"].values())
    assert (out / "best" / "confusion.png").is_file() and (out / "trials.png").is_file()
    assert "| target |" in (out / "test_report.md").read_text()
