"""The one polite downloader every source feeds: fetch candidate images, check them, dedupe, save, keep a manifest.

`fetch_person` asks a source (`scraping.sources`) for candidates and hands them to `download_images`, which:

- downloads concurrently (a thread pool) while holding a per-host concurrency cap and a minimum delay between
  request starts to the same host; retries connection errors, timeouts, 429 and 5xx with exponential backoff,
  honouring `Retry-After` (seconds or an HTTP date, capped); sends a descriptive User-Agent; pools connections;
- accepts only http/https (also after redirects), follows at most `max_redirects` redirects and ends a redirect
  loop with a reason; enforces a byte cap while streaming (Content-Length first, then counted bytes);
- holds a wall-clock deadline per request (`max_seconds_per_request`, reason `too_slow`) whatever the server does:
  a watchdog thread shuts down the socket of any request past its deadline, so a server that drip-feeds its body
  or its headers one byte at a time cannot keep a worker (the per-byte `read_timeout_s` alone would let it);
- keeps only bytes that Pillow decodes completely as a raster photo format, with the decompression-bomb guard on
  and a minimum width/height;
- drops exact duplicates (sha256) and near duplicates (a 64-bit DCT perceptual hash within a Hamming distance)
  against every image the manifest keeps, earlier runs included, keeping the copy listed first (see below);
- names files `<first 16 hex of sha256><extension of the decoded format>` (never anything from the URL, so a
  `../` in a URL cannot escape the folder), writes them atomically, and records every URL in
  `<out>/<slugify(person)>/manifest.csv` as its download completes (a slow host never holds up the others'
  rows), rewritten atomically every `flush_every` results, every `flush_interval_s` seconds while results
  arrive, and at the end, so a killed run resumes: URLs already finished (saved, duplicate, near_duplicate,
  rejected) are skipped and `error` rows (transient failures) are tried again;
- stops within about a second on Ctrl-C: in-flight requests are cut, waits end, the manifest of what finished is
  written and no `.part` file is left; the same command resumes.

Statuses: `saved`, `duplicate`, `near_duplicate`, `rejected` (permanent: bad scheme, HTTP 4xx, too large, not
an image, truncated, decompression bomb, too small, redirect loop) and `error` (transient: timeouts, too slow,
connection errors, 5xx/429 after all retries). Reasons are a token, optionally followed by `: detail`. A body
that ends before its Content-Length (`truncated: got X of Y bytes`) is retried within the run like a dropped
connection, and if every attempt is cut short it is `rejected`, so reruns do not fetch it again and again
(`overwrite` does). Manifest rows keep candidate order.

Which copy is kept does not depend on timing: of URLs holding the same photo (exact or near), the one listed first
by the source is `saved` and the others point at its file, whichever finished downloading first. When an earlier
copy arrives after a later one was saved, the earlier one's file is written, the later one's row becomes its
(near) duplicate, the manifest is written, and only then is the later file deleted (a run stopped in between
leaves a file no row names; the next run deletes it). Two fresh runs of the same candidates keep the same files,
and a resumed run applies the same rule: a file saved by an earlier run for a URL that this run lists again
gives way to an earlier-listed duplicate downloaded now. Files of earlier runs whose URLs this run does not list
rank first and are never replaced, and (near) duplicate rows of earlier runs stay duplicates (pointing at the
replacing file when theirs is replaced).

Start pages that cannot be used end the run with one line (`python -m scraping fetch` exits 2 for a URL that is
not http(s), 1 for an unreachable host or a start page answering 4xx/5xx). robots.txt follows RFC 9309: a
missing one (4xx) allows everything; one that cannot be read (5xx, 429, no answer) disallows the site unless
`robots_unreachable="allow"`, and the error says "robots.txt unreachable", not "blocked by robots".

CLI: `python -m scraping fetch --person "Julia Roberts" --source wikimedia --out data/raw`.
"""
from __future__ import annotations

import argparse
import bisect
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
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Mapping
from urllib.parse import urldefrag, urljoin, urlsplit

import numpy as np
import requests
from PIL import Image, ImageFile, UnidentifiedImageError
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from common.config import apply_overrides, parse_set_options, save_config
from common.errors import InputError
from common.files import atomic_write_bytes, read_csv, slugify, write_csv_atomic
from .sources import (
    WIKIMEDIA_API,
    Candidate,
    PageFetchError,
    RobotsPolicy,
    check_start_url,
    gallery_candidates,
    is_http_url,
    search_candidates,
    wikimedia_candidates,
)

MANIFEST_NAME = "manifest.csv"
CONFIG_NAME = "fetch_config.json"
MANIFEST_FIELDS = [
    "url", "page", "title", "license", "author", "sha256", "phash", "width", "height", "file", "status", "reason",
]
# Statuses that end a URL's story: a re-run skips them. `error` rows are retried.
FINAL_STATUSES = {"saved", "duplicate", "near_duplicate", "rejected"}
# HTTP statuses worth retrying (RFC 9110 transient conditions); every other 4xx is permanent.
RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
# Decoded formats we keep, with the extension the file gets. Pillow is told to try only these parsers, so
# exotic formats (EPS via Ghostscript, PSD, ...) are never parsed from untrusted bytes.
FORMAT_EXTENSIONS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp",
                     "TIFF": ".tif"}
# Parsers Pillow may try (MPO, a multi-picture JPEG, is opened by the JPEG parser and reports itself as MPO).
OPEN_FORMATS = ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"]
SAVED_NAME = re.compile(r"^[0-9a-f]{16}\.(jpg|png|webp|gif|bmp|tif)$")
# Bytes asked of the socket per read while streaming a body: small, so the deadline and a stop are seen promptly.
STREAM_CHUNK = 16 * 1024
# How often the watchdog looks at requests in flight (seconds): the slack on every deadline and on Ctrl-C.
WATCHDOG_TICK_S = 0.05
DEFAULT_USER_AGENT = (
    "faces-start-to-finish/0.1 (tutorial image scraper; please set FetchConfig.user_agent to name your project "
    "and a contact address) python-requests/" + requests.__version__
)


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


