"""The polite downloader every source feeds: fetch candidate images, check them, dedupe, save, keep a manifest.

Kept images are named `<first 16 hex of sha256><ext>`; of exact and near (pHash) duplicates the copy listed first
wins. `<out>/<person slug>/manifest.csv` lists every URL with a status; a rerun skips finished rows, retries `error`.
"""
from __future__ import annotations

import argparse
import email.utils
import hashlib
import io
import re
import socket
import threading
import time
import warnings
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Mapping, NamedTuple
from urllib.parse import urldefrag, urljoin, urlsplit

import numpy as np
import requests
from PIL import Image, ImageFile, UnidentifiedImageError
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ReadTimeoutError

from common.config import apply_overrides, parse_set_options, save_config
from common.errors import InputError
from common.files import atomic_write_bytes, read_csv, slugify, write_csv_atomic
from .sources import (WIKIMEDIA_API, Candidate, PageFetchError, RobotsPolicy, gallery_candidates, is_http_url,
                      search_candidates, wikimedia_candidates)

MANIFEST_NAME, CONFIG_NAME = "manifest.csv", "fetch_config.json"
MANIFEST_FIELDS = ["url", "page", "title", "license", "author", "sha256", "phash", "width", "height", "file",
                   "status", "reason"]
FINAL_STATUSES = {"saved", "duplicate", "near_duplicate", "rejected"}  # a rerun skips these; `error` is retried
RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}  # transient (RFC 9110); every other 4xx is permanent
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
# Formats kept and their extensions; Pillow tries only these parsers on untrusted bytes (MPO: multi-picture JPEG).
FORMAT_EXTENSIONS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp",
                     "TIFF": ".tif"}
OPEN_FORMATS = [name for name in FORMAT_EXTENSIONS if name != "MPO"]
SAVED_NAME = re.compile(r"^[0-9a-f]{16}\.(jpg|png|webp|gif|bmp|tif)$")
DEFAULT_USER_AGENT = ("faces-start-to-finish/0.1 (tutorial image scraper; please set FetchConfig.user_agent to name "
                      "your project and a contact address) python-requests/" + requests.__version__)


@dataclass
class FetchConfig:
    """Settings for `fetch_person` / `download_images` (CLI: `--set key=value`)."""

    user_agent: str = DEFAULT_USER_AGENT  # who is asking; Wikimedia requires a descriptive one with contact info
    max_workers: int = 16  # download threads in total (across hosts)
    per_host: int = 4  # at most this many requests in flight to one host name at a time
    min_delay_s: float = 0.05  # at least this long between request starts to the same host (<= 20 req/s/host)
    connect_timeout_s: float = 5.0  # seconds to open a TCP/TLS connection
    read_timeout_s: float = 20.0  # seconds of silence allowed while waiting for headers or body bytes
    max_seconds_per_request: float = 60.0  # wall-clock cap for one request, headers and body (stops drip-feeds)
    max_bytes: int = 15_000_000  # byte cap per response (images and pages), checked while streaming
    max_pixels: int = 50_000_000  # width*height above this is a decompression bomb (Pillow's guard is set to it)
    min_size: int = 64  # minimum width and height in pixels of a kept image
    retries: int = 3  # extra attempts after a connection error, timeout, 429 or 5xx
    backoff_s: float = 0.5  # wait before the first retry; doubles for each further retry
    max_wait_s: float = 60.0  # cap on any single wait (backoff or Retry-After)
    max_redirects: int = 5  # redirects followed per URL before giving up
    phash_threshold: int = 6  # Hamming distance (of 64 bits) at or below which two images are near duplicates
    max_images: int = 200  # stop once the person's folder holds this many saved images (0 = no limit)
    max_pages: int = 5  # gallery pages / search result pages / API requests read per source
    thumb_width: int = 960  # Wikimedia: download a thumbnail this wide (a standard Commons width); 0 = originals
    respect_robots: bool = True  # honour robots.txt for HTML pages (gallery and search pages)
    # robots.txt that cannot be read (5xx, 429, no answer): "disallow" the site (RFC 9309) or "allow" it anyway.
    robots_unreachable: str = "disallow"
    flush_every: int = 10  # rewrite manifest.csv after this many results (and always at the end)
    flush_interval_s: float = 5.0  # ... and at least this often (seconds) while new results arrive
    overwrite: bool = False  # ignore the existing manifest and fetch every candidate again
    progress: bool = True  # show a tqdm progress bar


