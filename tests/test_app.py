"""The web app's functions without a browser: upload checks, the photo -> answer pipeline, model discovery, the
attribute section, the command line. Models are tiny and trained for the tests (tests/app_fixture.py)."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app import core
from app_fixture import no_face_photo, save_attribute_model, synthetic_photo
from common.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ uploads
def test_a_file_above_the_size_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    path.write_bytes(b"\xff" * 5000)  # not even an image: the size check must come first

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a file above the size limit")

    monkeypatch.setattr(Image, "open", no_decoding)
    with pytest.raises(core.PhotoError, match="too big .* limit"):
        core.read_photo(path, max_bytes=4000)


@pytest.mark.parametrize("content,message", [
    (b"", "empty"),
    (b"this is not an image at all", "not a readable image"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "not a readable image"),  # a JPEG header and nothing behind it
])
def test_unreadable_files_give_a_clear_message(tmp_path, content, message):
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    with pytest.raises(core.PhotoError, match=message):
        core.read_photo(path)


def test_decompression_bombs_are_refused_from_the_header(tmp_path, monkeypatch):
    path = tmp_path / "wide.png"
    Image.new("RGB", (400, 300), "white").save(path)
    with pytest.raises(core.PhotoError, match="400 x 300 pixels"):
        core.read_photo(path, max_pixels=100_000)
    # Pillow's own bomb guard is turned into the same kind of message
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)
    with pytest.raises(core.PhotoError, match="too large"):
        core.read_photo(path)


def test_a_readable_photo_comes_back_upright_rgb(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (50, 40), 128).save(path)
    image = core.read_photo(path)
    assert image.mode == "RGB" and image.size == (50, 40)


# ----------------------------------------------------------------------------------------------- answers
def test_a_portrait_gets_crop_probability_distance_reconstruction_and_morph(tiny_app_models, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    answer = core.answer_photo(tiny_app_models, synthetic_photo(0), scratch_root=scratch)
    assert answer.n_faces == 1 and answer.message == "1 face found."
    assert answer.crop.size == (160, 160) and answer.boxes.size == (360, 300)
    assert 0.0 <= answer.probability <= 1.0 and answer.classifier_threshold == 0.5
    emb = answer.embedding
    assert np.isfinite(emb["distance"]) and emb["verdict"] in ("same person", "someone else")
    assert emb["threshold"] == pytest.approx(-tiny_app_models.scorer.threshold)
    assert emb["verdict"] == ("same person" if emb["distance"] < emb["threshold"] else "someone else")
    assert answer.reconstruction.size == (32, 32)
    with Image.open(io.BytesIO(answer.morph_gif)) as gif:
        # base and fine-tuned side by side (2 px apart), a closed walk photo -> target -> photo
        assert gif.format == "GIF" and gif.size == (2 * core.MORPH_SIZE + 2, core.MORPH_SIZE + 16)
        assert gif.n_frames == 2 * (core.MORPH_STEPS + 1)
    assert set(answer.timings) == {"detect", "crop", "classify", "embed", "reconstruct", "morph", "total"}
    assert not list(scratch.iterdir()), "a request left scratch files behind"
    text = core.verdict_text(tiny_app_models, answer)
    assert "Ava Marlowe" in text and "Verdict" in text and f"{emb['distance']:.3f}" in text


def test_no_face_is_an_answer_with_a_message_not_an_error(tiny_app_models):
    answer = core.answer_photo(tiny_app_models, no_face_photo())
    assert answer.n_faces == 0 and answer.crop is None and answer.morph_gif is None
    assert answer.message.startswith("No face found")
    assert core.verdict_text(tiny_app_models, answer) == ""


def test_several_faces_say_how_many_and_the_user_picks_one(tiny_app_models):
    photo = synthetic_photo(0, people=2)  # seed 0: MTCNN finds both faces
    first = core.answer_photo(tiny_app_models, photo, with_morph=False)
    assert first.n_faces == 2 and "2 faces found" in first.message and "largest" in first.message
    second = core.answer_photo(tiny_app_models, photo, face_index=1, faces=first.faces, with_morph=False)
    assert second.face_index == 1 and "showing face 2" in second.message
    assert "detect" not in second.timings  # the earlier detection was reused
    assert np.abs(np.asarray(first.crop, float) - np.asarray(second.crop, float)).mean() > 10
    assert core.face_choices(2) == ["face 1 (largest)", "face 2"]
    # an index past the end falls back to the last face instead of failing
    assert core.answer_photo(tiny_app_models, photo, 9, faces=first.faces, with_morph=False).face_index == 1


# ------------------------------------------------------------------------------------------ attributes
def test_attribute_sliders_move_the_face_and_zero_is_the_reconstruction(tiny_app_paths, tiny_app_models, tmp_path):
    names, directions = core.load_attribute_model(save_attribute_model(tmp_path / "attr.pt"), 16)
    assert names == ["Smiling", "Eyeglasses"] and directions.shape == (2, 16)
    models = core.Models(**{**tiny_app_models.__dict__, "attributes": names, "directions": directions})
    crop = core.answer_photo(models, synthetic_photo(0), with_morph=False).crop
    unchanged = np.asarray(core.edit_attributes(models, crop, [0.0, 0.0]), float)
    assert np.abs(unchanged - np.asarray(core.reconstruct(models, crop), float)).max() <= 1
    moved = np.asarray(core.edit_attributes(models, crop, [3.0, 0.0]), float)
    assert np.abs(moved - unchanged).mean() > 1
    with pytest.raises(InputError, match="no attribute model"):
        core.edit_attributes(tiny_app_models, crop, [1.0])


def test_an_attribute_model_of_another_latent_size_is_refused(tmp_path):
    with pytest.raises(InputError, match="8-d directions.*16 dimensions"):
        core.load_attribute_model(save_attribute_model(tmp_path / "attr.pt", latent_dim=8), 16)


def test_the_attribute_section_is_on_the_page_only_with_an_attribute_model(tiny_app_models, tmp_path):
    from app.ui import build_page

    def attribute_group_visible(models) -> bool:
        config = build_page(models, tmp_path).blocks.get_config_file()
        group = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "attributes")
        return bool(group["props"].get("visible"))

    assert not attribute_group_visible(tiny_app_models)
    with_attributes = core.Models(**{**tiny_app_models.__dict__, "attributes": ["Smiling"],
                                     "directions": torch.zeros(1, 16)})
    assert attribute_group_visible(with_attributes)


# --------------------------------------------------------------------------------------------- discovery
def fake_demo(root: Path) -> Path:
    summary = {"world": {"target_name": "Ava Marlowe", "target_identity": 7},
               "stages": {"classification": {"target": "ava_marlowe", "best_k": 2},
                          "vae": {"picked_identity": 7}}}
    (root / "results" / "demo").mkdir(parents=True)
    (root / "results" / "demo" / "demo_summary.json").write_text(json.dumps(summary))
    for person in ("ava_marlowe", "sam_castellane"):
        (root / "data" / "demo" / "raw" / person).mkdir(parents=True)
        for k in range(4):
            Image.new("RGB", (8, 8)).save(root / "data" / "demo" / "raw" / person / f"{k}.jpg")
    return root


def test_demo_paths_follow_the_summary(tmp_path):
    paths = core.demo_paths(fake_demo(tmp_path))
    assert paths.classifier == tmp_path / "runs/demo/classification/k2/best.pt"
    assert paths.scorer == tmp_path / "results/demo/classification/embedding/embedding_scorer.json"
    assert paths.vae == tmp_path / "runs/demo/vae/perceptual/checkpoint.pt"
    assert paths.target_faces == tmp_path / "data/demo/faces/ava_marlowe" and paths.target_name == "Ava Marlowe"
    assert paths.vae_finetuned is None  # runs/demo/vae/finetune_7 does not exist here
    assert [p.parent.name for p in paths.examples] == ["ava_marlowe"] * 3 + ["sam_castellane"]
    with pytest.raises(InputError, match="missing classifier .*k2/best.pt.*make demo"):
        paths.check()


def test_without_a_demo_the_command_line_says_to_run_it_in_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "app", "--port", "0"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-1500:]
    assert lines[0].startswith("error: ") and "make demo" in lines[0] and "demo_summary.json" in lines[0]
