"""Tests of the synthetic celebrity world: portraits, the local web, the CelebA-format haystack, the server, the CLI.

A tiny world is generated once per module (a few seconds); the MTCNN and separability checks render their own
photos.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import socket
import sys
import urllib.error
import urllib.request
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from bs4 import BeautifulSoup
from PIL import Image

from world.portraits import (
    ALIGNED_SIZE,
    CELEBA_ATTRIBUTES,
    HAIR_COLOURS,
    celeba_attributes,
    identity_distance,
    random_identity,
    random_nuisance,
    render_portrait,
)
from world.generate import (
    WorldConfig,
    generate_world,
    make_celeba_haystack,
    single_person_photo,
    target_identity,
    web_people,
    world_figure,
)
from world.webserver import ServedFolder, serve_folder

TINY = WorldConfig(
    seed=7, other_names=("Robin Test", "Sam Example"), target_photos=6, other_photos=3, group_photos=3,
    no_face_photos=1, duplicates=1, near_duplicates=1, per_page=5, photo_width=(240, 320),
    haystack_identities=12, haystack_photos_per_identity=3, target_count=6, workers=1,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    return out, generate_world(TINY, out, progress=False)


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ portraits


def test_render_portrait_is_deterministic_and_sized():
    rng = np.random.default_rng(0)
    identity, nuisance = random_identity(rng), random_nuisance(rng, aligned=True)
    first = render_portrait(identity, nuisance)
    assert first.size == ALIGNED_SIZE and first.mode == "RGB"
    assert np.array_equal(np.asarray(first), np.asarray(render_portrait(identity, nuisance)))
    other = render_portrait(identity, dataclasses.replace(nuisance, smile=1.0 - nuisance.smile))
    assert not np.array_equal(np.asarray(first), np.asarray(other))
    assert render_portrait(identity, nuisance, (320, 240)).size == (320, 240)


def test_identities_are_diverse():
    rng = np.random.default_rng(1)
    people = [random_identity(rng) for _ in range(300)]
    assert {p.hair_colour for p in people} == set(HAIR_COLOURS)
    assert {p.glasses for p in people} == {"none", "round", "rect"}
    assert {p.beard for p in people} == {"none", "stubble", "mustache", "goatee", "full"}
    assert {p.hair_length for p in people} == {"buzz", "short", "medium", "long"}
    assert 0.35 < np.mean([p.male for p in people]) < 0.65
    assert any(p.bald for p in people) and any(p.bangs for p in people) and any(p.receding for p in people)
    brightness = [sum(p.skin) for p in people]
    assert max(brightness) - min(brightness) > 300  # pale to dark skin
    assert len({p for p in people}) == len(people)  # no two people share every parameter


def _clean(**fixed):
    """Photo conditions without lighting, noise, blur or rotation, so pixels show the identity's colours."""
    base = dict(face_x=0.5, face_y=111 / 218, rotation=0.0, yaw=0.0, gaze=0.0, smile=0.0, mouth_open=0.0,
                light_strength=0.0, brightness=1.0, warmth=0.0, clutter=0, blur=0.0, noise=0.0,
                background_rgb=(128, 128, 128), seed=3)
    base.update(fixed)
    return random_nuisance(np.random.default_rng(0), aligned=True, **base)


def _base_identity():
    identity = random_identity(np.random.default_rng(5))
    return dataclasses.replace(identity, bald=False, receding=False, bangs=False, glasses="none", beard="none",
                               sideburns=False, hair_length="short", hair_texture="straight", hair_volume=0.2,
                               hair_colour="brown", hair_rgb=HAIR_COLOURS["brown"], skin=(225, 190, 165),
                               lipstick=False, blush=0.0, earrings=False)


def _patch(image, x, y, r=3):
    return np.asarray(image, np.float32)[int(y) - r:int(y) + r, int(x) - r:int(x) + r].reshape(-1, 3).mean(0)