class FetchFailure(PageFetchError):
    """A URL could not be fetched: `status` "rejected" or "error" (retried next run), `reason` a token;
    `note` (e.g. "Connection refused") goes into the message, not into `reason_text` (the manifest's)."""

    def __init__(self, status: str, reason: str, detail: str = "", note: str = ""):
        self.status, self.reason, self.detail = status, reason, detail
        self.reason_text = f"{reason}: {detail}" if detail else reason
        super().__init__(f"{self.reason_text} ({note})" if note else self.reason_text)


class FetchStopped(FetchFailure):
    """The client was stopped (Ctrl-C, or the run has what it needs) while this request waited or ran."""

    def __init__(self) -> None:
        super().__init__("error", "interrupted")


class _Attempt:
    """One request under watch. A read timeout limits each silence, not a response, so `cut` (by the deadline
    timer or `PoliteClient.stop`) shuts its socket down: a read blocked on drip-fed headers or body returns."""

    def __init__(self, seconds: float):
        self.seconds, self.deadline = seconds, time.monotonic() + seconds
        self.lock, self.sock, self.why = threading.Lock(), None, ""

    def attach(self, sock) -> None:
        with self.lock:
            self.sock = sock
        if self.why:
            self.cut(self.why)

    def cut(self, why: str) -> None:
        with self.lock:
            self.why = self.why or why
            sock = getattr(self.sock, "socket", self.sock)  # urllib3's SSLTransport (TLS in TLS) wraps the socket
            with suppress(OSError, TypeError):  # the plain socket's shutdown: an SSLSocket's own drops TLS state
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def check(self) -> None:
        """Raise if cut or past the deadline (an EOF caused by a cut reads like a normal end of headers or body)."""
        if self.why == "stopped":
            raise FetchStopped()
        if self.why or time.monotonic() > self.deadline:
            raise FetchFailure("error", "too_slow", f"over {self.seconds:g} s")


_current = threading.local()  # .attempt: the `_Attempt` this thread runs


class _ReportsSocket:
    """urllib3 connection mixin: before waiting for the headers, hand the socket to the thread's attempt."""

    def getresponse(self, *args, **kwargs):
        if getattr(_current, "attempt", None) is not None and self.sock is not None:
            _current.attempt.attach(self.sock)
        return super().getresponse(*args, **kwargs)


class _Adapter(HTTPAdapter):
    """Connection pools (`ConnectionCls`, urllib3's documented hook) whose connections report their socket."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        pools = {"http": (HTTPConnectionPool, HTTPConnection), "https": (HTTPSConnectionPool, HTTPSConnection)}
        self.poolmanager.pool_classes_by_scheme = {
            scheme: type(pool.__name__, (pool,), {"ConnectionCls": type(conn.__name__, (_ReportsSocket, conn), {})})
            for scheme, (pool, conn) in pools.items()}


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date); None if absent/invalid."""
    value = (value or "").strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def _is_read_timeout(exc: BaseException) -> bool:
    # requests reports a timeout while streaming a body as a ConnectionError wrapping urllib3's error
    return isinstance(exc, requests.Timeout) or bool(exc.args) and isinstance(exc.args[0], ReadTimeoutError)


def _short_cause(exc: BaseException) -> str:
    """"Connection refused", "Name or service not known", ... from requests' long nested error messages."""
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)|(Read timed out|Connection aborted|Remote end closed "
                      r"connection without response)", str(exc))
    return (match.group(1) or match.group(2)).strip() if match else type(exc).__name__


def _check_scheme(url: str) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchFailure("rejected", "unsupported_scheme", scheme or "none")
    if not is_http_url(url):
        raise FetchFailure("rejected", "invalid_url", "no host")


