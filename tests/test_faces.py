"""Tests for scraping.faces: MTCNN finds real faces, image modes load right, batched == per-image, crops.csv/resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the astronaut test photo")

from scraping.faces import (  # noqa: E402
    CropConfig, Face, build_detector, crop_faces, detect_faces, detect_faces_single, detection_figure, draw_faces,
    identity_groups, load_rgb, parse_numbers, select_faces,
)
from common.files import read_csv  # noqa: E402
from scraping.__main__ import main as scraping_cli  # noqa: E402

CPU = CropConfig(device="cpu", image_size=64)
# Eileen Collins' face in skimage.data.astronaut() at 512 px spans about x 181-268, y 62-172 (checked by eye
# on the image); at 256 px everything halves.
FACE_512 = (181, 62, 268, 172)


@pytest.fixture(scope="module")
def detector():
    return build_detector(CPU)


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(skimage_data.astronaut())


@pytest.fixture(scope="module")
def astronaut_256(astronaut) -> Image.Image:
    return astronaut.resize((256, 256), Image.LANCZOS)


@pytest.fixture(scope="module")
def two_faces(astronaut) -> Image.Image:
    """Two copies of the astronaut's face, different sizes, side by side on a grey canvas."""
    face = astronaut.crop((150, 30, 290, 200)).resize((110, 134), Image.LANCZOS)
    canvas = Image.new("RGB", (320, 200), (40, 40, 40))
    canvas.paste(face, (20, 30))
    canvas.paste(face.resize((90, 110), Image.LANCZOS), (210, 40))
    return canvas


def centre(box):
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def assert_astronaut_face(faces, scale: float = 1.0, tolerance: float = 15.0):
    confident = [f for f in faces if f.prob >= 0.95]
    assert len(confident) == 1, faces
    cx, cy = centre(confident[0].box)
    ex, ey = centre([v * scale for v in FACE_512])
    assert abs(cx - ex) <= tolerance * scale * 2 and abs(cy - ey) <= tolerance * scale * 2, (cx, cy, ex, ey)
    assert len(confident[0].landmarks) == 10


def test_astronaut_face_in_expected_region(detector, astronaut):
    faces = detect_faces_single(astronaut, detector, CPU)
    assert_astronaut_face(faces)
    x1, y1, x2, y2 = faces[0].box
    # the rough region (x 150-260, y 40-200) widened a little to the right, where the chin/cheek end
    assert 150 <= x1 < x2 <= 290 and 40 <= y1 < y2 <= 200
    assert faces[0].prob > 0.99
    # eyes (first two landmarks) lie in the upper half of the box, left eye left of right eye
    lx, ly, rx, ry = faces[0].landmarks[:4]
    assert lx < rx and y1 < ly < (y1 + y2) / 2 and y1 < ry < (y1 + y2) / 2


def test_blank_image_has_no_face(detector):
    blank = Image.new("RGB", (256, 256), (128, 128, 128))
    assert detect_faces_single(blank, detector, CPU) == []
    assert detect_faces([blank], detector, CPU) == [[]]


def test_two_faces_keep_all_vs_largest(detector, two_faces):
    faces = detect_faces([two_faces], detector, CPU)[0]
    assert len(select_faces(faces, CropConfig(keep="all"))) == 2
    largest = select_faces(faces, CropConfig(keep="largest"))
    assert len(largest) == 1
    assert centre(largest[0].box)[0] < 160  # the bigger copy is on the left
    assert largest[0].area == max(f.area for f in faces if f.prob >= 0.95)