# --------------------------------------------------------------------------------------------------------------
# HTTP: per-host limits, retries, redirects, byte caps
# --------------------------------------------------------------------------------------------------------------
class FetchFailure(PageFetchError):
    """A URL could not be fetched; `status` is "rejected" (permanent) or "error" (transient), `reason` a token.

    `note` (e.g. "Connection refused") goes into the message only, not into `reason_text` (the manifest's reason).
    """

    def __init__(self, status: str, reason: str, detail: str = "", note: str = ""):
        text = f"{reason}: {detail}" if detail else reason
        super().__init__(f"{text} ({note})" if note else text)
        self.status = status
        self.reason = reason
        self.detail = detail

    @property
    def reason_text(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


class FetchStopped(FetchFailure):
    """The client was stopped (Ctrl-C, or a run that has what it needs) while this request was waiting or running."""

    def __init__(self) -> None:
        super().__init__("error", "interrupted")


class _Truncated(Exception):
    """The body ended before its Content-Length (the connection closed early); retried like a dropped connection."""

    def __init__(self, got: int, expected: int):
        super().__init__(f"got {got} of {expected} bytes")
        self.got = got
        self.expected = expected


@dataclass
class FetchedBody:
    """The final answer for a URL after redirects. `content` is empty unless the status is 2xx."""

    url: str
    status_code: int
    content: bytes
    headers: Mapping[str, str]


# --------------------------------------------------------------------------------------------------------------
# The watchdog: a wall-clock deadline per request, and a stop that reaches every request in flight
# --------------------------------------------------------------------------------------------------------------
def _cut(sock) -> None:
    """Shut a socket down in both directions: a read blocked on it in another thread returns at once (EOF)."""
    sock = getattr(sock, "socket", sock)  # urllib3's SSLTransport wraps the real socket
    if not isinstance(sock, socket.socket):
        return
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's shutdown, also for an SSLSocket
    except OSError:
        pass  # already closed


class _Watch:
    """One request attempt under watch: its deadline, its socket once known, and why it was cut (if it was)."""

    __slots__ = ("deadline", "done", "fired", "sock", "watchdog")

    def __init__(self, watchdog: RequestWatchdog, deadline: float):
        self.watchdog = watchdog
        self.deadline = deadline
        self.sock = None
        self.fired = ""  # "", "too_slow" or "stopped"
        self.done = False

    def attach(self, sock) -> None:
        """Called in the worker's thread as soon as its socket exists (connection made or taken from the pool)."""
        with self.watchdog._lock:
            if self.done or sock is None:
                return
            self.sock = sock
            if self.fired:
                _cut(sock)

    def detach(self) -> None:
        """The attempt is over: never cut this socket again (the pool may hand it to another request now)."""
        with self.watchdog._lock:
            self.done = True
            self.sock = None


_current = threading.local()  # .watch: the _Watch of the request this thread is running, if any


def _attach_current(sock) -> None:
    watch = getattr(_current, "watch", None)
    if watch is not None:
        watch.attach(sock)


class RequestWatchdog:
    """Cuts requests that outlive their wall-clock deadline, and on `stop()` every request in flight.

    `read_timeout_s` limits each silence, not a whole response: a server sending one byte every 0.2 s never trips
    it. Here a daemon thread (alive only while requests are watched) looks every `WATCHDOG_TICK_S` at the requests
    in flight and shuts down the socket of any past its deadline; the worker's blocked read then returns at once,
    whether it was waiting for headers or for body bytes, and the attempt ends as `too_slow`. `stop()` does the same
    to all of them and makes every later request and wait (backoff, host delay) end at once with `FetchStopped`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: set[_Watch] = set()
        self._thread: threading.Thread | None = None
        self.stop_event = threading.Event()

    @contextmanager
    def watch(self, seconds: float) -> Iterator[_Watch]:
        watch = _Watch(self, time.monotonic() + max(0.0, float(seconds)))
        with self._lock:
            if self.stop_event.is_set():
                watch.fired = "stopped"
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fetch-watchdog", daemon=True)
                self._thread.start()
        previous, _current.watch = getattr(_current, "watch", None), watch
        try:
            yield watch
        finally:
            _current.watch = previous
            watch.detach()
            with self._lock:
                self._watches.discard(watch)

    def stop(self) -> None:
        """Cut every request in flight now; later requests and waits end at once until `reset()`."""
        with self._lock:
            self.stop_event.set()
            for watch in self._watches:
                self._fire(watch, "stopped")

    def reset(self) -> None:
        """Accept requests again after `stop()` (once no request of the stopped work is running)."""
        self.stop_event.clear()

    @property
    def stopped(self) -> bool:
        return self.stop_event.is_set()

    def sleep(self, seconds: float) -> None:
        """Sleep, unless stopped (then raise `FetchStopped` at once)."""
        if self.stop_event.wait(max(0.0, seconds)):
            raise FetchStopped()

    def _fire(self, watch: _Watch, why: str) -> None:  # with self._lock held
        if watch.done or watch.fired:
            return
        watch.fired = why
        if watch.sock is not None:
            _cut(watch.sock)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._watches:
                    self._thread = None
                    return
                now = time.monotonic()
                for watch in self._watches:
                    if now >= watch.deadline:
                        self._fire(watch, "too_slow")
            time.sleep(WATCHDOG_TICK_S)


class _Watched:
    """Mixin for urllib3 connections: tells the thread's watch about the socket, so a deadline or a stop can cut a
    wait for headers too."""

    def connect(self) -> None:
        super().connect()
        _attach_current(self.sock)

    def getresponse(self, *args, **kwargs):
        _attach_current(self.sock)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter whose connections report their sockets to the watchdog."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPConnectionPool,
                                                   "https": _WatchedHTTPSConnectionPool}


def _response_socket(response: requests.Response):
    """The socket under a streamed response (for sessions whose connections do not report it themselves)."""
    raw = response.raw
    sock = getattr(getattr(raw, "_connection", None), "sock", None)
    if sock is None:
        sock = getattr(getattr(getattr(getattr(raw, "_fp", None), "fp", None), "raw", None), "_sock", None)
    return sock


class HostLimiter:
    """Per-host politeness: a semaphore of `per_host` slots and a minimum gap between request starts.

    `defer(host, s)` pushes the host's next allowed start back (used after 429/503 so that every thread, not
    just the one that was told, waits). `max_in_flight` records the highest concurrency seen per host. With a
    `stop_event`, waiting for a slot or for the host's next start ends at once (`FetchStopped`) when it is set.
    """

    def __init__(self, per_host: int, min_delay_s: float, stop_event: threading.Event | None = None):
        self.per_host = max(1, int(per_host))
        self.min_delay_s = max(0.0, float(min_delay_s))
        self.stop_event = stop_event or threading.Event()
        self._lock = threading.Lock()
        self._semaphores: dict[str, threading.BoundedSemaphore] = {}
        self._next_start: dict[str, float] = {}
        self._in_flight: Counter = Counter()
        self.max_in_flight: dict[str, int] = {}

    @contextmanager
    def slot(self, host: str) -> Iterator[None]:
        with self._lock:
            semaphore = self._semaphores.setdefault(host, threading.BoundedSemaphore(self.per_host))
        while not semaphore.acquire(timeout=0.1):
            if self.stop_event.is_set():
                raise FetchStopped()
        try:
            with self._lock:
                now = time.monotonic()
                start = max(now, self._next_start.get(host, 0.0))
                self._next_start[host] = start + self.min_delay_s
            if self.stop_event.wait(max(0.0, start - now)):
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
            semaphore.release()

    def defer(self, host: str, seconds: float) -> None:
        with self._lock:
            self._next_start[host] = max(self._next_start.get(host, 0.0), time.monotonic() + seconds)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date); None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def make_session(config: FetchConfig) -> requests.Session:
    """A `requests.Session` with the User-Agent set, connection pools sized to the concurrency, and connections
    that report their sockets to the `RequestWatchdog` of the request running in their thread."""
    session = requests.Session()
    session.headers["User-Agent"] = config.user_agent
    # Retries are ours (they honour the host limiter and Retry-After), so urllib3's are off.
    adapter = _WatchedAdapter(pool_connections=max(10, config.max_workers), pool_maxsize=max(1, config.max_workers),
                              max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _is_read_timeout(exc: BaseException) -> bool:
    """requests reports a read timeout during body streaming as a ConnectionError wrapping urllib3's error."""
    from urllib3.exceptions import ReadTimeoutError

    seen = exc
    for _ in range(5):
        if isinstance(seen, (ReadTimeoutError, requests.Timeout)):
            return True
        args = getattr(seen, "args", ())
        seen = args[0] if args and isinstance(args[0], BaseException) else seen.__context__
        if seen is None:
            return False
    return False