class PoliteClient:
    """HTTP GETs with the politeness rules of `FetchConfig`. `stop()` cuts every request in flight and makes later
    requests and waits raise `FetchStopped` until `reset()`."""

    def __init__(self, config: FetchConfig):
        self.config, self.session = config, requests.Session()
        self.session.headers["User-Agent"] = config.user_agent
        adapter = _Adapter(pool_connections=max(10, config.max_workers), pool_maxsize=max(1, config.max_workers),
                           max_retries=0)  # retries are ours
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.stop_event, self._lock, self._attempts = threading.Event(), threading.Lock(), set()
        self._slots: dict[str, threading.Semaphore] = {}  # per host: `per_host` requests in flight at most
        self._next_start: dict[str, float] = {}  # per host: the earliest next request start
        self._in_flight: Counter = Counter()
        self.max_in_flight: dict[str, int] = {}  # per host: the peak concurrency seen

    def close(self) -> None:
        self.session.close()

    def stop(self) -> None:
        self.stop_event.set()
        with self._lock:
            for attempt in self._attempts:
                attempt.cut("stopped")

    def reset(self) -> None:
        self.stop_event.clear()

    @contextmanager
    def _host_slot(self, host: str) -> Iterator[None]:
        """Hold one of the host's `per_host` slots, starting at least `min_delay_s` after its previous start."""
        with self._lock:
            slots = self._slots.setdefault(host, threading.Semaphore(max(1, self.config.per_host)))
        while not slots.acquire(timeout=0.1):
            if self.stop_event.is_set():
                raise FetchStopped()
        try:
            with self._lock:
                now = time.monotonic()
                start = max(now, self._next_start.get(host, 0.0))
                self._next_start[host] = start + self.config.min_delay_s
            if self.stop_event.wait(start - now):
                raise FetchStopped()
            with self._lock:
                self._in_flight[host] += 1
                self.max_in_flight[host] = max(self.max_in_flight.get(host, 0), self._in_flight[host])
            try:
                yield
            finally:
                with self._lock:
                    self._in_flight[host] -= 1
        finally:
            slots.release()

    def fetch(self, url: str) -> tuple[int, bytes, Mapping[str, str]]:
        """GET `url` following redirects by hand: (status, body (empty unless 2xx), headers). Raises `FetchFailure`."""
        _check_scheme(url)
        visited = {url}
        for _ in range(self.config.max_redirects + 1):
            status, body, headers = self._get_with_retries(url)
            if status not in REDIRECT_STATUSES or not headers.get("Location"):
                return status, body, headers
            url = urldefrag(urljoin(url, headers["Location"].strip()))[0]
            _check_scheme(url)
            if url in visited:
                raise FetchFailure("rejected", "redirect_loop", url)
            visited.add(url)
        raise FetchFailure("rejected", "too_many_redirects", f"more than {self.config.max_redirects}")

    def fetch_text(self, url: str) -> tuple[int, str]:
        """`FetchText` for `scraping.sources`: (HTTP status, body text)."""
        status, body, headers = self.fetch(url)
        charset = re.search(r"charset=([\w.:-]+)", headers.get("Content-Type", ""), re.I)
        try:
            return status, body.decode(charset.group(1) if charset else "utf-8", errors="replace")
        except LookupError:  # an unknown charset name
            return status, body.decode("utf-8", errors="replace")

    def _get_with_retries(self, url: str) -> tuple[int, bytes, Mapping[str, str]]:
        config, host = self.config, (urlsplit(url).hostname or "").lower()
        for attempt in range(config.retries + 1):
            wait_s, note, truncated = config.backoff_s * 2**attempt, "", ""
            try:
                status, body, headers = self._request(url, host)
            except FetchFailure as exc:
                if exc.reason != "truncated":
                    raise
                reason, truncated = "truncated", exc.detail
            except ValueError as exc:  # requests' InvalidURL and its kin
                raise FetchFailure("rejected", "invalid_url", str(exc)[:200]) from exc
            except (requests.RequestException, OSError) as exc:  # OSError: a socket error requests did not wrap
                reason, note = ("timeout" if _is_read_timeout(exc) else "connection_error"), _short_cause(exc)
            else:
                if status not in RETRY_STATUSES:
                    return status, body, headers
                reason, retry_after = f"http_{status}", parse_retry_after(headers.get("Retry-After"))
                wait_s = wait_s if retry_after is None else retry_after
                if status in (429, 503):  # the host asked everyone to slow down, not just this thread
                    with self._lock:
                        self._next_start[host] = max(self._next_start.get(host, 0.0),
                                                     time.monotonic() + min(wait_s, config.max_wait_s))
            if attempt < config.retries and self.stop_event.wait(min(wait_s, config.max_wait_s)):
                raise FetchStopped()
        attempts = f"after {config.retries + 1} attempt{'s' if config.retries else ''}"
        if truncated:  # cut short every time: permanent for this URL (`overwrite` tries again)
            raise FetchFailure("rejected", "truncated", f"{truncated} ({attempts})")
        raise FetchFailure("error", reason, attempts, note)

    def _request(self, url: str, host: str) -> tuple[int, bytes, Mapping[str, str]]:
        """One attempt, holding a host slot until the body is read, cut at `max_seconds_per_request`."""
        config, max_bytes = self.config, self.config.max_bytes
        timeout = (config.connect_timeout_s, min(config.read_timeout_s, config.max_seconds_per_request))
        with self._host_slot(host):
            attempt = _current.attempt = _Attempt(config.max_seconds_per_request)
            with self._lock:
                self._attempts.add(attempt)
            if self.stop_event.is_set():
                attempt.cut("stopped")
            timer = threading.Timer(attempt.seconds, attempt.cut, ("too_slow",))
            timer.daemon = True
            timer.start()
            try:
                attempt.check()
                with self.session.get(url, stream=True, allow_redirects=False, timeout=timeout) as response:
                    attempt.check()
                    if not 200 <= response.status_code < 300:
                        return response.status_code, b"", response.headers  # error and redirect bodies are unread
                    declared = response.headers.get("Content-Length", "").strip()
                    declared = int(declared) if declared.isdigit() else 0
                    if declared > max_bytes:
                        raise FetchFailure("rejected", "too_large", f"Content-Length {declared} > {max_bytes}")
                    body = bytearray()
                    try:
                        for chunk in response.iter_content(chunk_size=16 * 1024):
                            body += chunk
                            if len(body) > max_bytes:
                                raise FetchFailure("rejected", "too_large", f"more than {max_bytes} bytes streamed")
                            attempt.check()
                    except requests.RequestException as exc:
                        got = response.raw.tell()  # bytes that came over the wire, a short last read included
                        if got < declared and not attempt.why and not _is_read_timeout(exc):
                            raise FetchFailure("rejected", "truncated", f"got {got} of {declared} bytes") from exc
                        raise
                    attempt.check()  # the EOF that ended the body may be the cut, not the end
                    return response.status_code, bytes(body), response.headers
            except (requests.RequestException, OSError):
                attempt.check()  # a cut, not the network, may have ended it
                raise
            finally:
                _current.attempt = None
                timer.cancel()
                attempt.attach(None)
                with self._lock:
                    self._attempts.discard(attempt)