def _save_variant(kind: str, image: Image.Image, folder: Path) -> tuple[Path, tuple[float, float]]:
    """Write `image` as variant `kind`; return the path and the expected face centre after load_rgb."""
    expected = centre([v / 2 for v in FACE_512])
    if kind == "L":
        path = folder / "grey.png"
        image.convert("L").save(path)
    elif kind == "RGBA":
        rgba = image.convert("RGBA")
        alpha = Image.new("L", image.size, 255)
        alpha.paste(0, (0, 200, 256, 256))  # transparent bottom strip (below the face)
        rgba.putalpha(alpha)
        path = folder / "alpha.png"
        rgba.save(path)
    elif kind == "P":
        path = folder / "palette.png"
        image.quantize(colors=128).save(path)
    elif kind == "CMYK":
        path = folder / "cmyk.jpg"
        image.convert("CMYK").save(path, quality=95)
    elif kind == "I;16":
        grey = np.asarray(image.convert("L"), dtype=np.uint16) * 257  # full 16-bit range
        path = folder / "grey16.png"
        Image.fromarray(grey).save(path)
    elif kind == "I":
        grey = np.asarray(image.convert("L"), dtype=np.int32) * 257
        path = folder / "grey32.tif"
        Image.fromarray(grey).save(path)
    elif kind in ("exif6", "exif8"):
        # Orientation 6 = "rotate 90 degrees clockwise to display", so store the upright image turned
        # counter-clockwise; 8 is the opposite.
        stored = image.rotate(90, expand=True) if kind == "exif6" else image.rotate(-90, expand=True)
        exif = Image.Exif()
        exif[0x0112] = 6 if kind == "exif6" else 8
        path = folder / f"{kind}.jpg"
        stored.save(path, quality=95, exif=exif.tobytes())
    elif kind == "gif":
        path = folder / "animated.gif"
        blank = Image.new("RGB", image.size, (0, 0, 0))
        image.save(path, save_all=True, append_images=[blank, blank], duration=100, loop=0)
    else:
        raise ValueError(kind)
    return path, expected


@pytest.mark.parametrize("kind", ["L", "RGBA", "P", "CMYK", "I;16", "I", "exif6", "exif8", "gif"])
def test_image_modes_load_and_detect(kind, tmp_path, detector, astronaut_256):
    path, expected = _save_variant(kind, astronaut_256, tmp_path)
    image = load_rgb(path)
    assert image.mode == "RGB" and image.size == (256, 256)
    faces = [f for f in detect_faces_single(image, detector, CPU) if f.prob >= 0.95]
    assert len(faces) == 1, (kind, faces)
    cx, cy = centre(faces[0].box)
    assert abs(cx - expected[0]) <= 10 and abs(cy - expected[1]) <= 10, (kind, cx, cy, expected)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path, astronaut_256):
    path, _ = _save_variant("I;16", astronaut_256, tmp_path)
    assert Image.open(path).mode.startswith("I;16")
    loaded = np.asarray(load_rgb(path))[..., 0].astype(int)
    reference = np.asarray(astronaut_256.convert("L")).astype(int)
    assert np.abs(loaded - reference).max() <= 1  # clipping at 255 would make nearly everything white


def test_transparent_pixels_become_white(tmp_path, astronaut_256):
    path, _ = _save_variant("RGBA", astronaut_256, tmp_path)
    pixels = np.asarray(load_rgb(path))
    assert (pixels[220:, :, :] == 255).all()  # the transparent strip
    assert pixels[:190].std() > 20  # the rest is the photo


def test_batched_matches_per_image(detector, astronaut_256, two_faces):
    images = [
        astronaut_256,
        Image.new("RGB", (256, 256), (128, 128, 128)),  # no face, same size as the first: same batch
        two_faces,  # 320 x 200: other canvas
        astronaut_256.crop((0, 0, 200, 256)),  # 200 x 256: padded up to the 256 x 256 canvas
        Image.new("RGB", (10, 10), (0, 0, 0)),  # below min_face_size: crashes facenet-pytorch if passed
        astronaut_256.transpose(Image.FLIP_LEFT_RIGHT),
    ]
    batched = detect_faces(images, detector, CropConfig(device="cpu", batch_size=4, bucket=64))
    assert len(batched) == len(images)
    for image, faces_batched in zip(images, batched):
        reference = [f for f in detect_faces_single(image, detector, CPU) if f.prob >= 0.9]
        faces_batched = [f for f in faces_batched if f.prob >= 0.9]
        assert len(faces_batched) == len(reference), (image.size, faces_batched, reference)
        for a, b in zip(faces_batched, reference):
            assert np.allclose(a.box, b.box, atol=4.0), (a.box, b.box)
            assert abs(a.prob - b.prob) < 1e-3
            assert np.allclose(a.landmarks, b.landmarks, atol=4.0)
    assert [len(f) for f in batched][1] == 0 and len([f for f in batched[2] if f.prob >= 0.95]) == 2


def test_max_side_maps_boxes_back_to_original(detector, astronaut):
    config = CropConfig(device="cpu", max_side=256)
    faces = detect_faces([astronaut], detector, config)[0]
    assert_astronaut_face(faces)  # in 512-px coordinates although detection ran at 256 px


