"""The shared helpers every stage relies on: atomic writes, safe names, config overrides."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass

import pytest

from common.config import apply_overrides, parse_set_options
from common.files import atomic_write_bytes, read_csv, slugify, write_csv_atomic


def test_atomic_write_replaces_whole_file_leaves_no_temp_and_normal_permissions(tmp_path):
    path = atomic_write_bytes(tmp_path / "sub" / "a.bin", b"old")
    atomic_write_bytes(path, b"new contents")
    assert path.read_bytes() == b"new contents"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_failed_write_keeps_the_old_file_and_no_partial(tmp_path):
    path = atomic_write_bytes(tmp_path / "a.bin", b"old")

    with pytest.raises(TypeError):
        atomic_write_bytes(path, object())  # not bytes: the write fails midway
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_csv_round_trip_and_missing_file_reads_empty(tmp_path):
    rows = [{"a": "1", "b": "x,y"}, {"a": "2"}]
    write_csv_atomic(tmp_path / "t.csv", rows, ["a", "b"])
    assert read_csv(tmp_path / "t.csv") == [{"a": "1", "b": "x,y"}, {"a": "2", "b": ""}]
    assert read_csv(tmp_path / "missing.csv") == []


@pytest.mark.parametrize("text,expected", [("Julia Roberts", "julia_roberts"), ("../../etc/passwd", "etc_passwd"),
                                           ("Zoë Saldaña", "zoe_saldana"), ("???", "unnamed")])
def test_slugify_gives_safe_names(text, expected):
    assert slugify(text) == expected


def test_unknown_override_keys_are_errors_and_values_are_typed():
    @dataclass
    class Config:
        steps: int = 3
        name: str = "a"

    assert apply_overrides(Config(), {"steps": 5}).steps == 5
    with pytest.raises(ValueError, match="stpes"):
        apply_overrides(Config(), {"stpes": 5})
    assert parse_set_options(["steps=7"]) == {"steps": 7}
