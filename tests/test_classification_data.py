"""Stage 2 data: face folders -> labelled rows -> seeded stratified split, and clear errors for bad folders."""
from __future__ import annotations

import warnings
from collections import Counter

import pytest

from common.errors import InputError
from classification.data import (FaceDataError, collect_face_rows, make_loader, read_split, stratified_split,
                                 write_split)
from toy_faces import make_toy_faces


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    root = make_toy_faces(tmp_path_factory.mktemp("faces"), n_target=20, n_per_other=10, n_others=3, size=40)
    # bookkeeping entries that must be ignored
    (root / "_rejected").mkdir()
    (root / "ava_marlowe" / "000.jpg").rename(root / "_rejected" / "000.jpg")
    (root / ".cache").mkdir()
    (root / "ava_marlowe" / ".DS_Store").write_bytes(b"junk")
    (root / "ava_marlowe" / "_old").mkdir()
    return root


def test_rows_label_target_vs_others_and_skip_bookkeeping(faces):
    rows = collect_face_rows(faces, "ava_marlowe").rows
    counts = Counter((row["person"], row["label"]) for row in rows)
    assert counts == {("ava_marlowe", 1): 19, ("person_1", 0): 10, ("person_2", 0): 10, ("person_3", 0): 10}


def test_split_is_stratified_disjoint_and_reproducible(faces, tmp_path):
    rows = collect_face_rows(faces, "ava_marlowe").rows
    split = stratified_split(rows, seed=3, val_fraction=0.2, test_fraction=0.2)
    assert sorted(r["file"] for r in split) == sorted(r["file"] for r in rows)  # every photo exactly once
    per = Counter((r["split"], r["label"]) for r in split)
    assert per == {("test", 1): 4, ("val", 1): 4, ("train", 1): 11, ("test", 0): 6, ("val", 0): 6, ("train", 0): 18}
    assert stratified_split(list(reversed(rows)), seed=3, val_fraction=0.2, test_fraction=0.2) == split
    other_seed = stratified_split(rows, seed=4, val_fraction=0.2, test_fraction=0.2)
    assert {r["file"] for r in other_seed if r["split"] == "test"} != {r["file"] for r in split if r["split"] == "test"}
    write_split(split, tmp_path / "split.csv")
    assert read_split(tmp_path / "split.csv") == split


def test_unreadable_files_are_skipped_with_a_warning_and_counted(faces, tmp_path):
    import shutil

    root = tmp_path / "faces"
    shutil.copytree(faces, root)
    (root / "person_1" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "person_2" / "empty.png").write_bytes(b"")
    with pytest.warns(UserWarning, match="2 unreadable"):
        collected = collect_face_rows(root, "ava_marlowe")
    assert collected.unreadable == ["person_1/broken.jpg", "person_2/empty.png"]
    assert len(collected.rows) == 49
    # a file that breaks after the split is dropped from its batch, not fatal
    rows = [{"file": "person_1/broken.jpg", "label": 0}, {"file": "person_1/001.jpg", "label": 0}]
    batches = list(make_loader(root, rows, image_size=32, batch_size=2, train=False))
    assert len(batches) == 1 and batches[0][0].shape == (1, 3, 32, 32)


def test_missing_target_folder_is_a_clear_error(faces):
    with pytest.raises(FaceDataError, match="target folder .*nobody.* is missing"):
        collect_face_rows(faces, "nobody")


def test_missing_faces_root_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        collect_face_rows(tmp_path / "nope", "ava_marlowe")


def test_empty_target_class_is_a_clear_error(tmp_path):
    make_toy_faces(tmp_path, n_target=0, n_per_other=4, n_others=1, size=32)
    (tmp_path / "ava_marlowe").mkdir(exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing unreadable here: no warning expected
        with pytest.raises(FaceDataError, match="target 'ava_marlowe' has no readable images"):
            collect_face_rows(tmp_path, "ava_marlowe")


def test_no_other_people_is_a_clear_error(tmp_path):
    make_toy_faces(tmp_path, n_target=5, n_others=0, size=32)
    with pytest.raises(FaceDataError, match="negative class needs at least one other person"):
        collect_face_rows(tmp_path, "ava_marlowe")


def test_single_target_image_is_a_clear_error(tmp_path):
    make_toy_faces(tmp_path, n_target=1, n_per_other=4, n_others=1, size=32)
    with pytest.raises(FaceDataError, match="only 1 readable image.*at least 3"):
        collect_face_rows(tmp_path, "ava_marlowe")
