"""Benchmark: the polite concurrent downloader (`scraping.download.download_images`) vs a plain sequential
`requests` loop, against loopback servers that add 200 ms latency to every request.

Setup: one `ThreadingHTTPServer` per loopback address (127.0.0.1 .. 127.0.0.4, i.e. four "hosts"), each sleeping
200 ms before answering and counting the most connections it ever serves at once. The photos are the first N
(default 64, sorted by name) real in-the-wild CelebA JPEGs from `<project root>/../shared/data/celeba_wild_dev/images`
(override the folder's parent with SHARED_DATA); if that folder is missing, generated JPEGs are used and the
output says so. Photos are spread round-robin over the four hosts.

- sequential: `requests.Session().get` each URL in turn and write the bytes to a file (no checks at all).
- concurrent: `download_images` with the default `FetchConfig` (max_workers=16, per_host=4, min_delay_s=0.05,
  i.e. at most 4 connections and 20 request starts per second per host), which also decodes, checks, hashes,
  dedupes and writes a manifest.

Prints one JSON line: sequential_s, concurrent_s, speedup, per_host_cap, max_concurrent_seen (highest number of
simultaneous connections any one server saw during the concurrent run), images, hosts, saved, data.
Usage: `python benchmarks/bench_scraper.py [--images 64] [--latency 0.2]`.
"""
from __future__ import annotations

import argparse
import io
import os
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from scraping.download import FetchConfig, download_images
from reporting import report

ROOT = Path(__file__).resolve().parents[1]
HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]


class LatencyServer:
    """Serves `files[path]` after `latency` seconds; tracks the peak number of requests being served at once."""

    def __init__(self, host: str, files: dict[str, bytes], latency: float):
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(latency)
                    body = files.get(self.path)
                    self.send_response(200 if body is not None else 404)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(body or b"")))
                    self.end_headers()
                    self.wfile.write(body or b"")
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def reset(self) -> None:
        with self.lock:
            self.max_in_flight = 0

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def load_photos(count: int) -> tuple[list[bytes], str]:
    shared = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared"))
    folder = shared / "data" / "celeba_wild_dev" / "images"
    paths = sorted(folder.glob("*.jpg"))[:count] if folder.is_dir() else []
    if len(paths) == count:
        return [path.read_bytes() for path in paths], "celeba_wild_dev"
    import numpy as np
    from PIL import Image

    photos = []
    for seed in range(count):  # fallback: smooth random colour fields, distinct enough not to be near duplicates
        rng = np.random.default_rng(seed)
        image = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((400, 400), Image.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        photos.append(buffer.getvalue())
    return photos, "generated (shared photos not found)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds each server waits before answering")
    args = parser.parse_args()

    photos, data = load_photos(args.images)
    files_per_host: list[dict[str, bytes]] = [{} for _ in HOSTS]
    for i, photo in enumerate(photos):
        files_per_host[i % len(HOSTS)][f"/photos/{i:03d}.jpg"] = photo
    servers = [LatencyServer(host, files, args.latency) for host, files in zip(HOSTS, files_per_host)]
    urls = [f"{servers[i % len(HOSTS)].base}/photos/{i:03d}.jpg" for i in range(len(photos))]
    config = FetchConfig(progress=False, max_images=0, min_size=32)

    try:
        with tempfile.TemporaryDirectory(prefix="bench_scraper_") as tmp:
            sequential_dir = Path(tmp) / "sequential"
            sequential_dir.mkdir()
            started = time.perf_counter()
            with requests.Session() as session:
                for i, url in enumerate(urls):
                    response = session.get(url, timeout=(5, 20))
                    response.raise_for_status()
                    (sequential_dir / f"{i:03d}.jpg").write_bytes(response.content)
            sequential_s = time.perf_counter() - started

            for server in servers:
                server.reset()
            started = time.perf_counter()
            summary = download_images([{"url": url} for url in urls], Path(tmp) / "concurrent", config)
            concurrent_s = time.perf_counter() - started
    finally:
        for server in servers:
            server.close()

    report("scraper", {
        "sequential_s": round(sequential_s, 3),
        "concurrent_s": round(concurrent_s, 3),
        "speedup": round(sequential_s / concurrent_s, 2),
        "per_host_cap": config.per_host,
        "min_delay_s": config.min_delay_s,
        "max_concurrent_seen": max(server.max_in_flight for server in servers),
        "images": len(urls),
        "hosts": len(HOSTS),
        "saved": summary["saved"],
        "duplicates": summary["duplicates"] + summary["near_duplicates"],
        "data": data,
        "latency_s": args.latency,
    })


if __name__ == "__main__":
    main()