def _short_cause(exc: BaseException) -> str:
    """"Connection refused", "Name or service not known", ... from requests' long nested error messages."""
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if match:
        return match.group(1).strip()
    match = re.search(r"(Read timed out|Connection aborted|Remote end closed connection without response)", text)
    return match.group(1) if match else type(exc).__name__


class PoliteClient:
    """HTTP GETs with the politeness rules of `FetchConfig`; shared by page fetching and image downloads.

    `stop()` cuts every request in flight and makes later ones fail at once with `FetchStopped` (Ctrl-C, or a
    download run that has all the images it wants); `reset()` undoes it.
    """

    def __init__(self, config: FetchConfig, session: requests.Session | None = None):
        self.config = config
        self.session = session or make_session(config)
        self.watchdog = RequestWatchdog()
        self.limiter = HostLimiter(config.per_host, config.min_delay_s, self.watchdog.stop_event)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "PoliteClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def stop(self) -> None:
        self.watchdog.stop()

    def reset(self) -> None:
        self.watchdog.reset()

    def fetch(self, url: str, *, max_bytes: int | None = None) -> FetchedBody:
        """GET `url`, following redirects by hand (each hop checked and rate-limited), body capped.

        Raises:
            FetchFailure: unsupported scheme (also as a redirect target), redirect loop, too many redirects,
                too large, too slow, truncated, or a transient failure that outlived the retries;
                `FetchStopped` once the client is stopped.
        """
        max_bytes = self.config.max_bytes if max_bytes is None else max_bytes
        _check_scheme(url)
        visited = {url}
        current = url
        for _ in range(self.config.max_redirects + 1):
            status, headers, body = self._get_with_retries(current, max_bytes)
            location = headers.get("Location")
            if status in REDIRECT_STATUSES and location:
                target = urldefrag(urljoin(current, location.strip()))[0]
                _check_scheme(target)
                if target in visited:
                    raise FetchFailure("rejected", "redirect_loop", target)
                visited.add(target)
                current = target
                continue
            return FetchedBody(current, status, body, headers)
        raise FetchFailure("rejected", "too_many_redirects", f"more than {self.config.max_redirects}")

    def fetch_text(self, url: str) -> tuple[int, str]:
        """`FetchText` for `scraping.sources`: (HTTP status, body decoded as text; empty for non-2xx)."""
        body = self.fetch(url)
        charset = re.search(r"charset=([\w.:-]+)", body.headers.get("Content-Type", ""), re.I)
        try:
            text = body.content.decode(charset.group(1) if charset else "utf-8", errors="replace")
        except LookupError:  # an unknown charset name
            text = body.content.decode("utf-8", errors="replace")
        return body.status_code, text

    def _get_with_retries(self, url: str, max_bytes: int) -> tuple[int, Mapping[str, str], bytes]:
        config = self.config
        host = (urlsplit(url).hostname or "").lower()
        reason, note, truncated = "connection_error", "", None
        for attempt in range(config.retries + 1):
            wait_s = config.backoff_s * 2**attempt
            truncated = None
            try:
                status, headers, body = self._attempt(url, host, max_bytes)
            except FetchFailure:
                raise
            except _Truncated as exc:
                reason, note, truncated = "truncated", "", exc
            except requests.Timeout as exc:
                reason, note = "timeout", _short_cause(exc)
            except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                    requests.exceptions.MissingSchema, ValueError) as exc:
                raise FetchFailure("rejected", "invalid_url", str(exc)[:200]) from exc
            except (requests.RequestException, OSError) as exc:  # OSError: a socket error requests did not wrap
                reason = "timeout" if _is_read_timeout(exc) else "connection_error"
                note = _short_cause(exc)
            else:
                if status not in RETRY_STATUSES:
                    return status, headers, body
                reason, note = f"http_{status}", ""
                retry_after = parse_retry_after(headers.get("Retry-After"))
                if retry_after is not None:
                    wait_s = retry_after
                if status in (429, 503):
                    # The host asked everyone to slow down, not just this thread.
                    self.limiter.defer(host, min(wait_s, config.max_wait_s))
            if attempt < config.retries:
                self.watchdog.sleep(min(wait_s, config.max_wait_s))
        attempts = f"after {config.retries + 1} attempt{'s' if config.retries else ''}"
        if truncated is not None:
            # Cut short every time: permanent for this URL (a rerun skips it; `overwrite` tries again).
            raise FetchFailure("rejected", "truncated", f"{truncated} ({attempts})")
        raise FetchFailure("error", reason, attempts, note)

    def _attempt(self, url: str, host: str, max_bytes: int) -> tuple[int, Mapping[str, str], bytes]:
        """One request, holding a host slot until the body is read (a slot is a connection in use), under a
        wall-clock deadline of `max_seconds_per_request` from the first byte sent (see `RequestWatchdog`)."""
        config = self.config
        limit = config.max_seconds_per_request
        with self.limiter.slot(host), self.watchdog.watch(limit) as watch:

            def cut_short() -> FetchFailure:
                if watch.fired == "stopped":
                    return FetchStopped()
                return FetchFailure("error", "too_slow", f"over {limit:g} s")

            if watch.fired:
                raise cut_short()
            try:
                response = self.session.get(url, stream=True, allow_redirects=False,
                                            timeout=(config.connect_timeout_s, min(config.read_timeout_s, limit)))
            except Exception as exc:
                if watch.fired:
                    raise cut_short() from exc
                raise
            watch.attach(_response_socket(response))  # for a session whose connections do not report themselves
            with response:
                try:
                    if watch.fired:  # cut while headers came in: an EOF there reads as "end of headers"
                        raise cut_short()
                    if not 200 <= response.status_code < 300:
                        return response.status_code, response.headers, b""  # error and redirect bodies are unread
                    declared = response.headers.get("Content-Length", "").strip()
                    if declared.isdigit() and int(declared) > max_bytes:
                        raise FetchFailure("rejected", "too_large", f"Content-Length {declared} > {max_bytes}")
                    body = bytearray()
                    try:
                        for chunk in response.iter_content(chunk_size=STREAM_CHUNK):
                            body += chunk
                            if len(body) > max_bytes:
                                raise FetchFailure("rejected", "too_large", f"more than {max_bytes} bytes streamed")
                            if watch.fired or time.monotonic() > watch.deadline:
                                raise cut_short()
                    except FetchFailure:
                        raise
                    except Exception as exc:
                        if watch.fired:
                            raise cut_short() from exc
                        got = response.raw.tell()
                        if declared.isdigit() and got < int(declared):
                            raise _Truncated(got, int(declared)) from exc
                        raise
                    if watch.fired:  # the EOF that ended the body may be the cut, not the end
                        raise cut_short()
                    return response.status_code, response.headers, bytes(body)
                finally:
                    watch.detach()  # before the connection can go back to the pool for another request


