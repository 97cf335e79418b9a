"""The synthetic pretraining (issue 13): its people are nobody of the demo world, and a tiny run (seconds) writes a
checkpoint that `build_classifier(weights="synthetic")` loads, with frozen blocks really frozen."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from classification.model import build_classifier, unfreeze_last_blocks
from classification.pretrain import (PretrainConfig, face_set_fingerprint, pretrain_backbone, pretrain_fingerprint,
                                     pretrained_dir)
from common.errors import InputError
from world.generate import WorldConfig, world_identities
from world.portraits import identity_distance
from world.pretraining_faces import identities_unlike_world, pretraining_identities


def factor_vector(identity) -> tuple:
    """Every identity factor flattened into one tuple (colours as their channels)."""
    flat = []
    for value in dataclasses.asdict(identity).values():
        flat.extend(value if isinstance(value, (list, tuple)) else [value])
    return tuple(flat)


@pytest.mark.parametrize("seed", [0, 3])
def test_pretraining_set_shares_no_identity_with_the_demo_world_of_the_same_seed(seed):
    world = WorldConfig(seed=seed)
    people = world_identities(world)  # web people (the target first) and every haystack stranger
    assert len(people) == 1 + len(world.other_names) + world.haystack_identities
    pretraining = identities_unlike_world(60, seed)
    assert len({factor_vector(p) for p in pretraining}) == 60
    assert not {factor_vector(p) for p in pretraining} & {factor_vector(p) for p in people}
    assert min(identity_distance(p, q) for p in pretraining for q in people) >= 1.0
    # no near-copy of the target either (the rule that keeps haystack strangers away from it)
    assert min(identity_distance(p, people[0]) for p in pretraining) >= world.min_target_distance


def test_pretraining_identities_come_from_their_own_stream_and_are_deterministic():
    first = pretraining_identities(5, seed=0)
    assert first == pretraining_identities(5, seed=0)
    assert first != pretraining_identities(5, seed=1)
    world_people = world_identities(WorldConfig(seed=0))
    assert not set(map(factor_vector, first)) & set(map(factor_vector, world_people))


def tiny_config(tmp_path, **changes) -> PretrainConfig:
    base = dict(identities=20, photos_per_identity=4, heldout_photos=1, image_size=32, epochs=1, batch_size=32,
                cache_root=str(tmp_path / "pretrained"), render_workers=1, progress=False)
    return PretrainConfig(**{**base, **changes})


@pytest.mark.timeout(120)
def test_tiny_pretraining_writes_a_checkpoint_the_classifier_loads_with_frozen_blocks_frozen(tmp_path):
    config = tiny_config(tmp_path)
    summary = pretrain_backbone(config)
    out = pretrained_dir(config)
    assert summary["reused"] is False and summary["checkpoint"] == str(out / "checkpoint.pt")
    assert summary["train_photos"] == 60 and summary["heldout_photos"] == 20 and summary["steps"] == 2
    assert 0.0 <= summary["heldout_accuracy"] <= 1.0
    for name in ("checkpoint.pt", "config.json", "model_card.json", "model_card.md", "faces_sheet.png"):
        assert (out / name).is_file(), name
    card = json.loads((out / "model_card.json").read_text())
    assert card["config"]["identities"] == 20 and card["summary"]["heldout_accuracy"] == summary["heldout_accuracy"]
    assert "Held-out photos" in (out / "model_card.md").read_text()

    saved = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    model = build_classifier("synthetic", synthetic_checkpoint=out / "checkpoint.pt")
    for key, value in model.state_dict().items():
        if key.startswith("features."):
            assert torch.equal(value, saved["model"][key]), key
    assert model.classifier[1].out_features == 1  # the identity head is dropped

    unfreeze_last_blocks(model, 2)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("features.0.", "features.16."))}
    trainable_before = model.features[18][0].weight.detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    frozen_norms = [m for m in model.features[:17].modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert frozen_norms and not any(m.training for m in frozen_norms)  # frozen BatchNorm stays in eval mode
    loss = model(torch.randn(4, 3, 32, 32)).pow(2).mean()
    loss.backward()
    optimizer.step()
    for key, value in model.state_dict().items():
        if key in frozen:  # weights and BatchNorm running statistics alike
            assert torch.equal(value, frozen[key]), f"frozen {key} changed"
    assert not torch.equal(model.features[18][0].weight, trainable_before)
    assert all(not p.requires_grad for p in model.features[:17].parameters())

    again = pretrain_backbone(config)  # the cache: a second run reuses it
    assert again["reused"] is True and again["heldout_accuracy"] == summary["heldout_accuracy"]

    # deterministic from the seed: a fresh run elsewhere gives the same weights
    elsewhere = pretrain_backbone(tiny_config(tmp_path / "elsewhere"))
    assert elsewhere["reused"] is False and elsewhere["fingerprint"] == summary["fingerprint"]
    repeat = torch.load(elsewhere["checkpoint"], map_location="cpu", weights_only=False)["model"]
    assert all(torch.equal(repeat[k], v) for k, v in saved["model"].items())


def test_fingerprints_follow_the_config():
    config = PretrainConfig()
    assert pretrain_fingerprint(config) == pretrain_fingerprint(PretrainConfig(progress=False, render_workers=1))
    longer = dataclasses.replace(config, epochs=config.epochs + 1)
    assert pretrain_fingerprint(longer) != pretrain_fingerprint(config)
    assert face_set_fingerprint(longer) == face_set_fingerprint(config)  # training changes do not re-render
    assert face_set_fingerprint(dataclasses.replace(config, identities=10)) != face_set_fingerprint(config)


def test_missing_synthetic_weights_say_how_to_make_them(tmp_path):
    with pytest.raises(InputError) as error:
        build_classifier("synthetic", synthetic_checkpoint=tmp_path / "missing.pt")
    message = str(error.value)
    assert "python -m classification pretrain" in message and "\n" not in message


def test_rendered_faces_do_not_depend_on_the_number_of_workers():
    from world.pretraining_faces import render_face_set

    people = pretraining_identities(3, seed=0)
    one = render_face_set(people, 2, size=24, seed=0, workers=1, progress=False)
    two = render_face_set(people, 2, size=24, seed=0, workers=2, progress=False)
    assert one.shape == (3, 2, 24, 24, 3) and one.dtype == np.uint8
    assert np.array_equal(one, two)


def test_training_with_missing_synthetic_weights_is_one_line_and_exit_2(tmp_path, capsys):
    from toy_faces import make_toy_faces
    from classification.__main__ import main

    faces = make_toy_faces(tmp_path / "faces", n_target=4, n_per_other=4, n_others=1, size=32)
    code = main(["train", "--src", str(faces), "--out", str(tmp_path / "run"), "--weights", "synthetic",
                 "--set", f"synthetic_checkpoint={tmp_path / 'missing.pt'}"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.count("\n") == 0 and "python -m classification pretrain" in error
