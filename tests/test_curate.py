"""Tests for scraping.curate: outlier ranking, contact-sheet geometry, reversible rejection, CLI JSON lines."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the astronaut test photo")

from common.images import SHEET_HEADER as HEADER_HEIGHT, SHEET_PADDING, caption_band  # noqa: E402
from scraping.curate import (  # noqa: E402
    contact_sheet, judge_crops, outlier_scores, reject, restore,
    truth_by_file,
)
from scraping.faces import CROPS_FIELDS  # noqa: E402
from scraping.__main__ import main as scraping_cli  # noqa: E402
from common.files import read_csv, write_csv_atomic  # noqa: E402

SOLID = (20, 200, 60)


def _face_crops() -> list[Image.Image]:
    """Eleven plausible crops of one face: small shifts, zooms and lighting changes."""
    photo = Image.fromarray(skimage_data.astronaut())
    crops = []
    for k in range(11):
        dx, dy, grow = (k % 4) * 4 - 6, (k % 3) * 4 - 4, (k % 5) * 4
        box = (160 + dx - grow, 45 + dy - grow, 290 + dx + grow, 190 + dy + grow)
        crop = photo.crop(box).resize((64, 64), Image.LANCZOS)
        crops.append(ImageEnhance.Brightness(crop).enhance(0.85 + 0.03 * k))
    return crops


@pytest.fixture()
def crop_folder(tmp_path) -> Path:
    folder = tmp_path / "faces" / "alice"
    folder.mkdir(parents=True)
    rows = []
    for k, crop in enumerate(_face_crops()):
        name = f"photo{k:02d}_0.jpg"
        crop.save(folder / name, quality=92)
        rows.append(dict(source=f"photo{k:02d}.jpg", face_index=0, file=name, box="1,2,3,4", prob=f"{0.99 - k / 1000:.6f}",
                         landmarks="", status="ok", reason=""))
    write_csv_atomic(folder / "crops.csv", rows, CROPS_FIELDS)
    return folder


def test_inverted_and_solid_crops_rank_first(crop_folder):
    faces = [Image.open(p).convert("RGB") for p in sorted(crop_folder.glob("*.jpg"))]
    inverted = ImageOps.invert(faces[3])
    solid = Image.new("RGB", (64, 64), SOLID)
    scores = outlier_scores(faces + [inverted])
    assert int(np.argmax([s["score"] for s in scores])) == len(faces)
    scores = outlier_scores(faces + [solid])
    assert int(np.argmax([s["score"] for s in scores])) == len(faces)
    assert scores[-1]["colour_distance"] > 2 * max(s["colour_distance"] for s in scores[:-1])


def test_contact_sheet_grid_pages_and_outlier_first(crop_folder, tmp_path):
    Image.new("RGB", (64, 64), SOLID).save(crop_folder / "zz_solid_0.jpg", quality=95)
    ImageOps.invert(Image.open(crop_folder / "photo05_0.jpg")).save(crop_folder / "aa_inverted_0.jpg")
    (crop_folder / "_rejected").mkdir()
    Image.new("RGB", (64, 64)).save(crop_folder / "_rejected" / "old_0.jpg")  # must be ignored

    out_png = tmp_path / "results" / "alice_sheet.png"
    thumb, columns, rows = 48, 5, 2
    summary = contact_sheet(crop_folder, out_png, columns=columns, rows=rows, thumb=thumb)

    assert summary["images"] == 13  # 11 faces + 2 outliers, nothing from _rejected
    assert set(summary["top"][:2]) == {"zz_solid_0.jpg", "aa_inverted_0.jpg"}
    pages = [Path(p) for p in summary["pages"]]
    assert pages[0] == out_png and [p.name for p in pages[1:]] == ["alice_sheet_p2.png"]
    assert len(pages) == 2  # 13 crops at 10 per page
    cell_w, cell_h = thumb + 2 * SHEET_PADDING, thumb + caption_band(2) + 2 * SHEET_PADDING
    assert Image.open(pages[0]).size == (columns * cell_w, HEADER_HEIGHT + 2 * cell_h)
    assert Image.open(pages[1]).size == (columns * cell_w, HEADER_HEIGHT + 1 * cell_h)  # 3 crops: one row

    ranked = read_csv(Path(summary["outliers_csv"]))
    assert [r["rank"] for r in ranked] == [str(k) for k in range(1, 14)]
    assert {ranked[0]["file"], ranked[1]["file"]} == {"zz_solid_0.jpg", "aa_inverted_0.jpg"}
    assert float(ranked[0]["score"]) >= float(ranked[1]["score"]) >= float(ranked[-1]["score"])
    assert ranked[-1]["prob"].startswith("0.9") and ranked[-1]["page"] == "2"

    # the tile drawn in a cell is the crop that outliers.csv ranks there
    sheet = np.asarray(Image.open(pages[0]).convert("RGB")).astype(int)
    centre_of = lambda slot: sheet[HEADER_HEIGHT + SHEET_PADDING + thumb // 2,  # noqa: E731
                                   slot * cell_w + SHEET_PADDING + thumb // 2]
    solid_slot = [r["file"] for r in ranked].index("zz_solid_0.jpg")
    assert np.abs(centre_of(solid_slot) - np.array(SOLID)).max() < 12
    assert np.abs(centre_of(1 - solid_slot) - np.array(SOLID)).max() > 30
    assert not list((tmp_path / "faces").rglob("*.png"))  # the sheet is written only where asked


def test_reject_moves_and_restore_undoes(crop_folder, tmp_path):
    names = ["photo01_0.jpg", "photo07_0.jpg"]
    before = {n: (crop_folder / n).read_bytes() for n in names}
    result = reject(crop_folder, names + ["nope.jpg"])
    assert result["moved"] == names and result["unknown"] == ["nope.jpg"] and result["rejected_total"] == 2
    for name in names:
        assert not (crop_folder / name).exists()
        assert (crop_folder / "_rejected" / name).read_bytes() == before[name]  # moved, not deleted
    rows = {r["file"]: r for r in read_csv(crop_folder / "crops.csv")}
    assert all(rows[n]["status"] == "rejected" and rows[n]["reason"] == "manual" for n in names)
    assert rows["photo02_0.jpg"]["status"] == "ok"
    assert contact_sheet(crop_folder, tmp_path / "s.png")["images"] == 9

    assert reject(crop_folder, names[:1])["already_rejected"] == names[:1]  # repeating is harmless

    undone = restore(crop_folder, names)
    assert undone["restored"] == names
    for name in names:
        assert (crop_folder / name).read_bytes() == before[name]
    rows = {r["file"]: r for r in read_csv(crop_folder / "crops.csv")}
    assert all(rows[n]["status"] == "ok" for n in names)


def test_reject_from_list_file(crop_folder, tmp_path):
    listing = tmp_path / "rejects.txt"
    listing.write_text("# crops that are not alice\nalice/photo03_0.jpg\n\nphoto04_0.jpg  # blurry\n")
    result = reject(crop_folder, listing)
    assert result["moved"] == ["photo03_0.jpg", "photo04_0.jpg"] and result["unknown"] == []


def test_cli_sheet_and_reject_print_json(crop_folder, tmp_path, capsys):
    out_png = tmp_path / "sheet.png"
    assert scraping_cli(["sheet", "--folder", str(crop_folder), "--out", str(out_png), "--thumb", "32"]) == 0
    sheet = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sheet["images"] == 11 and Path(sheet["pages"][0]).exists()

    assert scraping_cli(["reject", "--folder", str(crop_folder), "--names", "photo00_0.jpg", "missing.jpg"]) == 0
    rejected = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rejected["moved"] == ["photo00_0.jpg"] and rejected["unknown"] == ["missing.jpg"]

    assert scraping_cli(["reject", "--folder", str(crop_folder), "--names", "photo00_0.jpg", "--undo"]) == 0
    undone = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert undone["restored"] == ["photo00_0.jpg"] and (crop_folder / "photo00_0.jpg").exists()


def test_sheet_with_rejected_keeps_them_framed_and_ranked(crop_folder, tmp_path):
    Image.new("RGB", (64, 64), SOLID).save(crop_folder / "zz_solid_0.jpg", quality=95)
    before = contact_sheet(crop_folder, tmp_path / "before.png")
    assert before["top"][0] == "zz_solid_0.jpg"
    reject(crop_folder, ["zz_solid_0.jpg"])
    assert contact_sheet(crop_folder, tmp_path / "without.png")["images"] == 11
    after = contact_sheet(crop_folder, tmp_path / "after.png", thumb=64, include_rejected=True)
    assert after["images"] == 12 and after["rejected"] == 1 and after["top"][0] == "zz_solid_0.jpg"
    ranked = read_csv(Path(after["outliers_csv"]))
    assert [(r["file"], r["rejected"]) for r in ranked if r["rejected"] == "1"] == [("zz_solid_0.jpg", "1")]
    # The rejected crop (first cell) is framed in red; the second cell is not.
    sheet = np.asarray(Image.open(after["pages"][0]).convert("RGB")).astype(int)
    frame_y = HEADER_HEIGHT + SHEET_PADDING - 2
    first_cell = sheet[frame_y, SHEET_PADDING + 10:SHEET_PADDING + 50]
    second_cell = sheet[frame_y, 64 + 3 * SHEET_PADDING + 10:64 + 3 * SHEET_PADDING + 50]
    assert (np.abs(first_cell - [220, 30, 30]).max(axis=1) < 40).all()
    assert (np.abs(second_cell - [255, 255, 255]).max(axis=1) < 40).all()


def test_judge_crops_against_world_truth(tmp_path):
    """Crops graded by where their box centre falls among the true face boxes of the source photo."""
    raw, faces = tmp_path / "raw" / "ava", tmp_path / "faces" / "ava"
    raw.mkdir(parents=True)
    faces.mkdir(parents=True)
    base = "http://127.0.0.1:8701/"
    manifest = [
        dict(url=base + "people/ava/photos/solo.jpg", file="aaa.jpg", status="saved"),
        dict(url=base + "events/event_01.jpg", file="bbb.jpg", status="saved"),
        dict(url=base + "people/ava/photos/venue.jpg", file="ccc.jpg", status="saved"),
        dict(url="http://elsewhere.test/x.jpg", file="ddd.jpg", status="saved"),
        dict(url=base + "people/ava/photos/copy.jpg", file="", status="duplicate"),
    ]
    write_csv_atomic(raw / "manifest.csv", manifest, ["url", "file", "status"])
    truth = {"photos": [
        {"path": "people/ava/photos/solo.jpg", "kind": "single", "people": [{"name": "Ava", "box": [10, 10, 60, 60]}]},
        {"path": "events/event_01.jpg", "kind": "group", "people": [{"name": "Ava", "box": [0, 0, 40, 40]},
                                                                    {"name": "Bo", "box": [100, 0, 160, 60]}]},
        {"path": "people/ava/photos/venue.jpg", "kind": "no_face", "people": []},
    ]}
    assert set(truth_by_file(raw, truth)) == {"aaa.jpg", "bbb.jpg", "ccc.jpg"}
    crops = [
        dict(source="aaa.jpg", file="aaa_0.jpg", box="12,14,58,62", status="ok"),
        dict(source="bbb.jpg", file="bbb_0.jpg", box="105,5,150,55", status="ok"),  # Bo is the larger face
        dict(source="ccc.jpg", file="ccc_0.jpg", box="5,5,30,30", status="rejected"),
        dict(source="ddd.jpg", file="ddd_0.jpg", box="5,5,30,30", status="ok"),
        dict(source="eee.jpg", status="no_face"),
    ]
    write_csv_atomic(faces / "crops.csv", crops, CROPS_FIELDS)
    truth_path = tmp_path / "web_truth.json"
    truth_path.write_text(json.dumps(truth))
    verdicts = {v["file"]: (v["verdict"], v["who"], v["kind"]) for v in judge_crops(faces, raw, truth_path, "Ava")}
    assert verdicts == {"aaa_0.jpg": ("right", "Ava", "single"), "bbb_0.jpg": ("wrong_person", "Bo", "group"),
                        "ccc_0.jpg": ("not_a_face", "", "no_face"), "ddd_0.jpg": ("unknown", "", "")}