def _check_scheme(url: str) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchFailure("rejected", "unsupported_scheme", scheme or "none")
    if not is_http_url(url):
        raise FetchFailure("rejected", "invalid_url", "no host")


# --------------------------------------------------------------------------------------------------------------
# Image checks and perceptual hashing
# --------------------------------------------------------------------------------------------------------------
class ImageRejected(Exception):
    """Bytes that are not a usable photo; `reason` is a manifest reason token."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class ImageCheck:
    """What a successful check learned about an image."""

    format: str
    extension: str
    width: int
    height: int
    phash: int


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: `M @ x` is the DCT of column vector `x`."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    matrix[0] /= np.sqrt(2.0)
    return matrix


_DCT32 = _dct_matrix(32)


def perceptual_hash(image: Image.Image) -> int:
    """64-bit DCT perceptual hash (pHash): grey 32x32, 2-D DCT, the 8x8 lowest frequencies above their median.

    Resizing, recompression and mild colour changes flip few bits; different photos differ in about half.
    """
    grey = image.convert("L").resize((32, 32), Image.Resampling.LANCZOS, reducing_gap=3.0)
    pixels = np.asarray(grey, dtype=np.float64)
    low = (_DCT32 @ pixels @ _DCT32.T)[:8, :8]
    bits = (low > np.median(low)).ravel()
    return int(np.packbits(bits).tobytes().hex(), 16)


def hamming_distance(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes."""
    return (a ^ b).bit_count()


def inspect_image(data: bytes, *, min_size: int = 64, max_pixels: int = 50_000_000) -> ImageCheck:
    """Check that `data` is a complete raster photo of at least `min_size` px per side; hash it.

    The pixel count is checked from the header before any decoding (so a 20000x20000 PNG of zeros is never
    inflated), and Pillow's own bomb guard stays on (see `pillow_bomb_guard`, used by `download_images`; outside
    it Pillow may print its DecompressionBombWarning for large images). A bomb's reason quotes the limit in force,
    `max_pixels` (or Pillow's `MAX_IMAGE_PIXELS` when that is lower).

    Raises:
        ImageRejected: reason `empty`, `not_an_image`, `unsupported_format`, `decompression_bomb`, `too_small`,
            `truncated` or `corrupt`.
    """
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
        # Pillow's message quotes its own threshold (twice MAX_IMAGE_PIXELS for the error); quote ours.
        limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
        size = re.search(r"\((\d+) pixels\)", str(exc))
        detail = f"{size.group(1)} pixels > {limit} pixels" if size else f"more than {limit} pixels"
        raise ImageRejected("decompression_bomb", detail) from exc
    except UnidentifiedImageError as exc:
        raise ImageRejected("not_an_image") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError) as exc:
        # Pillow signals damaged files with a zoo of exception types.
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise ImageRejected(reason, str(exc)[:120]) from exc


@contextmanager
def pillow_bomb_guard(max_pixels: int) -> Iterator[None]:
    """Within the block: Pillow's `MAX_IMAGE_PIXELS` is `max_pixels` (the configured limit rules, above or below
    Pillow's default), its DecompressionBombWarning is an error (so it rejects, with the configured limit in the
    reason, instead of printing a warning to the console), and truncated files are never silently accepted.

    These are process-wide Pillow/warnings settings (worker threads must see them), restored on exit.
    """
    old_max, old_truncated = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS = max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = old_max, old_truncated


