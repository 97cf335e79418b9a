"""A finished result is reused only when the code that made it is unchanged; seeded runs repeat exactly.

Each stage stores `code_version` (a hash of its packages' sources) with a finished run; a test here changes that
version (as an edited source file would) and checks the run is redone and says so.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from celeba_fixture import write_celeba_fixture
from common.config import code_version
from toy_faces import make_toy_faces

ROOT = Path(__file__).resolve().parents[1]


def test_code_version_follows_the_source_bytes(tmp_path, monkeypatch):
    import common.config as config_module

    fake_root = tmp_path / "repo"
    (fake_root / "common").mkdir(parents=True)
    (fake_root / "pkg").mkdir()
    (fake_root / "pkg" / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(config_module, "__file__", str(fake_root / "common" / "config.py"))
    before = code_version("pkg")
    assert code_version("pkg") == before  # stable
    (fake_root / "pkg" / "a.py").write_text("x = 2\n")
    assert code_version("pkg") != before  # one changed byte changes it


def test_a_classifier_run_made_by_other_code_is_redone(tmp_path, monkeypatch):
    import classification.train as train

    faces = make_toy_faces(tmp_path / "faces", n_target=12, n_per_other=6, n_others=2, size=32)
    config = train.TrainConfig(faces_root=str(faces), target="ava_marlowe", out_dir=str(tmp_path / "run"),
                               unfreeze=1, image_size=32, epochs=1, max_steps=1, batch_size=8)
    first = train.train_classifier(config)
    assert first["reused"] is False and first["redone_because"] is None
    again = train.train_classifier(config)
    assert again["reused"] is True and again["threshold"] == pytest.approx(first["threshold"])
    monkeypatch.setattr(train, "classifier_code_version", lambda: "edited-source")
    redone = train.train_classifier(config)
    assert redone["reused"] is False and redone["redone_because"] == "code changed"
    stored = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert stored["code_version"] == "edited-source"


def test_a_vae_run_made_by_other_code_starts_again(tmp_path, monkeypatch):
    import vae.train as vae_train

    root = write_celeba_fixture(tmp_path / "celeba", n_identities=3, per_identity=4)["root"]
    config = vae_train.TrainConfig(data_root=str(root), out_dir=str(tmp_path / "vae"), image_size=32,
                                   latent_dim=8, base_channels=8, batch_size=4, device="cpu", max_steps=2,
                                   eval_every=2, monitor_every=2, num_eval=4, gamma=0.0, resume=True)
    first = vae_train.train_vae(config)
    assert first["steps_this_run"] == 2 and first["redone_because"] is None
    again = vae_train.train_vae(config)
    assert again["reused"] and again["steps_this_run"] == 0
    monkeypatch.setattr(vae_train, "vae_code_version", lambda: "edited-source")
    redone = vae_train.train_vae(config)
    assert redone["steps_this_run"] == 2 and redone["redone_because"] == "code changed"
    assert redone["history"][-1]["loss"] == pytest.approx(first["history"][-1]["loss"])  # same seed, same run


def test_a_world_made_by_other_code_is_generated_again(tmp_path, monkeypatch):
    import world.generate as generate

    config = generate.WorldConfig(seed=2, target_photos=2, other_photos=1, other_names=("Robin Test",),
                                  group_photos=0, haystack_identities=3, haystack_photos_per_identity=2,
                                  target_count=2, workers=1)
    first = generate.generate_world(config, tmp_path / "w", progress=False)
    assert first["reused"] is False
    assert generate.generate_world(config, tmp_path / "w", progress=False)["reused"] is True
    monkeypatch.setattr(generate, "code_version", lambda *packages: "edited-source")
    assert generate.generate_world(config, tmp_path / "w", progress=False)["reused"] is False
    assert json.loads((tmp_path / "w" / "world.json").read_text())["code_version"] == "edited-source"


def test_seeded_classifier_training_repeats_exactly(tmp_path):
    import classification.train as train

    faces = make_toy_faces(tmp_path / "faces", n_target=12, n_per_other=6, n_others=2, size=32)
    runs = []
    for name in ("a", "b"):
        config = train.TrainConfig(faces_root=str(faces), target="ava_marlowe", out_dir=str(tmp_path / name),
                                   unfreeze=2, image_size=32, epochs=2, batch_size=8, seed=3)
        runs.append(train.train_classifier(config))
        torch.manual_seed(999)  # disturbing the global RNG between runs must not matter
    keys = ("threshold", "test_roc_auc", "test_f1", "val_f1", "steps")
    assert {k: runs[0][k] for k in keys} == {k: runs[1][k] for k in keys}
    predictions = [(tmp_path / name / "test_predictions.csv").read_text() for name in ("a", "b")]
    assert predictions[0] == predictions[1]