class ImageRejected(Exception):
    """Bytes that are not a usable photo; `reason` is a manifest reason token."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


ImageCheck = NamedTuple("ImageCheck", [("format", str), ("extension", str), ("width", int), ("height", int),
                                        ("phash", int)])

_K = np.arange(32)
_DCT32 = np.sqrt(2 / 32) * np.cos(np.pi * (2 * _K[None, :] + 1) * _K[:, None] / 64)  # orthonormal DCT-II matrix
_DCT32[0] /= np.sqrt(2)


def perceptual_hash(image: Image.Image) -> int:
    """64-bit DCT perceptual hash (pHash): grey 32x32, 2-D DCT, the 8x8 lowest frequencies above their median."""
    grey = image.convert("L").resize((32, 32), Image.Resampling.LANCZOS, reducing_gap=3.0)
    low = (_DCT32 @ np.asarray(grey, dtype=np.float64) @ _DCT32.T)[:8, :8]
    return int(np.packbits((low > np.median(low)).ravel()).tobytes().hex(), 16)


def hamming_distance(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes."""
    return (a ^ b).bit_count()


def inspect_image(data: bytes, *, min_size: int = 64, max_pixels: int = 50_000_000) -> ImageCheck:
    """Check that `data` is a complete raster photo of at least `min_size` px per side (pixel count checked before
    decoding) and hash it. Raises `ImageRejected` (empty, not_an_image, decompression_bomb, too_small, truncated,
    corrupt)."""
    if not data:
        raise ImageRejected("empty")
    try:
        with Image.open(io.BytesIO(data), formats=OPEN_FORMATS) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageRejected("decompression_bomb", f"{width}x{height} > {max_pixels} pixels")
            if width < min_size or height < min_size:
                raise ImageRejected("too_small", f"{width}x{height} < {min_size}")
            image.load()  # decodes everything: a truncated file raises here
            return ImageCheck(image.format, FORMAT_EXTENSIONS[image.format], width, height, perceptual_hash(image))
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)  # Pillow's message quotes its own threshold
        size = re.search(r"\((\d+) pixels\)", str(exc))
        detail = f"{size.group(1)} pixels > {limit} pixels" if size else f"more than {limit} pixels"
        raise ImageRejected("decompression_bomb", detail) from exc
    except UnidentifiedImageError as exc:
        raise ImageRejected("not_an_image") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError) as exc:  # Pillow's zoo
        raise ImageRejected("truncated" if "truncated" in str(exc).lower() else "corrupt", str(exc)[:120]) from exc


