"""The web app without a browser: upload checks, the photo -> answer pipeline, model discovery, the command line,
and the served page over HTTP (visitors at once, crafted requests, memory, the temporary folder's sweep and removal).
Models are tiny and trained for the tests (tests/app_fixture.py)."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from app import core
from app_fixture import (call_api, file_data, jpeg_bytes, large_photo, no_face_photo, rss_mb, serve_in_subprocess,
                         synthetic_photo, upload)
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


def test_a_folder_or_a_vanished_file_is_a_message_without_its_path(tmp_path):
    for path in (tmp_path, tmp_path / "gone.jpg"):
        with pytest.raises(core.PhotoError, match="not a file") as refused:
            core.read_photo(path)
        assert str(tmp_path) not in str(refused.value)


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
    # what the page keeps to pick another face: each face's crop and its frame at the VAE's size
    assert [(c.size, f.size) for c, f in first.faces] == [((160, 160), (32, 32))] * 2
    second = core.answer_photo(tiny_app_models, None, face_index=1, faces=first.faces, with_morph=False)
    assert second.face_index == 1 and "showing face 2" in second.message
    assert "detect" not in second.timings and second.boxes is None  # the earlier detection was reused
    assert np.abs(np.asarray(first.crop, float) - np.asarray(second.crop, float)).mean() > 10
    assert core.face_choices(2) == ["face 1 (largest)", "face 2"]
    # an index past the end falls back to the last face instead of failing
    assert core.answer_photo(tiny_app_models, None, 9, faces=first.faces, with_morph=False).face_index == 1


def test_the_vae_sees_a_photo_framed_like_its_training_images():
    """Fresh aligned portraits shown in bigger photos: `vae_frame` from MTCNN's eyes must give back nearly each
    portrait's own training frame (its 148 px centre crop), much nearer than the stage-1 crop does."""
    from scraping.faces import CropConfig, build_detector, crop_face, detect_faces
    from world.portraits import random_identity, random_nuisance, render_portrait

    rng = np.random.default_rng(11)
    portraits = [render_portrait(random_identity(rng), random_nuisance(rng, aligned=True)) for _ in range(12)]
    photos = []
    for k, portrait in enumerate(portraits):  # each portrait at 1.5x, somewhere on a grey 600x500 photo
        photo = Image.new("RGB", (600, 500), (128, 128, 128))
        photo.paste(portrait.resize((267, 327), Image.BICUBIC), (40 + 25 * k, 60 + 8 * k))
        photos.append(photo)
    config = CropConfig(device="cpu", progress=False)
    found = detect_faces(photos, build_detector(config), config)
    errors = {"frame": [], "crop": []}
    for portrait, photo, faces in zip(portraits, photos, found):
        if not faces:
            continue
        face = max(faces, key=lambda f: f.prob)
        truth = np.asarray(portrait.crop((15, 35, 163, 183)).resize((64, 64), Image.BILINEAR), float)
        frame = np.asarray(core.vae_frame(photo, face, 64), float)
        crop = np.asarray(crop_face(photo, face, config).resize((64, 64), Image.BILINEAR), float)
        errors["frame"].append(np.abs(frame - truth).mean())
        errors["crop"].append(np.abs(crop - truth).mean())
    assert len(errors["frame"]) >= 10, "MTCNN missed the faces of too many portraits"
    assert np.median(errors["frame"]) < 0.6 * np.median(errors["crop"]), errors