# --------------------------------------------------------------------------------------------------------------
# Downloading, deduping, the manifest
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What a worker thread learned about one candidate (decisions that need shared state come later)."""

    candidate: Candidate
    status: str  # "ok", "rejected" or "error"
    reason: str = ""
    data: bytes = b""
    sha256: str = ""
    check: ImageCheck | None = None


def fetch_and_check(client: PoliteClient, candidate: Candidate, config: FetchConfig) -> Outcome:
    """Download one candidate and check it is a usable image (runs in a worker thread; never raises)."""
    try:
        body = client.fetch(candidate.url)
        if body.status_code != 200:
            return Outcome(candidate, "rejected", f"http_{body.status_code}")
        sha = hashlib.sha256(body.content).hexdigest() if body.content else ""
        check = inspect_image(body.content, min_size=config.min_size, max_pixels=config.max_pixels)
        return Outcome(candidate, "ok", data=body.content, sha256=sha, check=check)
    except FetchFailure as exc:
        return Outcome(candidate, exc.status, exc.reason_text)
    except ImageRejected as exc:
        return Outcome(candidate, "rejected", f"{exc.reason}: {exc.detail}" if exc.detail else exc.reason,
                       sha256=hashlib.sha256(body.content).hexdigest())
    except Exception as exc:  # one odd URL must not end the run; the row says what happened
        return Outcome(candidate, "error", f"unexpected: {type(exc).__name__}: {str(exc)[:160]}")


# Ranks order the copies of a photo; the copy ranked first is the one kept. This run's candidates rank by their
# position in the source's list, (1, i); saved rows of earlier runs whose URL this run does not list rank before
# all of them, (0, row number). `_LAST` ranks after everything (no download outstanding).
_LAST = (2, 0)


@dataclass(eq=False)
class _Copy:
    """One copy of a photo that may be kept: a saved row of an earlier run, or an image this run downloaded."""

    rank: tuple[int, int]
    row: dict[str, str]  # its manifest row, updated in place
    sha: str
    phash: int | None
    name: str  # the file it has while kept (content-named)
    kept: bool = False


def _target(reason: str) -> str:
    """The file a `duplicate_of: X` / `near_duplicate_of: X (distance d)` reason points at."""
    return reason.split(":", 1)[1].strip().split(" (", 1)[0] if ":" in reason else ""


class DedupeIndex:
    """Decides which copy of each photo is kept, whatever order the downloads finish in.

    Among copies that are exact (sha256) or near (pHash within `threshold`) duplicates, the one ranked first
    (candidate order) is kept: the decisions are those of a run taking the images one at a time in rank order. A
    copy is a `duplicate` of a kept copy with the same bytes, else a `near_duplicate` of the nearest kept copy
    within the threshold, else kept (`saved`). `place` adds a downloaded image and redoes the decisions from its rank
    on, so a copy that arrives after a later-ranked duplicate was saved takes its place. Near duplicates do not
    chain (A near B near C, A not near C), so a copy dropped once can be kept again when another copy arrives; the
    bytes of dropped copies are held (`spare`) while a download ranked before them is outstanding (`settle`).

    Rows of earlier runs that are (near) duplicates stay (near) duplicates (their bytes were never kept); when the
    file they point at is dropped they point at the file that replaced it (`followers`). `unclaimed` maps sha256
    to image files on disk that no row names (a run killed between writing a file and its manifest): a download
    with those bytes takes the file over instead of writing it again; they are no dedupe reference of their own.
    """

    def __init__(self, threshold: int = 6) -> None:
        self.threshold = threshold
        self.copies: list[_Copy] = []  # in rank order
        self._ranks: list[tuple[int, int]] = []
        self.unclaimed: dict[str, str] = {}  # sha -> file: images on disk that no manifest row claims yet
        self.followers: list[dict[str, str]] = []  # earlier runs' duplicate and near_duplicate rows
        self.spare: dict[str, bytes] = {}  # sha -> bytes of a dropped copy that may be kept again

    @property
    def kept_count(self) -> int:
        return sum(copy.kept for copy in self.copies)

    def add_saved(self, row: dict[str, str], rank: tuple[int, int]) -> None:
        """An earlier run's saved row (its file is on disk, or was)."""
        phash = int(row["phash"], 16) if row.get("phash") else None
        self._insert(_Copy(rank, row, row["sha256"], phash, row.get("file", ""), kept=True))

    def _insert(self, copy: _Copy) -> int:
        position = bisect.bisect_right(self._ranks, copy.rank)
        self._ranks.insert(position, copy.rank)
        self.copies.insert(position, copy)
        return position

    def _remove(self, position: int) -> None:
        del self._ranks[position], self.copies[position]

    def _decisions(self, start: int) -> list[tuple[_Copy, str, str]]:
        """(copy, status, reason) for the copies from position `start` on, given the kept ones before it."""
        by_sha = {c.sha: c for c in reversed(self.copies[:start]) if c.kept}
        hashed = [c for c in self.copies[:start] if c.kept and c.phash is not None]
        decisions = []
        for copy in self.copies[start:]:
            same = by_sha.get(copy.sha)
            near = None if same is not None or copy.phash is None else self._nearest(copy.phash, hashed)
            if same is not None:
                decisions.append((copy, "duplicate", f"duplicate_of: {same.name}"))
            elif near is not None:
                decisions.append((copy, "near_duplicate", f"near_duplicate_of: {near[0].name} (distance {near[1]})"))
            else:
                decisions.append((copy, "saved", ""))
                by_sha[copy.sha] = copy
                if copy.phash is not None:
                    hashed.append(copy)
        return decisions

    def _nearest(self, phash: int, kept: list[_Copy]) -> tuple[_Copy, int] | None:
        best = None
        for other in kept:  # in rank order: of equally near copies the first ranked wins
            distance = hamming_distance(phash, other.phash)
            if distance <= self.threshold and (best is None or distance < best[1]):
                best = (other, distance)
        return best

    def _needed(self, sha: str, frontier: tuple[int, int]) -> bool:
        """Could a copy with these bytes still be kept again (a download ranked before it is outstanding)?"""
        return any(c.sha == sha and c.rank > frontier for c in self.copies)

    def place(self, copy: _Copy, data: bytes, person_dir: Path, *, overwrite: bool = False,
              frontier: tuple[int, int] = _LAST) -> list[str]:
        """Add this run's downloaded image and redo the decisions from its rank on (main thread only).

        Files that become kept are written (atomically) before any row is changed, then the rows are updated in
        memory. Returns the files no longer kept: the caller writes the manifest first and deletes them after, so
        the manifest on disk never names a missing file (a run stopped in between leaves a file that no row claims
        and whose bytes a duplicate row names; `_build_index` deletes it). `frontier` is the rank of the first
        download still outstanding (copies ranked after it may change again).
        """
        position = self._insert(copy)
        claimed = self.unclaimed.pop(copy.sha, None)
        try:
            decisions = self._decisions(position)
            before = {c.name for c in self.copies if c.kept} | ({claimed} if claimed else set())
            after = {c.name for c in self.copies[:position] if c.kept}
            after |= {c.name for c, status, _ in decisions if status == "saved"}
            for c, status, _ in decisions:
                if status == "saved" and c.name not in before:
                    path = person_dir / c.name
                    source = data if c is copy else self.spare.get(c.sha)
                    if source is not None and (overwrite or not path.exists()):
                        atomic_write_bytes(path, source)
        except BaseException:
            self._remove(position)
            if claimed:
                self.unclaimed[copy.sha] = claimed
            raise
        for c, status, reason in decisions:
            c.kept = status == "saved"
            c.row.update(status=status, reason=reason, file=c.name if c.kept else "")
        dropped = sorted(before - after)
        if dropped:
            self._repoint(set(dropped))
        for name in dropped:  # keep the bytes of a dropped copy that may come back
            owner = next((c for c in self.copies if c.name == name), None)
            if owner is not None and owner.sha not in self.spare and self._needed(owner.sha, frontier):
                source = data if owner is copy else None
                try:
                    self.spare[owner.sha] = source if source is not None else (person_dir / name).read_bytes()
                except OSError:
                    pass  # already gone (deleted by hand): it cannot be kept again
        if not copy.kept and copy.sha not in self.spare and copy.name not in after and self._needed(copy.sha,
                                                                                                   frontier):
            self.spare[copy.sha] = data
        return dropped

    def _repoint(self, dropped: set[str]) -> None:
        """Earlier runs' duplicate rows that point at a dropped file now point at the copy that replaced it."""
        owners = {c.name: c for c in self.copies if not c.kept and c.name in dropped}
        for row in self.followers:
            owner = owners.get(_target(row.get("reason", "")))
            if owner is None:
                continue
            if row.get("sha256") == owner.sha or not row.get("phash") or owner.phash is None:
                row.update(status=owner.row["status"], reason=owner.row["reason"])
                continue
            keeper = _target(owner.row["reason"])
            kept = next((c for c in self.copies if c.kept and c.name == keeper), None)
            if kept is None or kept.phash is None:
                row.update(status=owner.row["status"], reason=owner.row["reason"])
            else:
                distance = hamming_distance(int(row["phash"], 16), kept.phash)
                row.update(status="near_duplicate", reason=f"near_duplicate_of: {keeper} (distance {distance})")

    def settle(self, frontier: tuple[int, int]) -> None:
        """Forget held bytes that no copy can need any more (every download ranked before it has finished)."""
        for sha in [sha for sha in self.spare if not self._needed(sha, frontier)]:
            del self.spare[sha]