@contextmanager
def pillow_bomb_guard(max_pixels: int) -> Iterator[None]:
    """Within the block Pillow's `MAX_IMAGE_PIXELS` is `max_pixels`, its bomb warning an error, truncated files
    refused (process-wide, so worker threads see it)."""
    old = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = max_pixels, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = old


def fetch_and_check(client: PoliteClient, candidate: Candidate, config: FetchConfig) -> tuple[dict, bytes, str]:
    """Download and check one candidate (never raises): its manifest row (status "ok" for a usable image), the
    bytes and the file name they would get."""
    row = dict(url=candidate.url, page=candidate.page, title=candidate.title, license=candidate.license,
               author=candidate.author, sha256="", phash="", width="", height="", file="", status="ok", reason="")
    try:
        status, body, _ = client.fetch(candidate.url)
        if status != 200:
            return {**row, "status": "rejected", "reason": f"http_{status}"}, b"", ""
        row["sha256"] = hashlib.sha256(body).hexdigest()
        check = inspect_image(body, min_size=config.min_size, max_pixels=config.max_pixels)
        row.update(phash=f"{check.phash:016x}", width=str(check.width), height=str(check.height))
        return row, body, row["sha256"][:16] + check.extension
    except FetchFailure as exc:
        return {**row, "status": exc.status, "reason": exc.reason_text}, b"", ""
    except ImageRejected as exc:
        return {**row, "status": "rejected", "reason": str(exc)}, b"", ""
    except Exception as exc:  # one odd URL must not end the run; the row says what happened
        return {**row, "status": "error", "reason": f"unexpected: {type(exc).__name__}: {str(exc)[:160]}"}, b"", ""


def _is_image(row: Mapping[str, str]) -> bool:
    return row.get("status") in ("saved", "duplicate", "near_duplicate") and bool(row.get("sha256"))