def test_attributes_are_drawn_where_they_belong():
    base, nuisance = _base_identity(), _clean()
    unit = nuisance.face_scale * ALIGNED_SIZE[0] / (2 * base.eye_spacing)  # pixels per face unit
    eye_x, eye_y = 89, 111
    plain = np.asarray(render_portrait(base, nuisance), np.float32)
    rows = np.arange(ALIGNED_SIZE[1])[:, None]

    def changed_rows(image):
        diff = np.abs(np.asarray(image, np.float32) - plain).sum(2)
        return diff, rows[:, 0][diff.max(1) > 30]

    # Eyeglasses: the change sits in a band around the eyes.
    glasses = dataclasses.replace(base, glasses="rect")
    diff, changed = changed_rows(render_portrait(glasses, nuisance))
    assert changed.size and eye_y - 0.4 * unit < changed.min() and changed.max() < eye_y + 0.4 * unit
    assert celeba_attributes(glasses, nuisance)["Eyeglasses"] == 1 == -celeba_attributes(base, nuisance)["Eyeglasses"]

    # Smiling and an open mouth: the change sits around the mouth (and the squinting eyes), never in the hair.
    smiling = _clean(smile=1.0, mouth_open=0.8)
    diff, changed = changed_rows(render_portrait(base, smiling))
    assert diff[: int(eye_y - 0.6 * unit)].max() == 0
    assert diff[int(eye_y + (base.mouth_y - 0.3) * unit): int(eye_y + (base.mouth_y + 0.4) * unit)].max() > 100
    attrs = celeba_attributes(base, smiling)
    assert attrs["Smiling"] == 1 and attrs["Mouth_Slightly_Open"] == 1
    assert celeba_attributes(base, nuisance)["Smiling"] == -1

    # Hair colour: the top of the head shows the identity's hair colour; bald shows skin there.
    top = (eye_x, eye_y - 1.6 * unit)
    for colour in ("black", "blond", "gray", "red"):
        person = dataclasses.replace(base, hair_colour=colour, hair_rgb=HAIR_COLOURS[colour])
        patch = _patch(render_portrait(person, nuisance), *top)
        assert np.abs(patch - HAIR_COLOURS[colour]).max() < 45, (colour, patch)
        attrs = celeba_attributes(person, nuisance)
        expected = {"black": "Black_Hair", "blond": "Blond_Hair", "gray": "Gray_Hair"}.get(colour)
        assert [a for a in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair") if attrs[a] == 1] == (
            [expected] if expected else [])
    bald = dataclasses.replace(base, bald=True)
    assert np.abs(_patch(render_portrait(bald, nuisance), *top) - base.skin).max() < 60
    assert celeba_attributes(bald, nuisance)["Bald"] == 1 and celeba_attributes(bald, nuisance)["Brown_Hair"] == -1

    # Bangs cover the forehead; a full beard covers the chin.
    forehead = (eye_x, eye_y - 0.75 * unit)
    assert np.abs(_patch(plain, *forehead) - base.skin).max() < 60
    bangs = dataclasses.replace(base, bangs=True)
    assert np.abs(_patch(render_portrait(bangs, nuisance), *forehead) - base.hair_rgb).max() < 45
    assert celeba_attributes(bangs, nuisance)["Bangs"] == 1
    chin = (eye_x, eye_y + (base.face_length - 0.15) * unit)
    bearded = dataclasses.replace(base, beard="full", male=True)
    assert np.abs(_patch(render_portrait(bearded, nuisance), *chin) - np.array(base.hair_rgb) * 0.85).max() < 45
    assert celeba_attributes(bearded, nuisance)["No_Beard"] == -1
    assert celeba_attributes(base, nuisance)["No_Beard"] == 1


def test_mtcnn_finds_faces_in_single_person_photos():
    import torch

    from scraping.faces import CropConfig, build_detector, detect_faces

    config = CropConfig(device="cpu")
    rng = np.random.default_rng(2024)
    photos = [single_person_photo(random_identity(rng), rng, (240, 260)) for _ in range(30)]
    with torch.inference_mode():
        found = detect_faces([image for image, _ in photos], build_detector(config), config)

    def overlap(a, b):
        ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
        return ix * iy / union

    # A hit is a confident detection (the probability the crop stage keeps) on the person's true face.
    hits = sum(any(f.prob >= config.min_prob and overlap(f.box, boxes[0]) > 0.3 for f in faces)
               for faces, (_, boxes) in zip(found, photos))
    assert hits / len(photos) >= 0.9, f"MTCNN found {hits} of {len(photos)} faces"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_one_identity_is_separable_from_strangers():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from synthetic_separability import identity_separability

    for photos in ("aligned", "wild"):
        result = identity_separability(seed=1, train_target=30, train_strangers=45, test_target=20,
                                       test_strangers=60, seconds=15.0, max_epochs=40, photos=photos)
        assert result["auc"] >= 0.95, result