def _raw_world(root: Path, astronaut_256: Image.Image, two_faces: Image.Image) -> Path:
    raw = root / "raw"
    alice = raw / "alice"
    alice.mkdir(parents=True)
    astronaut_256.save(alice / "portrait.jpg", quality=95)
    two_faces.save(alice / "group.png")
    Image.new("RGB", (256, 256), (90, 140, 200)).save(alice / "sky.jpg")
    (alice / "broken.jpg").write_bytes(b"definitely not a jpeg")
    astronaut_256.save(alice / "not_saved.jpg")  # listed in the manifest as failed: must be ignored
    rows = ["url,source_page,license,sha256,status,file"]
    for name, status in [("portrait.jpg", "saved"), ("group.png", "saved"), ("sky.jpg", "saved"),
                         ("broken.jpg", "saved"), ("not_saved.jpg", "failed")]:
        rows.append(f"http://example.test/{name},http://example.test/,cc-by,0,{status},{name}")
    (alice / "manifest.csv").write_text("\n".join(rows) + "\n")
    bob = raw / "bob"  # no manifest: every image file is used
    bob.mkdir()
    astronaut_256.transpose(Image.FLIP_LEFT_RIGHT).save(bob / "mirror.png")
    hidden = raw / "_ignored"
    hidden.mkdir()
    astronaut_256.save(hidden / "x.jpg")
    return raw


def test_crop_faces_writes_crops_csv_and_resumes(tmp_path, astronaut_256, two_faces):
    raw = _raw_world(tmp_path, astronaut_256, two_faces)
    out = tmp_path / "faces"
    config = CropConfig(device="cpu", image_size=64, keep="all", batch_size=4)
    summary = crop_faces(raw, out, config)

    assert set(summary["per_person"]) == {"alice", "bob"}
    assert not (out / "_ignored").exists()
    assert summary["images"] == 5 and summary["processed"] == 5 and summary["skipped"] == 0
    assert summary["faces"] == 4 and summary["no_face"] == 1 and summary["unreadable"] == 1
    assert json.loads(json.dumps(summary)) == summary

    rows = read_csv(out / "alice" / "crops.csv")
    assert list(rows[0]) == ["source", "face_index", "file", "box", "prob", "landmarks", "status", "reason"]
    by_source = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    assert set(by_source) == {"portrait.jpg", "group.png", "sky.jpg", "broken.jpg"}
    assert [r["status"] for r in by_source["sky.jpg"]] == ["no_face"]
    assert [r["status"] for r in by_source["broken.jpg"]] == ["unreadable"] and by_source["broken.jpg"][0]["reason"]
    group = by_source["group.png"]
    assert [r["file"] for r in group] == ["group_0.jpg", "group_1.jpg"]
    assert parse_numbers(group[0]["box"])[0] < parse_numbers(group[1]["box"])[0]  # largest (left) first
    (portrait,) = by_source["portrait.jpg"]
    assert portrait["status"] == "ok" and portrait["file"] == "portrait_0.jpg" and float(portrait["prob"]) > 0.99
    box = parse_numbers(portrait["box"])
    assert len(box) == 4 and abs(centre(box)[0] - centre(FACE_512)[0] / 2) < 10
    assert len(parse_numbers(portrait["landmarks"])) == 10
    crop = Image.open(out / "alice" / "portrait_0.jpg")
    assert crop.size == (64, 64) and crop.mode == "RGB"
    assert (out / "crop_config.json").exists()
    assert not list(out.rglob("*.part"))  # no temp files left behind

    stamp = (out / "alice" / "portrait_0.jpg").stat().st_mtime_ns
    again = crop_faces(raw, out, config)
    assert again["processed"] == 0 and again["skipped"] == 5 and again["faces"] == 4
    assert (out / "alice" / "portrait_0.jpg").stat().st_mtime_ns == stamp

    # a new photo appears: only it is processed
    astronaut_256.save(raw / "bob" / "second.png")
    more = crop_faces(raw, out, config)
    assert more["processed"] == 1 and more["per_person"]["bob"]["faces"] == 2

    redo = crop_faces(raw / "alice", out, CropConfig(device="cpu", image_size=64, overwrite=True))
    assert redo["processed"] == 4 and redo["faces"] == 2  # keep="largest" now: one crop per face photo
    assert not (out / "alice" / "group_1.jpg").exists()  # stale crop of the earlier keep="all" run removed