class Dedupe:
    """Which copy of each photo a folder keeps: a `duplicate` (same sha256) or `near_duplicate` (pHash within
    `threshold` bits of the nearest kept) of a kept image, else `saved`. `add` judges a download at once; `settle`
    redoes every decision in candidate order. Rows are updated in place."""

    def __init__(self, person_dir: Path, saved: Iterable[dict[str, str]], threshold: int = 6, overwrite=False):
        self.person_dir, self.threshold, self.overwrite = person_dir, threshold, overwrite
        self.spare: dict[str, tuple[str, bytes]] = {}  # this run's images not kept (yet): sha256 -> (name, bytes)
        self.by_sha, self.hashes = {}, []  # what is kept: sha256 -> file; [(pHash, file)]
        for row in saved:
            self._keep(row)

    def _keep(self, row: dict[str, str]) -> None:
        self.by_sha.setdefault(row["sha256"], row["file"])
        if row.get("phash"):
            self.hashes.append((int(row["phash"], 16), row["file"]))

    def _judge(self, row: Mapping[str, str], threshold: int | None = None) -> tuple[str, str]:
        if row["sha256"] in self.by_sha:
            return "duplicate", f"duplicate_of: {self.by_sha[row['sha256']]}"
        if row.get("phash") and self.hashes:  # the first kept of equally near ones
            phash = int(row["phash"], 16)
            distance, _, name = min((hamming_distance(phash, h), k, name) for k, (h, name) in enumerate(self.hashes))
            if distance <= (self.threshold if threshold is None else threshold):
                return "near_duplicate", f"near_duplicate_of: {name} (distance {distance})"
        return "saved", ""

    def _write(self, name: str, data: bytes) -> None:
        if self.overwrite or not (self.person_dir / name).exists():
            atomic_write_bytes(self.person_dir / name, data)

    def add(self, row: dict[str, str], name: str, data: bytes) -> None:
        """Judge this run's download `row` (bytes `data`, file `name` if kept) against what is kept so far."""
        row["status"], row["reason"] = self._judge(row)
        if row["status"] == "saved":
            self._write(name, data)
            row["file"] = name
            self._keep(row)
        else:
            self.spare.setdefault(row["sha256"], (name, data))

    def settle(self, ranked: Iterable[dict[str, str]]) -> None:
        """Redo the decisions for manifest rows `ranked` in that order; an earlier run's duplicate has no bytes
        and stays a near duplicate of the nearest kept image."""
        self.by_sha, self.hashes = {}, []
        for row in filter(_is_image, ranked):
            (status, reason), name = self._judge(row), row["file"]
            if status == "saved" and row["status"] != "saved":
                if row["sha256"] in self.spare:
                    name, data = self.spare[row["sha256"]]
                    self._write(name, data)
                else:  # no bytes: near the nearest kept image, or left as it was when none is kept
                    status, reason = self._judge(row, threshold=64)
                    if status == "saved":
                        continue
            row.update(status=status, reason=reason, file=name if status == "saved" else "")
            if status == "saved":
                self._keep(row)

    def remove_replaced(self, rows: Iterable[Mapping[str, str]]) -> None:
        """Delete the files of copies that one listed earlier replaced, once the manifest on disk says so."""
        rows = list(rows)
        named = {row["file"] for row in rows if row.get("status") == "saved"}
        demoted = {row["sha256"][:16] for row in filter(_is_image, rows) if row["status"] != "saved"}
        for path in sorted(self.person_dir.iterdir()):
            if SAVED_NAME.match(path.name) and path.name not in named and path.name[:16] in demoted:
                path.unlink(missing_ok=True)


def _counts(rows: list[Mapping[str, str]]) -> dict:
    """saved, duplicates, near_duplicates, rejected(_by_reason), errors(_by_reason) over manifest rows."""
    statuses = Counter(row.get("status", "") for row in rows)
    counts = {"saved": statuses["saved"], "duplicates": statuses["duplicate"],
              "near_duplicates": statuses["near_duplicate"]}
    for status, key in (("rejected", "rejected"), ("error", "errors")):
        tokens = (row["reason"].split(":", 1)[0].strip() or "unknown" for row in rows if row.get("status") == status)
        counts.update({key: statuses[status], f"{key}_by_reason": dict(sorted(Counter(tokens).items()))})
    return counts