# ------------------------------------------------------------------------------------------------ the world


def test_same_seed_gives_identical_files(world, tmp_path):
    out, _ = world
    again = tmp_path / "again"
    generate_world(dataclasses.replace(TINY, workers=2), again, progress=False)  # worker count must not matter
    for sub in ("web", "celeba"):
        assert _tree_digest(out / sub) == _tree_digest(again / sub)
    assert (out / "web_truth.json").read_bytes() == (again / "web_truth.json").read_bytes()
    other = tmp_path / "other_seed"
    generate_world(dataclasses.replace(TINY, seed=8), other, progress=False)
    assert _tree_digest(out / "celeba") != _tree_digest(other / "celeba")


def test_resume_and_overwrite(world):
    out, summary = world
    stamp = (out / "celeba" / "img_align_celeba" / "000001.jpg").stat().st_mtime_ns
    again = generate_world(TINY, out, progress=False)
    assert again["reused"] is True and summary["reused"] is False
    same = lambda s: {k: v for k, v in s.items() if k not in ("reused", "seconds")}  # noqa: E731
    assert same(again) == same(summary)
    assert (out / "celeba" / "img_align_celeba" / "000001.jpg").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError):
        generate_world(dataclasses.replace(TINY, target_count=5), out, progress=False)


def test_overwrite_replaces_a_different_world(tmp_path):
    small = dataclasses.replace(TINY, other_names=("Robin Test",), target_photos=2, other_photos=1,
                                group_photos=1, haystack_identities=3, haystack_photos_per_identity=2,
                                target_count=2)
    generate_world(small, tmp_path, progress=False)
    changed = dataclasses.replace(small, haystack_identities=4)
    summary = generate_world(changed, tmp_path, overwrite=True, progress=False)
    assert summary["haystack_images"] == 4 * 2 + 2
    assert len(list((tmp_path / "celeba" / "img_align_celeba").iterdir())) == 4 * 2 + 2


def test_summary_keys(world):
    out, summary = world
    assert summary["target_name"] == "Ava Marlowe" and summary["target_slug"] == "ava_marlowe"
    assert [p["name"] for p in summary["people"]] == ["Ava Marlowe", "Robin Test", "Sam Example"]
    for person in summary["people"]:
        assert (Path(summary["web_root"]) / person["gallery"]).is_file() and person["photos"] > 0
    assert summary["haystack_images"] == 12 * 3 + 6 and summary["haystack_identities"] == 13
    assert summary["target_count"] == 6 and summary["web_photos"] > 0
    stored = json.loads((out / "world.json").read_text())["summary"]
    assert stored["web_root"] == "web" and stored["truth"] == "web_truth.json"  # relative: no machine paths
    assert {k: v for k, v in stored.items() if k not in ("web_root", "celeba_root", "truth")} == {
        k: v for k, v in summary.items() if k not in ("web_root", "celeba_root", "truth", "seconds", "reused")}


def _parse_celeba(root: Path):
    identity = dict(line.split() for line in (root / "identity_CelebA.txt").read_text().splitlines())
    partition = dict(line.split() for line in (root / "list_eval_partition.txt").read_text().splitlines())
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    count, names = int(lines[0]), lines[1].split()
    attrs = {}
    for line in lines[2:]:
        parts = line.split()
        attrs[parts[0]] = [int(v) for v in parts[1:]]
    return identity, partition, count, names, attrs