def test_low_probability_faces_are_recorded_not_cropped(tmp_path, astronaut_256):
    person = tmp_path / "raw" / "carol"
    person.mkdir(parents=True)
    astronaut_256.save(person / "a.png")
    summary = crop_faces(person, tmp_path / "faces", CropConfig(device="cpu", min_prob=0.99999999))
    (row,) = read_csv(tmp_path / "faces" / "carol" / "crops.csv")
    assert summary["low_prob"] == 1 and row["status"] == "low_prob" and row["file"] == ""
    assert 0.9 < float(row["prob"]) < 0.99999999 and "min_prob" in row["reason"]


def test_cli_crop_prints_json_summary(tmp_path, astronaut_256, capsys):
    person = tmp_path / "raw" / "dave"
    person.mkdir(parents=True)
    astronaut_256.save(person / "a.png")
    assert scraping_cli(["crop", "--src", str(person), "--out", str(tmp_path / "faces"), "--set", "image_size=48",
                 "--set", "device=cpu"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["faces"] == 1 and summary["processed"] == 1
    assert Image.open(tmp_path / "faces" / "dave" / "a_0.jpg").size == (48, 48)
    capsys.readouterr()
    assert scraping_cli(["crop", "--src", str(person), "--out", str(tmp_path / "faces"), "--set", "imagesize=48"]) == 2
    assert "unknown CropConfig" in capsys.readouterr().err


def test_detection_drawing_colours_kept_and_weak_faces(tmp_path):
    photo = Image.new("RGB", (200, 120), (128, 128, 128))
    kept = Face(box=(20, 20, 80, 90), prob=0.99, landmarks=(40, 45, 60, 45, 50, 60, 42, 75, 58, 75))
    weak = Face(box=(120, 30, 160, 70), prob=0.6)
    drawn = np.asarray(draw_faces(photo, [kept, weak], min_prob=0.95, line=2)).astype(int)
    assert np.asarray(photo).sum() == 128 * 3 * 200 * 120  # the input is left alone
    assert tuple(drawn[50, 20]) == (40, 200, 60)  # left edge of the kept box: green
    assert tuple(drawn[50, 120]) == (255, 150, 0)  # left edge of the weak box: orange
    assert tuple(drawn[45, 40]) == (255, 60, 60)  # a landmark dot
    assert tuple(drawn[110, 100]) == (128, 128, 128)  # away from any face: untouched
    out = detection_figure([(photo, [kept, weak], "two"), (photo, [], "none")], tmp_path / "figs" / "d.png",
                           columns=2, tile=100)
    with Image.open(out) as figure:
        assert figure.size == (216, 122)  # two 100 px tiles, 4 px padding, one caption line


def test_cli_crop_by_celeba_identity_file(tmp_path, astronaut_256, capsys):
    """A flat photo folder plus `identity_CelebA.txt` lines gives one crop folder per identity."""
    photos = tmp_path / "img_celeba"
    photos.mkdir()
    astronaut_256.save(photos / "000001.jpg", quality=95)
    astronaut_256.transpose(Image.FLIP_LEFT_RIGHT).save(photos / "000002.jpg", quality=95)
    Image.new("RGB", (128, 128), (70, 90, 110)).save(photos / "000003.jpg")
    identity_file = tmp_path / "identity_CelebA.txt"
    identity_file.write_text("000001.jpg 12\n000002.jpg 12\n000003.jpg 7\n000004.jpg 7\n000009.jpg 30\n")
    out = tmp_path / "crops"
    assert scraping_cli(["crop", "--src", str(photos), "--identities", str(identity_file), "--out", str(out),
                 "--set", "image_size=48", "--set", "device=cpu"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary["per_person"]) == {"7", "12"}  # identity 30 has no photo here
    assert [group[0] for group in identity_groups(photos, identity_file)] == ["7", "12"]  # numeric order
    assert summary["per_person"]["12"]["faces"] == 2 and summary["per_person"]["7"]["no_face"] == 1
    assert sorted(p.name for p in (out / "12").glob("*.jpg")) == ["000001_0.jpg", "000002_0.jpg"]
    assert not (out / "30").exists() and not list(photos.glob("*_0.jpg"))  # nothing written beside the photos


def test_a_tiny_image_says_mtcnn_was_not_run(tmp_path):
    person = tmp_path / "raw" / "tiny"
    person.mkdir(parents=True)
    Image.new("RGB", (1, 1), "white").save(person / "dot.png")
    crop_faces(person, tmp_path / "faces", CropConfig(device="cpu", progress=False))
    (row,) = read_csv(tmp_path / "faces" / "tiny" / "crops.csv")
    assert row["status"] == "no_face" and "MTCNN was not run" in row["reason"] and "1x1" in row["reason"]