def download_images(records: Iterable[Candidate | Mapping], person_dir: str | Path, config: FetchConfig | None = None,
                    *, client: PoliteClient | None = None) -> dict:
    """Download candidates into `person_dir`, deduping against it, and keep `person_dir/manifest.csv` current.
    On Ctrl-C or any other exception the manifest of what finished is written and the exception propagates.

    records: `Candidate`s (or dicts with url, page, title, license, author); repeated URLs count once.
    client: reuse an open `PoliteClient` (its per-host limits then span page and image requests).
    Returns a summary: candidates, skipped_finished, attempted, saved, duplicates, near_duplicates,
    rejected(_by_reason), errors(_by_reason), total_saved, max_in_flight_per_host, elapsed_s, folder, manifest.
    """
    config, person_dir, started = config or FetchConfig(), Path(person_dir), time.monotonic()
    person_dir.mkdir(parents=True, exist_ok=True)
    for path in person_dir.glob(".*.part"):  # temp files of atomic writes that a killed run left behind
        path.unlink(missing_ok=True)
    save_config(config, person_dir / CONFIG_NAME)
    manifest = person_dir / MANIFEST_NAME
    rows = {row["url"]: row for row in ([] if config.overwrite else read_csv(manifest)) if row.get("url")}
    candidates: dict[str, Candidate] = {}
    for record in records:
        c = record if isinstance(record, Candidate) else Candidate(
            **{key: str(record.get(key) or "") for key in ("url", "page", "title", "license", "author")})
        candidates.setdefault(c.url, c)
    todo = [c for url, c in candidates.items() if rows.get(url, {}).get("status") not in FINAL_STATUSES]
    order = list(rows) + [url for url in candidates if url not in rows]  # earlier rows, then candidate order
    position = {url: i for i, url in enumerate(candidates)}
    dedupe = Dedupe(person_dir, [row for row in rows.values() if _is_image(row) and row["status"] == "saved"],
                    config.phash_threshold, config.overwrite)
    attempted: list[str] = []

    def full() -> bool:
        return bool(config.max_images) and sum(row["status"] == "saved" for row in rows.values()) >= config.max_images

    def flush() -> None:
        write_csv_atomic(manifest, (rows[url] for url in order if url in rows), MANIFEST_FIELDS)

    own_client, client = client is None, client or PoliteClient(config)
    executor = ThreadPoolExecutor(max_workers=max(1, config.max_workers), thread_name_prefix="fetch")
    pending: dict = {}  # future -> candidate position; a bounded window, so little runs past max_images
    queue = iter(todo)
    bar = tqdm(total=len(todo), desc=f"fetch {person_dir.name}", unit="img", disable=not config.progress)
    unflushed, last_flush, aborted = 0, time.monotonic(), False
    try:
        with pillow_bomb_guard(config.max_pixels):
            while not full():
                for c in queue:
                    pending[executor.submit(fetch_and_check, client, c, config)] = position[c.url]
                    if len(pending) >= 2 * max(1, config.max_workers):
                        break
                if not pending:
                    break
                # wake in time for the interval flush when rows wait for it
                timeout = max(0.05, config.flush_interval_s - (time.monotonic() - last_flush)) if unflushed else 1.0
                done, _ = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=pending.pop):
                    if full():  # one finished after the limit is not recorded: a later run may take it
                        continue
                    row, data, name = future.result()
                    if row["status"] == "ok":
                        dedupe.add(row, name, data)
                    rows[row["url"]] = row
                    attempted.append(row["url"])
                    unflushed += 1
                    bar.update(1)
                if unflushed and (unflushed >= config.flush_every
                                  or time.monotonic() - last_flush >= config.flush_interval_s):
                    flush()
                    unflushed, last_flush = 0, time.monotonic()
        dedupe.settle(sorted(rows.values(), key=lambda row: (row["url"] in position, position.get(row["url"], 0))))
    except BaseException:
        aborted = True
        raise
    finally:
        running = [future for future in pending if not future.cancel()]
        if running:
            client.stop()  # cut the requests still in flight: their results are not recorded
        executor.shutdown(wait=not aborted, cancel_futures=True)  # after Ctrl-C the cut workers end by themselves
        if running and not aborted:
            client.reset()  # every worker has returned: a client passed in can be used again
        bar.close()
        flush()
        dedupe.remove_replaced(rows.values())
        if own_client:
            client.close()

    mine = [rows[url] for url in attempted]  # this run's rows as they ended
    return {"folder": str(person_dir), "manifest": str(manifest), "candidates": len(candidates),
            "skipped_finished": len(candidates) - len(todo), "attempted": len(mine), **_counts(mine),
            "total_saved": sum(row["status"] == "saved" for row in rows.values()),
            "max_in_flight_per_host": dict(sorted(client.max_in_flight.items())),
            "elapsed_s": round(time.monotonic() - started, 3)}