def test_celeba_haystack_parses(world):
    out, summary = world
    root = out / "celeba"
    identity, partition, count, names, attrs = _parse_celeba(root)
    files = sorted(p.name for p in (root / "img_align_celeba").iterdir())
    assert files == [f"{k:06d}.jpg" for k in range(1, len(files) + 1)]
    assert count == len(files) == len(identity) == len(partition) == len(attrs) == summary["haystack_images"]
    assert names == list(CELEBA_ATTRIBUTES) and len(names) == 40
    assert all(len(row) == 40 and set(row) <= {-1, 1} for row in attrs.values())
    assert {int(v) for v in identity.values()} >= {summary["target_identity"]}
    assert all(int(v) >= 1 for v in identity.values())
    target_files = [name for name, ident in identity.items() if int(ident) == summary["target_identity"]]
    assert len(target_files) == summary["target_count"]
    assert {partition[name] for name in target_files} == {"0"}
    positions = sorted(files.index(name) for name in target_files)
    assert positions[-1] - positions[0] > len(target_files)  # scattered, not one block
    for ident in set(identity.values()):  # identity-disjoint partitions, as in CelebA
        assert len({partition[n] for n, i in identity.items() if i == ident}) == 1
    assert {v for v in partition.values()} <= {"0", "1", "2"}
    with Image.open(root / "img_align_celeba" / files[0]) as image:
        assert image.size == (178, 218) and image.format == "JPEG"
    # Attributes agree with the identity parameters saved alongside.
    params = json.loads((root / "synthetic_identities.json").read_text())
    target = params[str(summary["target_identity"])]
    male_column = names.index("Male")
    assert {attrs[name][male_column] for name in target_files} == {1 if target["male"] else -1}


def test_celeba_haystack_reads_with_the_repo_loader(world):
    from vae import celeba

    out, summary = world
    root = out / "celeba"
    assert celeba.is_celeba_root(root)
    assert len(celeba.read_identities(root)) == summary["haystack_images"]
    names, rows = celeba.read_attributes(root)
    assert names == list(CELEBA_ATTRIBUTES) and len(rows) == summary["haystack_images"]
    assert set(celeba.read_partitions(root).values()) <= {0, 1, 2}
    dataset = celeba.CelebA(root, split="all", image_size=32, identities=[summary["target_identity"]])
    assert len(dataset) == summary["target_count"]


def test_make_celeba_haystack_without_a_planted_person(tmp_path):
    summary = make_celeba_haystack(tmp_path, n_identities=3, photos_per_identity=2, seed=1, planted=None,
                                   progress=False)
    assert summary["images"] == 6 and summary["target_identity"] is None and summary["target_count"] == 0


def test_web_contains_every_kind_of_mess(world):
    out, summary = world
    web = Path(summary["web_root"])
    truth = json.loads((out / "web_truth.json").read_text())
    kinds = {p["kind"] for p in truth["photos"]}
    assert kinds == {"single", "group", "no_face", "duplicate", "near_duplicate"}
    assert (web / "robots.txt").read_text().startswith("User-agent: *")
    index = BeautifulSoup((web / "index.html").read_text(), "html.parser")
    assert {a["href"] for a in index.find_all("a")} >= {p["gallery"] for p in summary["people"]}

    target = summary["people"][0]
    pages = truth["pages"][target["slug"]]
    assert len(pages) >= 2
    html_all, links, srcs = "", [], []
    for page in pages:
        text = (web / page).read_text()
        html_all += text
        soup = BeautifulSoup(text, "html.parser")
        links += [(web / page).parent / a["href"] for a in soup.select("ul.gallery a")]
        srcs += [img.get("srcset", "") + img.get("data-src", "") for img in soup.find_all("img")]
        assert page == pages[-1] or soup.find("a", rel="next") is not None  # pagination
    assert "srcset=" in html_all and "data-src=" in html_all and 'loading="lazy"' in html_all
    assert "http://" not in html_all and "https://" not in html_all  # relative URLs only
    targets = {p.resolve().relative_to(web.resolve()).as_posix() for p in links}
    by_path = {p["path"]: p for p in truth["photos"]}
    linked_kinds = {by_path[t]["kind"] for t in targets if t in by_path}
    assert linked_kinds == kinds
    group = [by_path[t] for t in targets if t in by_path and by_path[t]["kind"] == "group"]
    assert group and all(len(p["people"]) >= 2 for p in group)
    assert any(q["name"] == "Ava Marlowe" for p in group for q in p["people"])
    broken = [t for t in targets if not (web / t).exists()]
    assert broken and all(t in truth["broken_links"] for t in broken)
    assert any(t.endswith(".txt") for t in targets)  # a non-image link
    for record in truth["photos"]:
        if record["kind"] == "duplicate":
            assert (web / record["path"]).read_bytes() == (web / record["duplicate_of"]).read_bytes()
        if record["kind"] == "near_duplicate":
            with Image.open(web / record["path"]) as small, Image.open(web / record["duplicate_of"]) as big:
                assert small.width < big.width
        if record["kind"] == "single":
            with Image.open(web / record["path"]) as image:  # the face is a part of a larger scene
                x0, y0, x1, y1 = record["people"][0]["box"]
                assert (x1 - x0) * (y1 - y0) < 0.3 * image.width * image.height