def _as_candidate(record: Candidate | Mapping) -> Candidate:
    if isinstance(record, Candidate):
        return record
    return Candidate(**{key: str(record.get(key) or "") for key in ("url", "page", "title", "license", "author")})


def _build_index(person_dir: Path, rows: Iterable[dict[str, str]], *, threshold: int = 6,
                 ranks: Mapping[str, tuple[int, int]] | None = None) -> DedupeIndex:
    """Index the saved rows of earlier runs (ranked by `ranks`, URL -> rank, or else before every candidate),
    note their duplicate rows, and list image files on disk that no row names (`DedupeIndex.unclaimed`).

    An unnamed file whose bytes a duplicate or near_duplicate row carries is a copy that an earlier-ranked
    duplicate replaced, left by a run stopped between writing its manifest and deleting the file: it is deleted.
    """
    index = DedupeIndex(threshold)
    ranks = ranks or {}
    claimed: set[str] = set()
    demoted: set[str] = set()
    for number, row in enumerate(rows):
        status = row.get("status")
        if status == "saved" and row.get("sha256"):
            index.add_saved(row, ranks.get(row.get("url", ""), (0, number)))
            claimed.add(row.get("file", ""))
        elif status in ("duplicate", "near_duplicate"):
            index.followers.append(row)
            if row.get("sha256"):
                demoted.add(row["sha256"])
    for path in sorted(person_dir.iterdir()) if person_dir.exists() else []:
        if path.name in claimed or not SAVED_NAME.match(path.name):
            continue
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        if sha in demoted:
            path.unlink(missing_ok=True)
        else:
            index.unclaimed.setdefault(sha, path.name)
    return index


