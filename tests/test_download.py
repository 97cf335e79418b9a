"""The polite downloader against a hostile loopback web server: every failure mode ends as the right manifest row,
nothing lands outside the output folder, per-host limits hold, and interrupted runs resume."""
from __future__ import annotations

import argparse
import email.utils
import hashlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scraping import download
from scraping.download import (
    SAVED_NAME,
    FetchConfig,
    download_images,
    fetch_person,
    hamming_distance,
    inspect_image,
    parse_retry_after,
)
from common.files import read_csv

pytestmark = pytest.mark.timeout(120)

# Tiny timeouts and backoffs so the whole file runs in seconds.
FAST = dict(max_workers=4, per_host=4, min_delay_s=0.0, connect_timeout_s=1.0, read_timeout_s=0.3, retries=1,
            backoff_s=0.01, max_wait_s=1.0, min_size=32, max_bytes=200_000, max_images=0, progress=False)


# ----------------------------------------------------------------------------------------------------------------
# A loopback web server whose routes the tests script
# ----------------------------------------------------------------------------------------------------------------
class LoopbackWeb:
    """ThreadingHTTPServer on 127.0.0.1:0; routes map a raw request path to `fn(handler)`; records hits."""

    def __init__(self, host: str = "127.0.0.1"):
        self.routes: dict[str, callable] = {}
        self.hits: Counter = Counter()
        self.starts: dict[str, list[float]] = defaultdict(list)
        self.user_agents: list[str] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        web = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                with web.lock:
                    web.hits[self.path] += 1
                    web.starts[self.path].append(time.monotonic())
                    web.user_agents.append(self.headers.get("User-Agent", ""))
                    web.in_flight += 1
                    web.max_in_flight = max(web.max_in_flight, web.in_flight)
                try:
                    route = web.routes.get(self.path) or web.routes.get(self.path.split("?")[0])
                    if route is None:
                        send(self, b"not found", status=404, content_type="text/plain")
                    else:
                        route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up on purpose (byte cap, timeout)
                finally:
                    with web.lock:
                        web.in_flight -= 1

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.host = host
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def add(self, path: str, body: bytes = b"", *, status: int = 200, content_type: str = "image/jpeg",
            headers: dict | None = None, delay: float = 0.0) -> str:
        def route(handler):
            if delay:
                time.sleep(delay)
            send(handler, body, status=status, content_type=content_type, headers=headers)

        self.routes[path] = route
        return self.url(path)

    def add_sequence(self, path: str, responses: list[dict]) -> str:
        """Answer the n-th request with responses[n] (the last one repeats)."""
        def route(handler):
            n = self.hits[path] - 1
            send(handler, **responses[min(n, len(responses) - 1)])

        self.routes[path] = route
        return self.url(path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def send(handler, body: bytes = b"", *, status: int = 200, content_type: str = "image/jpeg",
         headers: dict | None = None) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def web():
    server = LoopbackWeb()
    yield server
    server.close()


# ----------------------------------------------------------------------------------------------------------------
# Test images
# ----------------------------------------------------------------------------------------------------------------
def photo(seed: int, size: int = 96) -> Image.Image:
    """A smooth random colour field: distinct seeds give unrelated perceptual hashes."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit PNG of `width` x `height` zeros: tens of KB on the wire, 400 megapixels decoded."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    idat = b"".join(compressor.compress(row * 500) for _ in range(height // 500)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def assert_only_inside(root: Path, person_dir: Path) -> None:
    """Everything under `root` lies in `person_dir` and is a content-named image, the manifest or the config."""
    for path in root.rglob("*"):
        if path.is_dir():
            assert path in (person_dir, *person_dir.parents), f"unexpected folder {path}"
            continue
        assert path.parent == person_dir, f"file outside the person folder: {path}"
        assert SAVED_NAME.match(path.name) or path.name in ("manifest.csv", "fetch_config.json"), path.name


def by_url(rows):
    return {row["url"]: row for row in rows}


# ----------------------------------------------------------------------------------------------------------------
# Pure functions
# ----------------------------------------------------------------------------------------------------------------
def test_perceptual_hash_sees_resized_copy_and_tells_photos_apart():
    original = inspect_image(jpeg(photo(1)), min_size=32).phash
    resized = inspect_image(jpeg(photo(1).resize((61, 61)), quality=70), min_size=32).phash
    others = [inspect_image(jpeg(photo(seed)), min_size=32).phash for seed in range(2, 8)]
    assert hamming_distance(original, resized) <= 4
    assert min(hamming_distance(original, other) for other in others) > 12
    assert 0 <= original < 2**64


def test_parse_retry_after_seconds_and_http_date():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = email.utils.parsedate_to_datetime("Wed, 21 Oct 2015 07:28:00 GMT")
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=now) == pytest.approx(30.0)
    assert parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now=now) == 0.0


def test_inspect_image_rejects_each_kind_of_bad_bytes():
    good = jpeg(photo(3, 200))
    cases = {
        b"": "empty",
        b"<html><body>hello</body></html>": "not_an_image",
        good[: len(good) // 2]: "truncated",
        jpeg(photo(3, 20)): "too_small",
        bomb_png(): "decompression_bomb",
    }
    for data, reason in cases.items():
        with pytest.raises(download.ImageRejected) as caught:
            inspect_image(data, min_size=32)
        assert caught.value.reason == reason
    # Pillow's own guard, switched to "error", also rejects (pixel count between its limit and ours).
    with download.pillow_bomb_guard(10_000), pytest.raises(download.ImageRejected) as caught:
        inspect_image(good, min_size=32, max_pixels=10**9)
    assert caught.value.reason == "decompression_bomb"
    assert inspect_image(good, min_size=32).extension == ".jpg"


# ----------------------------------------------------------------------------------------------------------------
# The hostile-server matrix
# ----------------------------------------------------------------------------------------------------------------
def test_hostile_server_matrix(web, tmp_path):
    ok = web.add("/ok.jpg", jpeg(photo(10)))
    flaky = web.add_sequence("/flaky.jpg", [dict(body=b"oops", status=500, content_type="text/plain"),
                                             dict(body=jpeg(photo(11)))])
    busy = web.add_sequence("/busy.jpg", [dict(body=b"", status=429, headers={"Retry-After": "1"}),
                                           dict(body=jpeg(photo(12)))])
    far_future = email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(hours=1), usegmt=True)
    busy_date = web.add_sequence("/busy-date.jpg", [dict(body=b"", status=503, headers={"Retry-After": far_future}),
                                                     dict(body=jpeg(photo(13)))])
    always_500 = web.add("/always500.jpg", b"down", status=500, content_type="text/plain")
    slow = web.add("/slow.jpg", jpeg(photo(14)), delay=1.5)
    full = jpeg(photo(15, 256))
    truncated = web.add("/truncated.jpg", full[: len(full) // 2])
    html_as_jpeg = web.add("/page.jpg", b"<!doctype html><html><body>not a photo</body></html>")
    empty = web.add("/empty.jpg", b"")
    tiny = web.add("/tiny.jpg", jpeg(photo(16, 16)))

    def declared_too_big(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Content-Length", str(10_000_000))
        handler.end_headers()
        handler.wfile.write(b"\xff" * 1000)
        handler.wfile.flush()
        time.sleep(2)  # a client that reads on would sit here until its read timeout

    def chunked_too_big(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for _ in range(5):
            block = b"\xff" * 100_000
            handler.wfile.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
        handler.wfile.write(b"0\r\n\r\n")

    web.routes["/declared-big.jpg"] = declared_too_big
    web.routes["/chunked-big.jpg"] = chunked_too_big
    declared_big, chunked_big = web.url("/declared-big.jpg"), web.url("/chunked-big.jpg")
    bomb = web.add("/bomb.png", bomb_png(), content_type="image/png")
    loop_a = web.add("/loop-a", status=302, headers={"Location": "/loop-b"}, content_type="text/plain")
    web.add("/loop-b", status=302, headers={"Location": web.url("/loop-a")}, content_type="text/plain")
    to_file = web.add("/to-file", status=301, headers={"Location": "file:///etc/passwd"}, content_type="text/plain")
    web.add("/escape.jpg", jpeg(photo(17)))
    dot_dot = web.url("/a/../../escape.jpg")
    encoded = web.add("/img/..%2F..%2F..%2Fevil.jpg", jpeg(photo(18)))
    same = jpeg(photo(19))
    dup_a, dup_b = web.add("/dup-a.jpg", same), web.add("/dup-b.jpg", same)
    original = web.add("/orig.jpg", jpeg(photo(20, 128)))
    resized = web.add("/resized.jpg", jpeg(photo(20, 128).resize((90, 90)), quality=75))
    missing = web.url("/missing.jpg")
    bad_schemes = ["file:///etc/passwd", "data:image/png;base64,iVBORw0KGgo=", "javascript:alert(1)",
                   f"ftp://127.0.0.1:{web.port}/x.jpg"]

    expected = {
        ok: ("saved", ""), flaky: ("saved", ""), busy: ("saved", ""), busy_date: ("saved", ""),
        always_500: ("error", "http_500"), slow: ("error", "timeout"), missing: ("rejected", "http_404"),
        truncated: ("rejected", "truncated"), html_as_jpeg: ("rejected", "not_an_image"),
        empty: ("rejected", "empty"), tiny: ("rejected", "too_small"), declared_big: ("rejected", "too_large"),
        chunked_big: ("rejected", "too_large"), bomb: ("rejected", "decompression_bomb"),
        loop_a: ("rejected", "redirect_loop"), to_file: ("rejected", "unsupported_scheme"),
        dot_dot: ("saved", ""), encoded: ("saved", ""),
        **{url: ("rejected", "unsupported_scheme") for url in bad_schemes},
    }
    person_dir = tmp_path / "raw" / "test_person"
    urls = [*expected, dup_a, dup_b, original, resized]
    summary = download_images([{"url": url, "page": "http://example.org/p"} for url in urls], person_dir,
                              FetchConfig(**FAST))

    rows = by_url(read_csv(person_dir / "manifest.csv"))
    assert set(rows) == set(expected) | {dup_a, dup_b, original, resized}
    for url, (status, reason) in expected.items():
        row = rows[url]
        assert (row["status"], row["reason"].split(":")[0]) == (status, reason), (url, row)
    # Of two copies, the one listed first is saved (whichever finished first), the other points at it.
    kept, copy, kept_near, near = dup_a, dup_b, original, resized
    assert (rows[kept]["status"], rows[copy]["status"]) == ("saved", "duplicate")
    assert (rows[kept_near]["status"], rows[near]["status"]) == ("saved", "near_duplicate")
    assert rows[near]["reason"].startswith(f"near_duplicate_of: {rows[kept_near]['file']}")
    # Retries really happened, and the waits honoured Retry-After (1 s, and an hour capped to max_wait_s=1 s).
    assert web.hits["/flaky.jpg"] == 2 and web.hits["/always500.jpg"] == 2
    for path in ("/busy.jpg", "/busy-date.jpg"):
        first, second = web.starts[path][:2]
        assert 0.9 <= second - first < 3.0, path
    assert web.hits["/loop-a"] == 1 and web.hits["/loop-b"] == 1
    # Saved rows name content-addressed files that exist and hold the served bytes.
    saved = [row for row in rows.values() if row["status"] == "saved"]
    for row in saved:
        assert SAVED_NAME.match(row["file"]) and row["file"].startswith(row["sha256"][:16])
        assert (person_dir / row["file"]).is_file()
        assert row["page"] == "http://example.org/p" and len(row["phash"]) == 16
    assert (person_dir / rows[kept]["file"]).read_bytes() == same
    assert rows[copy]["file"] == "" and rows[kept]["file"] in rows[copy]["reason"]
    assert summary["saved"] == len(saved) == 8
    assert summary["duplicates"] == 1 and summary["near_duplicates"] == 1 and summary["errors"] == 2
    assert summary["rejected_by_reason"] == {"decompression_bomb": 1, "empty": 1, "http_404": 1, "not_an_image": 1,
                                             "redirect_loop": 1, "too_large": 2, "too_small": 1, "truncated": 1,
                                             "unsupported_scheme": 5}
    assert sorted(p.name for p in person_dir.iterdir() if SAVED_NAME.match(p.name)) == sorted(r["file"] for r in saved)
    assert_only_inside(tmp_path, person_dir)


def test_the_copy_listed_first_is_kept_whichever_finishes_first(web, tmp_path, monkeypatch):
    """A photo, an exact copy and a resized copy, listed in that order: the first is kept in two fresh runs
    whose timing is reversed, and a replaced file is deleted only once the manifest on disk no longer names it."""
    first_bytes = jpeg(photo(21, 128))
    small_bytes = jpeg(photo(21, 128).resize((90, 90)), quality=75)
    small_name = hashlib.sha256(small_bytes).hexdigest()[:16] + ".jpg"
    config = FetchConfig(**{**FAST, "read_timeout_s": 2.0})
    real_unlink = Path.unlink
    deleted: list[str] = []

    def checked_unlink(path, *args, **kwargs):
        if SAVED_NAME.match(path.name) and (path.parent / "manifest.csv").exists():
            on_disk = {row["file"] for row in read_csv(path.parent / "manifest.csv") if row["status"] == "saved"}
            assert path.name not in on_disk, "deleted a file the manifest on disk still names"
            deleted.append(path.name)
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", checked_unlink)
    results = []
    # Run 0 finishes last-listed first (small, then copy, then first); run 1 in the order they are listed.
    for run, delays in enumerate([(0.6, 0.3, 0.0), (0.0, 0.3, 0.6)]):
        urls = [web.add(f"/run{run}/first.jpg", first_bytes, delay=delays[0]),
                web.add(f"/run{run}/copy.jpg", first_bytes, delay=delays[1]),
                web.add(f"/run{run}/small.jpg", small_bytes, delay=delays[2])]
        person_dir = tmp_path / f"run{run}"
        summary = download_images([{"url": url} for url in urls], person_dir, config)
        rows = read_csv(person_dir / "manifest.csv")
        assert [row["url"] for row in rows] == urls  # candidate order
        first, copy, small = rows
        assert (first["status"], first["reason"]) == ("saved", "")
        assert first["file"].startswith(first["sha256"][:16])
        assert (copy["status"], copy["reason"], copy["file"]) == ("duplicate", f"duplicate_of: {first['file']}", "")
        assert small["status"] == "near_duplicate" and small["file"] == ""
        assert small["reason"].startswith(f"near_duplicate_of: {first['file']} (distance ")
        images = sorted(p.name for p in person_dir.iterdir() if SAVED_NAME.match(p.name))
        assert images == [first["file"]] and (person_dir / first["file"]).read_bytes() == first_bytes
        assert (summary["saved"], summary["duplicates"], summary["near_duplicates"]) == (1, 1, 1)
        assert summary["total_saved"] == 1
        results.append([(row["status"], row["reason"], row["file"]) for row in rows])
    assert results[0] == results[1]
    # In run 0 the resized copy was saved before the others arrived, then replaced (after the manifest said so).
    assert deleted == [small_name]


def test_rerun_replaces_an_earlier_runs_file_with_a_copy_listed_before_it(web, tmp_path):
    big = web.add("/big.jpg", jpeg(photo(22, 128)))
    big_copy = web.add("/big-copy.jpg", jpeg(photo(22, 128)))
    small = web.add("/small.jpg", jpeg(photo(22, 128).resize((90, 90)), quality=75))
    person_dir = tmp_path / "p"
    download_images([{"url": big}, {"url": big_copy}], person_dir, FetchConfig(**FAST))
    old_file = by_url(read_csv(person_dir / "manifest.csv"))[big]["file"]
    # The source now lists the resized copy first: it is kept, the earlier run's file gives way to it.
    summary = download_images([{"url": small}, {"url": big}, {"url": big_copy}], person_dir, FetchConfig(**FAST))
    rows = by_url(read_csv(person_dir / "manifest.csv"))
    assert summary["attempted"] == 1 and summary["saved"] == 1 and summary["total_saved"] == 1
    kept = rows[small]["file"]
    assert rows[small]["status"] == "saved" and kept != old_file
    for url in (big, big_copy):  # the earlier run's duplicate row follows its file's replacement
        assert rows[url]["status"] == "near_duplicate" and rows[url]["file"] == ""
        assert rows[url]["reason"].startswith(f"near_duplicate_of: {kept} (distance ")
    assert sorted(p.name for p in person_dir.iterdir() if SAVED_NAME.match(p.name)) == [kept]
    # A run stopped between writing the manifest and deleting the replaced file leaves it behind: the next
    # run deletes it (no row names it, and a near_duplicate row carries its bytes).
    (person_dir / old_file).write_bytes(jpeg(photo(22, 128)))
    again = download_images([{"url": small}, {"url": big}, {"url": big_copy}], person_dir, FetchConfig(**FAST))
    assert again["attempted"] == 0 and not (person_dir / old_file).exists()
    assert by_url(read_csv(person_dir / "manifest.csv")) == rows


def test_dedupe_decisions_do_not_depend_on_arrival_order(tmp_path):
    """Near duplicates do not chain: A~B and B~C but not A~C keeps A and C in every arrival order."""
    import itertools

    hashes = {"a": 0, "b": 0b1111, "c": 0b11111111}  # distances a-b 4, b-c 4, a-c 8 (threshold 6)
    outcomes = []
    for order in itertools.permutations("abc"):
        person_dir = tmp_path / "".join(order)
        person_dir.mkdir()
        dedupe = download.Dedupe(person_dir, [], threshold=6)
        rows = {}
        for key in order:  # as downloads complete: each judged against what is kept so far
            rows[key] = {"url": key, "sha256": key * 64, "phash": f"{hashes[key]:016x}", "file": ""}
            dedupe.add(rows[key], f"{key * 16}.jpg", key.encode() * 10)
        dedupe.settle([rows[key] for key in "abc"])  # the pool is done: candidate order decides
        dedupe.remove_replaced(rows.values())
        files = sorted(p.name for p in person_dir.iterdir())
        assert files == ["a" * 16 + ".jpg", "c" * 16 + ".jpg"] and (person_dir / files[1]).read_bytes() == b"c" * 10
        outcomes.append({key: (row["status"], row["reason"], row["file"]) for key, row in rows.items()})
    assert all(outcome == outcomes[0] for outcome in outcomes)
    assert outcomes[0]["b"] == ("near_duplicate", f"near_duplicate_of: {'a' * 16}.jpg (distance 4)", "")


def test_rerun_skips_finished_urls_and_dedupes_against_earlier_runs(web, tmp_path):
    first = [web.add(f"/p{i}.jpg", jpeg(photo(30 + i))) for i in range(3)]
    web.add("/gone.jpg", b"", status=410, content_type="text/plain")
    person_dir = tmp_path / "alice"
    download_images([{"url": url} for url in first + [web.url("/gone.jpg")]], person_dir, FetchConfig(**FAST))
    # Second run: the same URLs, a resized copy of p0 and a byte copy of p1 under new URLs, one new photo.
    near = web.add("/p0-small.jpg", jpeg(photo(30).resize((80, 80)), quality=80))
    exact = web.add("/p1-copy.jpg", jpeg(photo(31)))
    fresh = web.add("/new.jpg", jpeg(photo(40)))
    summary = download_images([{"url": url} for url in first + [web.url("/gone.jpg"), near, exact, fresh]],
                              person_dir, FetchConfig(**FAST))
    assert summary["skipped_finished"] == 4 and summary["attempted"] == 3
    assert all(web.hits[f"/p{i}.jpg"] == 1 for i in range(3)) and web.hits["/gone.jpg"] == 1
    rows = by_url(read_csv(person_dir / "manifest.csv"))
    assert [rows[u]["status"] for u in (near, exact, fresh)] == ["near_duplicate", "duplicate", "saved"]
    assert summary["total_saved"] == 4
    # The manifest's totals cover both runs (what a report after a resumed run must show).
    totals = download.manifest_counts(person_dir)
    assert totals == {"candidates": 7, "saved": 4, "duplicates": 1, "near_duplicates": 1, "rejected": 1,
                      "rejected_by_reason": {"http_410": 1}, "errors": 0, "errors_by_reason": {}}
    # overwrite=True starts over: every URL is fetched again.
    download_images([{"url": url} for url in first], person_dir, FetchConfig(**{**FAST, "overwrite": True}))
    assert all(web.hits[f"/p{i}.jpg"] == 2 for i in range(3))


def test_max_images_counts_the_whole_folder(web, tmp_path):
    urls = [web.add(f"/m{i}.jpg", jpeg(photo(50 + i))) for i in range(6)]
    config = FetchConfig(**{**FAST, "max_images": 2, "max_workers": 1})
    first = download_images([{"url": u} for u in urls], tmp_path / "p", config)
    again = download_images([{"url": u} for u in urls], tmp_path / "p", config)
    assert first["saved"] == 2 and again["saved"] == 0 and again["total_saved"] == 2
    more = download_images([{"url": u} for u in urls], tmp_path / "p", FetchConfig(**{**FAST, "max_images": 5}))
    assert more["saved"] == 3 and more["total_saved"] == 5


def test_per_host_cap_and_min_delay_hold(web, tmp_path):
    urls = [web.add(f"/c{i}.jpg", jpeg(photo(60 + i)), delay=0.15) for i in range(12)]
    config = FetchConfig(**{**FAST, "max_workers": 8, "per_host": 2, "read_timeout_s": 2.0})
    summary = download_images([{"url": u} for u in urls], tmp_path / "p", config)
    assert summary["saved"] == 12
    assert web.max_in_flight == 2  # never above the cap, and the pool did use it
    assert summary["max_in_flight_per_host"] == {"127.0.0.1": 2}
    assert set(web.user_agents) == {config.user_agent}


def test_min_delay_spaces_request_starts(web, tmp_path):
    urls = [web.add(f"/d{i}.jpg", jpeg(photo(100 + i))) for i in range(10)]
    config = FetchConfig(**{**FAST, "max_workers": 8, "per_host": 8, "min_delay_s": 0.05})
    assert download_images([{"url": u} for u in urls], tmp_path / "p", config)["saved"] == 10
    starts = sorted(t for path in web.starts for t in web.starts[path])
    # Judged over the whole run (single gaps jitter on a busy machine): 9 gaps of >= 50 ms each.
    assert starts[-1] - starts[0] >= 9 * 0.05 * 0.9


def test_interrupted_run_resumes_without_part_files(web, tmp_path, monkeypatch):
    urls = [web.add(f"/r{i}.jpg", jpeg(photo(70 + i))) for i in range(6)]
    person_dir = tmp_path / "bob"
    real_write = download.atomic_write_bytes
    writes = []

    def failing_write(path, data):
        if len(writes) == 3:
            raise RuntimeError("simulated crash after 3 downloads")
        writes.append(path)
        return real_write(path, data)

    monkeypatch.setattr(download, "atomic_write_bytes", failing_write)
    config = FetchConfig(**{**FAST, "flush_every": 100})  # only the final flush can have saved these rows
    with pytest.raises(RuntimeError, match="simulated crash"):
        download_images([{"url": u} for u in urls], person_dir, config)
    rows = read_csv(person_dir / "manifest.csv")
    assert [row["status"] for row in rows] == ["saved"] * 3
    first_saved = [row["url"].split(str(web.port))[1] for row in rows]  # results are taken as they complete
    (person_dir / ".deadbeefdeadbeef.jpg.abc123.part").write_bytes(b"half a file")  # as a hard kill leaves

    monkeypatch.setattr(download, "atomic_write_bytes", real_write)
    summary = download_images([{"url": u} for u in urls], person_dir, config)
    assert summary["skipped_finished"] == 3 and summary["saved"] == 3 and summary["total_saved"] == 6
    assert [web.hits[path] for path in first_saved] == [1, 1, 1]
    assert not list(person_dir.glob("*.part")) and not list(person_dir.glob(".*.part"))
    assert_only_inside(tmp_path, person_dir)


def test_killed_process_resumes(web, tmp_path):
    """SIGKILL a real run mid-way (no cleanup code runs), then resume in-process."""
    urls = [web.add(f"/k{i}.jpg", jpeg(photo(80 + i)), delay=0.25) for i in range(8)]
    person_dir = tmp_path / "carol"
    script = (
        "import json, sys\n"
        "from scraping.download import FetchConfig, download_images\n"
        "download_images([{'url': u} for u in json.loads(sys.argv[1])], sys.argv[2], FetchConfig(max_workers=1,"
        " per_host=1, min_delay_s=0, flush_every=1, progress=False, min_size=32, max_images=0, retries=0))\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script, json.dumps(urls), str(person_dir)])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = [r for r in read_csv(person_dir / "manifest.csv") if r["status"] == "saved"]
            if len(done) >= 2:
                break
            assert process.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=10)
    done = {row["url"] for row in read_csv(person_dir / "manifest.csv") if row["status"] == "saved"}
    assert 2 <= len(done) < len(urls)

    summary = download_images([{"url": u} for u in urls], person_dir, FetchConfig(**FAST))
    assert summary["total_saved"] == 8 and summary["duplicates"] == 0
    assert all(web.hits[url.split(str(web.port))[1]] == 1 for url in done)
    rows = read_csv(person_dir / "manifest.csv")
    assert sorted(row["url"] for row in rows) == sorted(urls) and {row["status"] for row in rows} == {"saved"}
    assert not list(person_dir.glob(".*.part"))
    assert_only_inside(tmp_path, person_dir)


# ----------------------------------------------------------------------------------------------------------------
# fetch_person and the CLI
# ----------------------------------------------------------------------------------------------------------------
def test_cli_fetch_from_a_gallery_page(web, tmp_path):
    for i in range(3):
        web.add(f"/full/{i}.jpg", jpeg(photo(90 + i)))
        web.add(f"/thumb/{i}.jpg", jpeg(photo(90 + i).resize((40, 40))))
    links = "".join(f'<a href="../full/{i}.jpg"><img src="/thumb/{i}.jpg" alt="photo {i}"></a>' for i in range(3))
    web.add("/people/gallery.html", f"<html><body>{links}</body></html>".encode(), content_type="text/html")
    web.add("/robots.txt", b"User-agent: *\nDisallow: /private/\n", content_type="text/plain")

    parser = argparse.ArgumentParser()
    download.cli_add_arguments(parser)
    out = tmp_path / "raw"
    args = parser.parse_args(["--person", "Julia Roberts", "--source", "page", "--url", web.url("/people/gallery.html"),
                              "--out", str(out), "--set", "progress=false", "--set", "min_size=32"])
    summary = download.cli_run(args)
    json.dumps(summary)  # the CLI prints it as one JSON line
    assert summary["candidates"] == 3 and summary["saved"] == 3 and summary["pages_fetched"] == 1
    rows = read_csv(out / "julia_roberts" / "manifest.csv")
    assert [row["url"] for row in rows] == [web.url(f"/full/{i}.jpg") for i in range(3)]
    assert {row["page"] for row in rows} == {web.url("/people/gallery.html")}
    assert [row["title"] for row in rows] == ["photo 0", "photo 1", "photo 2"]
    assert json.loads((out / "julia_roberts" / "fetch_config.json").read_text())["min_size"] == 32
    with pytest.raises(ValueError, match="unknown FetchConfig"):
        download.cli_run(parser.parse_args(["--person", "x", "--source", "page", "--url", web.url("/"),
                                            "--out", str(out), "--set", "per_hots=3"]))


def test_fetch_person_from_wikimedia_api(web, tmp_path):
    web.add("/img/a.jpg", jpeg(photo(95)))
    answer = {"batchcomplete": True, "query": {"pages": [{
        "pageid": 1, "ns": 6, "title": "File:Ada Lovelace portrait.jpg", "index": 1,
        "imageinfo": [{"url": web.url("/img/a-original.jpg"), "thumburl": web.url("/img/a.jpg"), "mime": "image/jpeg",
                       "descriptionurl": "https://commons.wikimedia.org/wiki/File:Ada_Lovelace_portrait.jpg",
                       "extmetadata": {"Artist": {"value": '<a href="//x">Alfred  Chalon</a>'},
                                       "LicenseShortName": {"value": "Public domain"}}}]}]}}
    web.add("/w/api.php", json.dumps(answer).encode(), content_type="application/json")
    config = FetchConfig(**{**FAST, "user_agent": "test-suite/1.0 (test@example.org)"})
    summary = fetch_person("Ada Lovelace", "wikimedia", tmp_path, config, api_url=web.url("/w/api.php"))
    assert summary["saved"] == 1 and summary["api_requests"] == 1
    row = read_csv(tmp_path / "ada_lovelace" / "manifest.csv")[0]
    assert (row["author"], row["license"], row["title"]) == ("Alfred Chalon", "Public domain", "Ada Lovelace portrait")
    assert web.user_agents[0] == "test-suite/1.0 (test@example.org)"
    api_path = next(path for path in web.hits if path.startswith("/w/api.php"))
    assert "gsrsearch=Ada+Lovelace" in api_path and "gsrnamespace=6" in api_path


def test_connection_refused_is_retried_then_recorded_as_error(tmp_path):
    import socket

    with socket.socket() as probe:  # a port nobody listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.jpg"
    person_dir = tmp_path / "p"
    summary = download_images([{"url": url}], person_dir, FetchConfig(**{**FAST, "retries": 2}))
    row = read_csv(person_dir / "manifest.csv")[0]
    assert (row["status"], row["reason"]) == ("error", "connection_error: after 3 attempts")
    assert summary["errors_by_reason"] == {"connection_error": 1}
    # `error` rows are transient: the next run tries the URL again instead of skipping it.
    again = download_images([{"url": url}], person_dir, FetchConfig(**FAST))
    assert again["skipped_finished"] == 0 and again["attempted"] == 1