def test_server_serves_the_web_and_stops(world):
    _, summary = world
    web = Path(summary["web_root"])
    gallery = summary["people"][0]["gallery"]
    with serve_folder(web) as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        with urllib.request.urlopen(url + gallery, timeout=10) as response:
            assert response.status == 200 and "Ava Marlowe" in response.read().decode()
        photo = json.loads((web.parent / "web_truth.json").read_text())["photos"][0]["path"]
        with urllib.request.urlopen(url + photo, timeout=10) as response:
            assert response.headers["Content-Type"] == "image/jpeg"
            assert response.read() == (web / photo).read_bytes()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(url + "people/ava_marlowe/photos/ava_marlowe_lost.jpg", timeout=10)
        assert missing.value.code == 404
        port = int(url.rstrip("/").rsplit(":", 1)[1])
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)
    with socket.socket() as probe:  # nothing listens on the port any more (TIME_WAIT is fine)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def test_busy_port_falls_back_to_a_free_one(world):
    _, summary = world
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            served = ServedFolder(summary["web_root"], port=port)
        try:
            assert served.port != port and any("busy" in str(w.message) for w in caught)
            with urllib.request.urlopen(served.url + "robots.txt", timeout=10) as response:
                assert response.status == 200
        finally:
            served.stop()
            served.stop()  # stopping twice is harmless


def test_cli_world_prints_summary(tmp_path):
    from world.__main__ import main

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        main(["generate", "--out", str(tmp_path / "w"), "--seed", "3", "--quiet",
              "--set", "haystack_identities=4", "--set", "haystack_photos_per_identity=2",
              "--set", "target_count=3", "--set", "target_photos=2", "--set", "other_photos=1",
              "--set", "group_photos=1", "--set", 'other_names=["Robin Test"]', "--set", "workers=1",
              "--figure", str(tmp_path / "fig.png")])
    summary = json.loads(buffer.getvalue().strip().splitlines()[-1])
    assert summary["haystack_images"] == 4 * 2 + 3 and summary["target_count"] == 3
    assert summary["target_identity"] >= 1 and len(summary["people"]) == 2
    assert Path(summary["figure"]).is_file()
    assert main(["generate", "--out", str(tmp_path / "w2"), "--set", "no_such_field=1"]) == 2


def test_world_figure(tmp_path):
    path = world_figure(tmp_path / "grid.png", dataclasses.replace(TINY, other_names=("Robin Test",)),
                        n_photos=3, n_strangers=1)
    with Image.open(path) as image:
        assert image.width > 3 * 80 and image.height > 3 * 100  # 3 rows (target, Robin, a stranger)


def test_target_identity_is_the_planted_one(world):
    out, summary = world
    params = json.loads((out / "celeba" / "synthetic_identities.json").read_text())
    truth = json.loads((out / "web_truth.json").read_text())
    assert params[str(summary["target_identity"])] == truth["people"][0]["identity"]
    assert dataclasses.asdict(target_identity(TINY.seed)) == {
        k: tuple(v) if isinstance(v, list) else v for k, v in truth["people"][0]["identity"].items()}


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_web_people_include_lookalike_hard_negatives(seed):
    config = WorldConfig(seed=seed, lookalike_others=2)
    people = web_people(config)
    target = people[0]["identity"]
    assert people[0]["is_target"] and [p["name"] for p in people[1:]] == list(config.other_names)
    near = config.min_target_distance
    for person in people[1:3]:  # the lookalikes: same sex, as close to the target as a haystack stranger may be
        assert person["identity"].male == target.male
        assert near <= identity_distance(person["identity"], target) <= near + 1.5
    for person in people[3:]:  # everyone else is clearly different from all before them
        index = people.index(person)
        assert all(identity_distance(person["identity"], other["identity"]) >= near + 1 for other in people[:index])
    assert identity_distance(people[1]["identity"], people[2]["identity"]) >= near  # not two copies of one face
    # Without lookalikes every other person is clearly different from the target.
    plain = web_people(dataclasses.replace(config, lookalike_others=0))
    assert all(identity_distance(p["identity"], target) >= near + 1 for p in plain[1:])