def test_the_photo_with_its_boxes_comes_back_at_display_size(tiny_app_models):
    photo = synthetic_photo(0, size=(300, 300)).resize((3000, 2400), Image.BICUBIC)
    answer = core.answer_photo(tiny_app_models, photo, with_morph=False)
    assert answer.n_faces == 1 and answer.boxes.size == (core.BOXES_SIDE, core.BOXES_SIDE * 4 // 5)
    assert answer.crop.size == (160, 160)
    no_face = core.answer_photo(tiny_app_models, no_face_photo((2000, 1000)))
    assert no_face.boxes.size == (core.BOXES_SIDE, core.BOXES_SIDE // 2)


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
    assert paths.vae == tmp_path / "runs/demo/vae/base/checkpoint.pt"
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


# ---------------------------------------------------------------------------------------- the served page
# A real server on a free loopback port, driven over HTTP as the page drives it (tests/app_fixture.py). Its
# temporary folder is swept every second, files older than SWEEP_AGE seconds going.
SWEEP_AGE = 15


@pytest.fixture(scope="module")
def served(tiny_app_models):
    from app.screenshot import free_port
    from app.ui import start_server

    server = start_server(tiny_app_models, port=free_port(), cache_sweep=(1, SWEEP_AGE))
    server.root = Path(server.folder.name)
    server.gradio_folder = server.root / "gradio"
    yield server
    server.close()
    assert not server.root.exists(), "the server's temporary folder outlived it"


def files_under(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def messages(outputs) -> str:
    """The text a visitor reads in an answer: the message, verdict and timing lines (or an error's message)."""
    if isinstance(outputs, dict):
        return str(outputs.get("error") or "")
    return " ".join(o for o in outputs if isinstance(o, str))


def test_visitors_sending_the_same_photo_at_once_all_get_an_answer(served):
    from concurrent.futures import ThreadPoolExecutor

    photo = jpeg_bytes(synthetic_photo(0))

    def visit(_):
        stored = upload(served.url, photo)
        return call_api(served.url, "analyse_upload", [file_data(stored.json()[0])])

    with ThreadPoolExecutor(4) as visitors:
        answers = list(visitors.map(visit, range(4)))
    assert [event for event, _ in answers] == ["complete"] * 4, answers
    assert [outputs[0] for _, outputs in answers] == ["**1 face found.**"] * 4
    assert all(str(served.root) not in messages(outputs) for _, outputs in answers)


def test_a_crafted_path_is_refused_in_one_line_and_nothing_is_touched(served):
    stored = upload(served.url, jpeg_bytes(synthetic_photo(1))).json()[0]
    event, outputs = call_api(served.url, "analyse_upload", [file_data(stored)])
    assert event == "complete" and outputs[0] == "**1 face found.**"
    cached_crop = outputs[2]["path"]  # this visitor's face crop, cached by Gradio for the page to fetch
    before = files_under(served.gradio_folder)
    assert cached_crop in before and stored in before
    crafted = [str(Path(cached_crop).parent),  # a folder inside the upload folder
               cached_crop]  # another visitor's cached output: would be analysed (and deleted, once)
    for path in crafted:
        event, outputs = call_api(served.url, "analyse_upload", [file_data(path)])
        assert event == "complete" and outputs[0] == "**Cannot use this file: it was not uploaded to this page.**"
        assert outputs[2] is None and "\n" not in outputs[0]
    # outside the upload folder: Gradio refuses before the app sees it, and says nothing about the path
    for path in ("/etc/passwd", str(served.gradio_folder / ".." / ".." / "etc" / "passwd")):
        event, outputs = call_api(served.url, "analyse_upload", [file_data(path)])
        assert event == "error" and "passwd" not in messages(outputs) and str(served.root) not in messages(outputs)
    after = files_under(served.gradio_folder)  # (the sweep may have removed older tests' files meanwhile)
    assert all(after.get(p) == before[p] for p in (cached_crop, stored)), "a crafted call deleted a file"
    assert not set(after) - set(before), "a crafted call wrote a file"


@pytest.mark.slow
def test_an_upload_named_dotdot_is_refused_in_one_line_and_swept(served):
    body = b"\xff\xd8" + b"x" * 200_000
    refused = upload(served.url, body, filename="..")
    assert refused.status_code == 400 and refused.text.count("\n") == 0 and str(served.root) not in refused.text
    # Gradio leaves the refused body in its folder (its staging file); the sweep removes it with the rest
    assert any(n == len(body) for n in files_under(served.gradio_folder).values())
    stored = upload(served.url, jpeg_bytes(synthetic_photo(2))).json()[0]
    assert call_api(served.url, "analyse_upload", [file_data(stored)])[0] == "complete"
    assert Path(stored).exists() and len(files_under(served.gradio_folder)) >= 4  # upload, staging file, pictures
    deadline = time.monotonic() + SWEEP_AGE + 5 + 2 + 60  # files at SWEEP_AGE, their folders 5 s later; slack
    while any(served.gradio_folder.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(served.gradio_folder.iterdir()), sorted(served.gradio_folder.rglob("*"))
    assert not any(served.blocks.temp_file_sets), "Gradio still lists swept files"


def test_an_upload_from_another_web_page_is_refused_before_it_is_stored(served):
    body = b"\xff\xd8" + b"y" * 300_000
    for origin in ("http://evil.example", "null", "http://127.0.0.1:1"):
        refused = upload(served.url, body, headers={"Origin": origin})
        assert refused.status_code == 403 and refused.text == "cross-origin request refused"
        refused = requests.post(f"{served.url}gradio_api/call/analyse_upload", headers={"Origin": origin},
                                json={"data": [None]}, timeout=30)
        assert refused.status_code == 403
    assert not any(n == len(body) for n in files_under(served.gradio_folder).values())
    own_page = served.url.rstrip("/")  # the page itself sends its own origin
    assert upload(served.url, body, headers={"Origin": own_page}).status_code == 200


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's memory from Linux's /proc")
def test_memory_stays_flat_across_visitors_with_large_photos(tiny_app_paths, tmp_path):
    """Each visitor sends a different 3000 x 3000 photo (27 MB decoded) in a session of its own; the server's
    resident memory after 10 visitors stays within 4 decoded photos of what it was after the first 2."""
    from app.screenshot import free_port

    photos = [large_photo(seed) for seed in range(12)]
    with serve_in_subprocess(tiny_app_paths, free_port(), tmp_path) as server:
        rss = []
        for photo in photos:
            event, outputs = call_api(server.url, "analyse_upload", [file_data(upload(server.url, photo).json()[0])])
            assert event == "complete" and outputs[0] == "**1 face found.**"
            rss.append(rss_mb(server.pid))
        with Image.open(io.BytesIO(requests.get(outputs[1]["url"], timeout=30).content)) as boxes:
            assert boxes.size == (core.BOXES_SIDE, core.BOXES_SIDE)  # the picture sent back: display size
    growth = rss[-1] - rss[1]
    assert growth < 4 * 3000 * 3000 * 3 / 2**20, f"RSS {rss[1]:.0f} -> {rss[-1]:.0f} MB over 10 visitors: {rss}"


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_the_server_with_a_signal_removes_its_temporary_folder(tiny_app_paths, tmp_path, stop):
    from app.screenshot import free_port

    with serve_in_subprocess(tiny_app_paths, free_port(), tmp_path) as server:
        stored = upload(server.url, jpeg_bytes(synthetic_photo(3))).json()[0]
        assert call_api(server.url, "analyse_upload", [file_data(stored)])[0] == "complete"
        folders = list(tmp_path.glob("faces-app-*"))
        assert len(folders) == 1 and files_under(folders[0])
        server.send_signal(stop)
        assert server.wait(timeout=60) == 0
    assert not list(tmp_path.glob("faces-app-*")), "the temporary folder outlived the server"