def _remove_stale_parts(person_dir: Path) -> int:
    """Delete temp files (`.<name>.*.part`) that a killed run's atomic writes left behind; returns how many."""
    removed = 0
    for path in person_dir.glob(".*.part"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def _decide(outcome: Outcome, index: DedupeIndex, person_dir: Path, config: FetchConfig, *,
            rank: tuple[int, int] = (1, 0), frontier: tuple[int, int] = _LAST) -> tuple[dict[str, str], list[str]]:
    """Turn a worker's outcome into a manifest row (main thread only); an image goes to `index.place`, which
    writes its file when it is kept and may change the rows of its later-ranked duplicates.

    Returns the row and the files no longer kept (delete them after the manifest is written).
    """
    c = outcome.candidate
    row = {"url": c.url, "page": c.page, "title": c.title, "license": c.license, "author": c.author,
           "sha256": outcome.sha256, "phash": "", "width": "", "height": "", "file": "",
           "status": outcome.status, "reason": outcome.reason}
    if outcome.status != "ok" or outcome.check is None:
        return row, []
    check = outcome.check
    row.update(phash=f"{check.phash:016x}", width=str(check.width), height=str(check.height))
    # Name from the content only: nothing from the URL can reach the file system.
    name = index.unclaimed.get(outcome.sha256) or outcome.sha256[:16] + check.extension
    copy = _Copy(rank, row, outcome.sha256, check.phash, name)
    dropped = index.place(copy, outcome.data, person_dir, overwrite=config.overwrite, frontier=frontier)
    return row, dropped


def _reason_token(reason: str) -> str:
    return reason.split(":", 1)[0].strip() or "unknown"


def download_images(
    records: Iterable[Candidate | Mapping],
    person_dir: str | Path,
    config: FetchConfig | None = None,
    *,
    client: PoliteClient | None = None,
) -> dict:
    """Download candidates into `person_dir`, deduping against it, and keep `person_dir/manifest.csv` current.

    Results are recorded as downloads complete, so one slow host never delays the others' rows; the manifest is
    rewritten every `flush_every` results, every `flush_interval_s` seconds while results arrive, whenever a copy
    listed earlier replaces a saved duplicate (before the replaced file is deleted), and at the end (rows in
    candidate order). Of duplicates the copy listed first is kept, whatever finished first (`DedupeIndex`). On
    Ctrl-C (KeyboardInterrupt) or any other exception, in-flight requests are cut, the manifest of what finished
    is written, no `.part` file is left, and the exception propagates; a rerun resumes. A `client` passed in
    stays stopped after such an exception (see `PoliteClient.stop`).

    Args:
        records: `Candidate`s (or dicts with url, page, title, license, author); repeated URLs count once.
        person_dir: the person's folder (created if needed); everything this writes lives inside it.
        config: a `FetchConfig`; its `max_images` counts every saved image in the folder, earlier runs included.
        client: reuse an open `PoliteClient` (its per-host limits then span page and image requests).

    Returns:
        Summary dict: folder, manifest, candidates, skipped_finished (done in earlier runs), attempted, saved,
        duplicates, near_duplicates, rejected, rejected_by_reason, errors, errors_by_reason, total_saved,
        max_in_flight_per_host, elapsed_s.
    """
    config = config or FetchConfig()
    person_dir = Path(person_dir)
    person_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    _remove_stale_parts(person_dir)
    save_config(config, person_dir / CONFIG_NAME)
    manifest_path = person_dir / MANIFEST_NAME

    previous = [] if config.overwrite else read_csv(manifest_path)
    rows: dict[str, dict[str, str]] = {row["url"]: row for row in previous if row.get("url")}
    finished = {url for url, row in rows.items() if row.get("status") in FINAL_STATUSES}
    total_saved = sum(row.get("status") == "saved" for row in rows.values())

    candidates: dict[str, Candidate] = {}
    for record in records:
        candidate = _as_candidate(record)
        candidates.setdefault(candidate.url, candidate)
    todo = [c for url, c in candidates.items() if url not in finished]
    # Manifest row order: earlier rows as they were, then this run's candidates in the order the source gave them.
    order = list(rows) + [url for url in candidates if url not in rows]

    counts: Counter = Counter()
    rejected_by_reason: Counter = Counter()
    errors_by_reason: Counter = Counter()
    attempted: list[str] = []
    own_client = client is None
    client = client or PoliteClient(config)
    # The copy of a photo that is kept is the first in candidate order, not the first to finish downloading.
    ranks = {url: (1, i) for i, url in enumerate(candidates)}

    def flush() -> None:
        write_csv_atomic(manifest_path, (rows[url] for url in order if url in rows), MANIFEST_FIELDS)

    # A bounded window of submitted downloads (so nothing much runs past max_images); results are taken as they
    # complete, the ones that completed together in candidate order.
    window = max(1, 2 * config.max_workers)
    pending: dict = {}  # future -> position in `todo`
    submitted = 0
    executor = ThreadPoolExecutor(max_workers=max(1, config.max_workers), thread_name_prefix="fetch")
    bar = tqdm(total=len(todo), desc=f"fetch {person_dir.name}", unit="img", disable=not config.progress)
    unflushed, last_flush = 0, time.monotonic()
    aborted = False
    try:
        with pillow_bomb_guard(config.max_pixels):
            index = _build_index(person_dir, rows.values(), threshold=config.phash_threshold, ranks=ranks)
            unindexed_saved = total_saved - index.kept_count  # saved rows without a sha256 (hand-edited manifests)
            limit_reached = bool(config.max_images) and total_saved >= config.max_images
            while not limit_reached:
                while len(pending) < window and submitted < len(todo):
                    pending[executor.submit(fetch_and_check, client, todo[submitted], config)] = submitted
                    submitted += 1
                if not pending:
                    break
                # Wake in time for the interval flush when rows are waiting for it.
                timeout = max(0.05, config.flush_interval_s - (time.monotonic() - last_flush)) if unflushed else 1.0
                done, _ = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
                batch = sorted(done, key=pending.__getitem__)
                positions = [pending.pop(future) for future in batch]
                outstanding = min(pending.values(), default=submitted)
                for j, future in enumerate(batch):
                    if limit_reached:
                        continue  # finished after the limit: not recorded, a later run may take it
                    # The first download not placed yet (still running, or later in this batch): copies ranked
                    # after it may still change, so the bytes of those dropped are held until then.
                    first = min([outstanding, *positions[j + 1:j + 2]])
                    frontier = ranks[todo[first].url] if first < len(todo) else _LAST
                    outcome = future.result()
                    row, dropped = _decide(outcome, index, person_dir, config, rank=ranks[outcome.candidate.url],
                                           frontier=frontier)
                    rows[row["url"]] = row
                    attempted.append(row["url"])
                    unflushed += 1
                    if row["status"] == "rejected":
                        rejected_by_reason[_reason_token(row["reason"])] += 1
                    elif row["status"] == "error":
                        errors_by_reason[_reason_token(row["reason"])] += 1
                    if dropped:  # a copy ranked earlier replaced them: manifest first, then the files
                        flush()
                        unflushed, last_flush = 0, time.monotonic()
                        for name in dropped:
                            (person_dir / name).unlink(missing_ok=True)
                    total_saved = unindexed_saved + index.kept_count
                    limit_reached = bool(config.max_images) and total_saved >= config.max_images
                    bar.update(1)
                    bar.set_postfix(saved=total_saved, refresh=False)
                index.settle(ranks[todo[outstanding].url] if outstanding < len(todo) else _LAST)
                if unflushed and (unflushed >= max(1, config.flush_every)
                                  or time.monotonic() - last_flush >= config.flush_interval_s):
                    flush()
                    unflushed, last_flush = 0, time.monotonic()
    except BaseException:
        aborted = True
        raise
    finally:
        running = [future for future in pending if not future.cancel()]
        if running:
            client.stop()  # cut the requests still in flight: their results are not recorded
        # After an exception (Ctrl-C above all) nobody waits for the workers: they were cut and end by themselves.
        executor.shutdown(wait=not aborted, cancel_futures=True)
        if running and not aborted:
            client.reset()  # every worker has returned, so a client passed in can be used again
        bar.close()
        flush()
        if own_client:
            client.close()

    # This run's rows as they ended (a row saved early in the run may have become a duplicate since).
    counts = Counter(rows[url]["status"] for url in attempted)
    counts["attempted"] = len(attempted)
    return {
        "folder": str(person_dir),
        "manifest": str(manifest_path),
        "candidates": len(candidates),
        "skipped_finished": len(candidates) - len(todo),
        "attempted": counts["attempted"],
        "saved": counts["saved"],
        "duplicates": counts["duplicate"],
        "near_duplicates": counts["near_duplicate"],
        "rejected": counts["rejected"],
        "rejected_by_reason": dict(sorted(rejected_by_reason.items())),
        "errors": counts["error"],
        "errors_by_reason": dict(sorted(errors_by_reason.items())),
        "total_saved": total_saved,
        "max_in_flight_per_host": dict(sorted(client.limiter.max_in_flight.items())),
        "elapsed_s": round(time.monotonic() - started, 3),
    }


def manifest_counts(person_dir: str | Path) -> dict:
    """Counts over a person's `manifest.csv` as it stands (every run so far), for reports that must read the same
    after a resumed run as after the first one.

    Returns: candidates (rows), saved, duplicates, near_duplicates, rejected, rejected_by_reason, errors,
    errors_by_reason.
    """
    rows = read_csv(Path(person_dir) / MANIFEST_NAME)
    statuses = Counter(row.get("status", "") for row in rows)
    rejected = Counter(_reason_token(row.get("reason", "")) for row in rows if row.get("status") == "rejected")
    errors = Counter(_reason_token(row.get("reason", "")) for row in rows if row.get("status") == "error")
    return {"candidates": len(rows), "saved": statuses["saved"], "duplicates": statuses["duplicate"],
            "near_duplicates": statuses["near_duplicate"], "rejected": statuses["rejected"],
            "rejected_by_reason": dict(sorted(rejected.items())), "errors": statuses["error"],
            "errors_by_reason": dict(sorted(errors.items()))}


def collect_candidates(
    source: str,
    client: PoliteClient,
    *,
    person: str,
    url: str | None = None,
    query: str | None = None,
    category: str | None = None,
    api_url: str = WIKIMEDIA_API,
    stats: Counter | None = None,
) -> list[Candidate]:
    """Ask one source for candidates, fetching pages and API answers through `client` (see `fetch_person`).

    Raises:
        InputError: an unknown source, a missing or non-http(s) start URL, a bad `robots_unreachable` value.
        PageFetchError: (a `RunFailed`) the start page or first API request failed: host unreachable, HTTP
            4xx/5xx, robots.txt unreachable (with `robots_unreachable="disallow"`).
    """
    config = client.config
    stats = stats if stats is not None else Counter()
    if source not in ("wikimedia", "page", "search"):
        raise InputError(f"unknown source {source!r}; choose wikimedia, page or search")
    robots = None
    if config.respect_robots and source != "wikimedia":
        robots = RobotsPolicy(client.fetch_text, config.user_agent, unreachable=config.robots_unreachable)
    if source == "wikimedia":
        check_start_url(api_url, "the Wikimedia API URL (api_url)")
        records = wikimedia_candidates(
            client.fetch_text, query=None if category else (query or person), category=category,
            api_url=api_url, thumb_width=config.thumb_width, max_requests=config.max_pages, stats=stats)
    elif source == "page":
        if not url:
            raise InputError("source 'page' needs url= (the gallery page to start from)")
        check_start_url(url)
        records = gallery_candidates(client.fetch_text, url, max_pages=config.max_pages, robots=robots, stats=stats)
    else:
        if url:
            check_start_url(url)
        records = search_candidates(client.fetch_text, query or person, url=url, max_pages=config.max_pages,
                                    robots=robots, stats=stats)
    return list(records)


def fetch_person(
    person: str,
    source: str,
    out: str | Path,
    config: FetchConfig | None = None,
    *,
    url: str | None = None,
    query: str | None = None,
    category: str | None = None,
    api_url: str = WIKIMEDIA_API,
) -> dict:
    """Find candidate photos of `person` with one source and download them into `<out>/<slugify(person)>/`.

    Args:
        person: the person's name (folder name via `slugify`; default search query).
        source: "wikimedia" (Commons API search, or a category), "page" (a gallery page and its next pages),
            or "search" (an image-search results page; best effort).
        out: the root folder of raw images (e.g. `data/raw`).
        config: a `FetchConfig`.
        url: the start page for "page"; for "search", a results page to read instead of building one.
        query: search words instead of the person's name ("wikimedia" and "search").
        category: a Commons category to list instead of searching ("wikimedia").
        api_url: the MediaWiki `api.php` endpoint.

    Returns:
        The `download_images` summary plus person, source, and page/API counters (pages_fetched,
        pages_blocked_by_robots, pages_robots_unreachable, page_errors, api_requests, api_errors).

    Raises:
        InputError: bad input (see `collect_candidates`); the CLI exits 2.
        RunFailed: the start page or API could not be used (a `PageFetchError`); the CLI exits 1.
    """
    config = config or FetchConfig()
    person_dir = Path(out) / slugify(person)
    stats: Counter = Counter()
    with PoliteClient(config) as client:
        candidates = collect_candidates(source, client, person=person, url=url, query=query, category=category,
                                        api_url=api_url, stats=stats)
        summary = download_images(candidates, person_dir, config, client=client)
    return {"person": person, "source": source, **summary, **{key: stats[key] for key in sorted(stats)}}


# --------------------------------------------------------------------------------------------------------------
# CLI: python -m scraping fetch ...
# --------------------------------------------------------------------------------------------------------------
def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `python -m scraping fetch`."""
    parser.add_argument("--person", required=True, help='whose photos, e.g. "Julia Roberts"')
    parser.add_argument("--source", required=True, choices=["wikimedia", "page", "search"])
    parser.add_argument("--url", help="gallery page to start from (page) or a results page to read (search)")
    parser.add_argument("--query", help="search words instead of the person's name")
    parser.add_argument("--category", help="Wikimedia Commons category to list instead of searching")
    parser.add_argument("--api-url", default=WIKIMEDIA_API, help="MediaWiki api.php endpoint")
    parser.add_argument("--out", default="data/raw", help="root folder; images go to <out>/<person slug>/")
    parser.add_argument("--max-images", type=int, help="stop once the folder holds this many saved images")
    parser.add_argument("--overwrite", action="store_true", help="ignore the manifest and fetch everything again")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a FetchConfig field, e.g. --set per_host=2 --set user_agent='me (me@x.org)'")


def cli_run(args: argparse.Namespace) -> dict:
    """Run `fetch` from parsed arguments; returns the summary printed as the last stdout line."""
    overrides = parse_set_options(args.set)
    if args.max_images is not None:
        overrides["max_images"] = args.max_images
    if args.overwrite:
        overrides["overwrite"] = True
    config = apply_overrides(FetchConfig(), overrides)
    return fetch_person(args.person, args.source, Path(args.out), config, url=args.url, query=args.query,
                        category=args.category, api_url=args.api_url)