def manifest_counts(person_dir: str | Path) -> dict:
    """Counts over a person's `manifest.csv` (every run so far): candidates, saved, duplicates, near_duplicates,
    rejected(_by_reason), errors(_by_reason)."""
    rows = read_csv(Path(person_dir) / MANIFEST_NAME)
    return {"candidates": len(rows), **_counts(rows)}


def fetch_person(person: str, source: str, out: str | Path, config: FetchConfig | None = None, *,
                 url: str | None = None, query: str | None = None, category: str | None = None,
                 api_url: str = WIKIMEDIA_API) -> dict:
    """Find candidate photos of `person` with one source and download them into `<out>/<slugify(person)>/`.

    source: "wikimedia" (Commons search for `query` or the name, or `category`), "page" (the gallery at `url`) or
        "search" (image-search results; `url` reads a given page). Returns the `download_images` summary plus
        person, source and the source's counters. Raises `InputError` (exit 2) or `RunFailed` (exit 1).
    """

    config, stats = config or FetchConfig(), Counter()
    if source not in ("wikimedia", "page", "search"):
        raise InputError(f"unknown source {source!r}; choose wikimedia, page or search")
    if source == "page" and not url:
        raise InputError("source 'page' needs url= (the gallery page to start from)")
    with closing(PoliteClient(config)) as client:
        robots = None
        if config.respect_robots and source != "wikimedia":
            robots = RobotsPolicy(client.fetch_text, config.user_agent, unreachable=config.robots_unreachable)
        if source == "wikimedia":
            candidates = wikimedia_candidates(client.fetch_text, query=None if category else (query or person),
                                              category=category, api_url=api_url, thumb_width=config.thumb_width,
                                              max_requests=config.max_pages, stats=stats)
        elif source == "page":
            candidates = gallery_candidates(client.fetch_text, url, max_pages=config.max_pages, robots=robots,
                                            stats=stats)
        else:
            candidates = search_candidates(client.fetch_text, query or person, url=url, max_pages=config.max_pages,
                                           robots=robots, stats=stats)
        summary = download_images(list(candidates), Path(out) / slugify(person), config, client=client)
    return {"person": person, "source": source, **summary, **{key: stats[key] for key in sorted(stats)}}


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `python -m scraping fetch`."""
    parser.add_argument("--person", required=True, help='whose photos, e.g. "Julia Roberts"')
    parser.add_argument("--source", required=True, choices=["wikimedia", "page", "search"])
    parser.add_argument("--url", help="gallery page to start from (page) or a results page to read (search)")
    parser.add_argument("--query", help="search words instead of the person's name")
    parser.add_argument("--category", help="Wikimedia Commons category to list instead of searching")
    parser.add_argument("--out", default="data/raw", help="root folder; images go to <out>/<person slug>/")
    parser.add_argument("--overwrite", action="store_true", help="ignore the manifest and fetch everything again")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a FetchConfig field, e.g. --set per_host=2 --set user_agent='me (me@x.org)'")


def cli_run(args: argparse.Namespace) -> dict:
    """Run `fetch` from parsed arguments; returns the summary printed as the last stdout line."""
    overrides = parse_set_options(args.set)
    if args.overwrite:
        overrides["overwrite"] = True
    return fetch_person(args.person, args.source, Path(args.out), apply_overrides(FetchConfig(), overrides),
                        url=args.url, query=args.query, category=args.category)
