"""The one polite downloader every source feeds: fetch candidate images, check them, dedupe, save, keep a manifest.

`fetch_person` asks a source (`scraping.sources`) for candidates and hands them to `download_images`, which:

- downloads concurrently (a thread pool) while holding a per-host concurrency cap and a minimum delay between
  request starts to the same host; retries connection errors, timeouts, 429 and 5xx with exponential backoff,
  honouring `Retry-After` (seconds or an HTTP date, capped); sends a descriptive User-Agent; pools connections;
- accepts only http/https (also after redirects), follows at most `max_redirects` redirects and ends a redirect
  loop with a reason; enforces a byte cap while streaming (Content-Length first, then counted bytes);
- keeps only bytes that Pillow decodes completely as a raster photo format, with the decompression-bomb guard on
  and a minimum width/height;
- drops exact duplicates (sha256) and near duplicates (a 64-bit DCT perceptual hash within a Hamming distance)
  against everything already in the person's folder, earlier runs included;
- names files `<first 16 hex of sha256><extension of the decoded format>` (never anything from the URL, so a
  `../` in a URL cannot escape the folder), writes them atomically, and records every URL in
  `<out>/<slugify(person)>/manifest.csv`, rewritten atomically every `flush_every` results and at the end, so a
  killed run resumes: URLs already finished (saved, duplicate, near_duplicate, rejected) are skipped and
  `error` rows (transient failures) are tried again.

Statuses: `saved`, `duplicate`, `near_duplicate`, `rejected` (permanent: bad scheme, HTTP 4xx, too large, not
an image, truncated, decompression bomb, too small, redirect loop) and `error` (transient: timeouts, connection
errors, 5xx/429 after all retries). Reasons are a token, optionally followed by `: detail`.

CLI: `python -m scraping fetch --person "Julia Roberts" --source wikimedia --out data/raw`.
"""
from __future__ import annotations

import argparse
import email.utils
import hashlib
import io
import re
import threading
import time
import warnings
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
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

from common.config import apply_overrides, parse_set_options, save_config
from common.files import atomic_write_bytes, read_csv, slugify, write_csv_atomic
from .sources import (
    WIKIMEDIA_API,
    Candidate,
    PageFetchError,
    RobotsPolicy,
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
    max_seconds_per_request: float = 60.0  # wall-clock cap for one response body (stops slow drip-feeds)
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
    flush_every: int = 10  # rewrite manifest.csv after this many results (and always at the end)
    overwrite: bool = False  # ignore the existing manifest and fetch every candidate again
    progress: bool = True  # show a tqdm progress bar


# --------------------------------------------------------------------------------------------------------------
# HTTP: per-host limits, retries, redirects, byte caps
# --------------------------------------------------------------------------------------------------------------
class FetchFailure(PageFetchError):
    """A URL could not be fetched; `status` is "rejected" (permanent) or "error" (transient), `reason` a token."""

    def __init__(self, status: str, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.status = status
        self.reason = reason
        self.detail = detail

    @property
    def reason_text(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


@dataclass
class FetchedBody:
    """The final answer for a URL after redirects. `content` is empty unless the status is 2xx."""

    url: str
    status_code: int
    content: bytes
    headers: Mapping[str, str]


class HostLimiter:
    """Per-host politeness: a semaphore of `per_host` slots and a minimum gap between request starts.

    `defer(host, s)` pushes the host's next allowed start back (used after 429/503 so that every thread, not
    just the one that was told, waits). `max_in_flight` records the highest concurrency seen per host.
    """

    def __init__(self, per_host: int, min_delay_s: float):
        self.per_host = max(1, int(per_host))
        self.min_delay_s = max(0.0, float(min_delay_s))
        self._lock = threading.Lock()
        self._semaphores: dict[str, threading.BoundedSemaphore] = {}
        self._next_start: dict[str, float] = {}
        self._in_flight: Counter = Counter()
        self.max_in_flight: dict[str, int] = {}

    @contextmanager
    def slot(self, host: str) -> Iterator[None]:
        with self._lock:
            semaphore = self._semaphores.setdefault(host, threading.BoundedSemaphore(self.per_host))
        semaphore.acquire()
        try:
            with self._lock:
                now = time.monotonic()
                start = max(now, self._next_start.get(host, 0.0))
                self._next_start[host] = start + self.min_delay_s
            if start > now:
                time.sleep(start - now)
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
    """A `requests.Session` with the User-Agent set and connection pools sized to the concurrency."""
    session = requests.Session()
    session.headers["User-Agent"] = config.user_agent
    # Retries are ours (they honour the host limiter and Retry-After), so urllib3's are off.
    adapter = HTTPAdapter(pool_connections=max(10, config.max_workers), pool_maxsize=max(1, config.max_workers),
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


class PoliteClient:
    """HTTP GETs with the politeness rules of `FetchConfig`; shared by page fetching and image downloads."""

    def __init__(self, config: FetchConfig, session: requests.Session | None = None):
        self.config = config
        self.session = session or make_session(config)
        self.limiter = HostLimiter(config.per_host, config.min_delay_s)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "PoliteClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def fetch(self, url: str, *, max_bytes: int | None = None) -> FetchedBody:
        """GET `url`, following redirects by hand (each hop checked and rate-limited), body capped.

        Raises:
            FetchFailure: unsupported scheme (also as a redirect target), redirect loop, too many redirects,
                too large, too slow, or a transient failure that outlived the retries.
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
        reason = "connection_error"
        for attempt in range(config.retries + 1):
            wait = config.backoff_s * 2**attempt
            try:
                status, headers, body = self._attempt(url, host, max_bytes)
            except requests.Timeout:
                reason = "timeout"
            except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                    requests.exceptions.MissingSchema, ValueError) as exc:
                raise FetchFailure("rejected", "invalid_url", str(exc)[:200]) from exc
            except requests.RequestException as exc:
                reason = "timeout" if _is_read_timeout(exc) else "connection_error"
            else:
                if status not in RETRY_STATUSES:
                    return status, headers, body
                reason = f"http_{status}"
                retry_after = parse_retry_after(headers.get("Retry-After"))
                if retry_after is not None:
                    wait = retry_after
                if status in (429, 503):
                    # The host asked everyone to slow down, not just this thread.
                    self.limiter.defer(host, min(wait, config.max_wait_s))
            if attempt < config.retries:
                time.sleep(min(wait, config.max_wait_s))
        raise FetchFailure("error", reason, f"after {config.retries + 1} attempts")

    def _attempt(self, url: str, host: str, max_bytes: int) -> tuple[int, Mapping[str, str], bytes]:
        """One request, holding a host slot until the body is read (a slot is a connection in use)."""
        config = self.config
        with self.limiter.slot(host):
            started = time.monotonic()
            response = self.session.get(url, stream=True, allow_redirects=False,
                                        timeout=(config.connect_timeout_s, config.read_timeout_s))
            with response:
                if not 200 <= response.status_code < 300:
                    return response.status_code, response.headers, b""  # error and redirect bodies are unread
                declared = response.headers.get("Content-Length", "").strip()
                if declared.isdigit() and int(declared) > max_bytes:
                    raise FetchFailure("rejected", "too_large", f"Content-Length {declared} > {max_bytes}")
                body = bytearray()
                for chunk in response.iter_content(chunk_size=64 * 1024):
                    body += chunk
                    if len(body) > max_bytes:
                        raise FetchFailure("rejected", "too_large", f"more than {max_bytes} bytes streamed")
                    if time.monotonic() - started > config.max_seconds_per_request:
                        raise FetchFailure("error", "too_slow", f"over {config.max_seconds_per_request} s")
                return response.status_code, response.headers, bytes(body)


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
    inflated), and Pillow's own bomb guard stays on (see `pillow_bomb_guard`, used by `download_images`).

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
        raise ImageRejected("decompression_bomb", str(exc)[:120]) from exc
    except UnidentifiedImageError as exc:
        raise ImageRejected("not_an_image") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError) as exc:
        # Pillow signals damaged files with a zoo of exception types.
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise ImageRejected(reason, str(exc)[:120]) from exc


@contextmanager
def pillow_bomb_guard(max_pixels: int) -> Iterator[None]:
    """Within the block: Pillow's `MAX_IMAGE_PIXELS` is at most `max_pixels`, its DecompressionBombWarning is an
    error (so it rejects instead of merely warning), and truncated files are never silently accepted.

    These are process-wide Pillow/warnings settings (worker threads must see them), restored on exit.
    """
    old_max, old_truncated = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS = max_pixels if old_max is None else min(old_max, max_pixels)
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


class DedupeIndex:
    """Exact (sha256) and near (pHash) lookup over the images already kept in a person's folder."""

    def __init__(self) -> None:
        self.by_sha: dict[str, str] = {}
        self.hashes: list[tuple[int, str]] = []
        self.unclaimed: dict[str, str] = {}  # sha -> file: images on disk that no manifest row claims yet

    def add(self, sha: str, phash: int | None, file: str) -> None:
        self.by_sha.setdefault(sha, file)
        if phash is not None:
            self.hashes.append((phash, file))

    def nearest(self, phash: int, threshold: int) -> tuple[str, int] | None:
        best = None
        for other, file in self.hashes:
            distance = hamming_distance(phash, other)
            if distance <= threshold and (best is None or distance < best[1]):
                best = (file, distance)
        return best


def _as_candidate(record: Candidate | Mapping) -> Candidate:
    if isinstance(record, Candidate):
        return record
    return Candidate(**{key: str(record.get(key) or "") for key in ("url", "page", "title", "license", "author")})


def _build_index(person_dir: Path, rows: Iterable[Mapping[str, str]]) -> DedupeIndex:
    """Index saved rows of earlier runs, plus image files on disk that no row names (a run killed between
    writing a file and flushing the manifest leaves those)."""
    index = DedupeIndex()
    claimed = set()
    for row in rows:
        if row.get("status") == "saved" and row.get("sha256"):
            phash = int(row["phash"], 16) if row.get("phash") else None
            index.add(row["sha256"], phash, row.get("file", ""))
            claimed.add(row.get("file", ""))
    for path in sorted(person_dir.iterdir()) if person_dir.exists() else []:
        if path.name in claimed or not SAVED_NAME.match(path.name):
            continue
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        try:
            phash = inspect_image(data, min_size=1).phash
        except ImageRejected:
            continue
        index.add(sha, phash, path.name)
        index.unclaimed[sha] = path.name
    return index


def _remove_stale_parts(person_dir: Path) -> int:
    """Delete temp files (`.<name>.*.part`) that a killed run's atomic writes left behind; returns how many."""
    removed = 0
    for path in person_dir.glob(".*.part"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def _decide(outcome: Outcome, index: DedupeIndex, person_dir: Path, config: FetchConfig) -> dict[str, str]:
    """Turn a worker's outcome into a manifest row, writing the file when it is new (main thread only)."""
    c = outcome.candidate
    row = {"url": c.url, "page": c.page, "title": c.title, "license": c.license, "author": c.author,
           "sha256": outcome.sha256, "phash": "", "width": "", "height": "", "file": "",
           "status": outcome.status, "reason": outcome.reason}
    if outcome.status != "ok" or outcome.check is None:
        return row
    check = outcome.check
    row.update(phash=f"{check.phash:016x}", width=str(check.width), height=str(check.height))
    existing = index.by_sha.get(outcome.sha256)
    if existing is not None and outcome.sha256 not in index.unclaimed:
        row.update(status="duplicate", reason=f"duplicate_of: {existing}")
        return row
    if existing is None:
        near = index.nearest(check.phash, config.phash_threshold)
        if near is not None:
            row.update(status="near_duplicate", reason=f"near_duplicate_of: {near[0]} (distance {near[1]})")
            return row
    if existing is not None:  # the same bytes are already on disk from a run that died before its manifest
        name = index.unclaimed.pop(outcome.sha256)
    else:
        # Name from the content only: nothing from the URL can reach the file system.
        name = outcome.sha256[:16] + check.extension
        path = person_dir / name
        if config.overwrite or not path.exists():
            atomic_write_bytes(path, outcome.data)
        index.add(outcome.sha256, check.phash, name)
    row.update(status="saved", reason="", file=name)
    return row


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
    index = _build_index(person_dir, rows.values())
    total_saved = sum(row.get("status") == "saved" for row in rows.values())

    candidates: dict[str, Candidate] = {}
    for record in records:
        candidate = _as_candidate(record)
        candidates.setdefault(candidate.url, candidate)
    todo = [c for url, c in candidates.items() if url not in finished]

    counts: Counter = Counter()
    rejected_by_reason: Counter = Counter()
    errors_by_reason: Counter = Counter()
    own_client = client is None
    client = client or PoliteClient(config)

    def flush() -> None:
        write_csv_atomic(manifest_path, rows.values(), MANIFEST_FIELDS)

    # Results are consumed in candidate order (a bounded window runs ahead), so dedupe decisions and the
    # manifest are deterministic whatever order the downloads finish in.
    window = max(1, 2 * config.max_workers)
    pending: deque = deque()
    todo_iter = iter(todo)
    executor = ThreadPoolExecutor(max_workers=max(1, config.max_workers), thread_name_prefix="fetch")
    bar = tqdm(total=len(todo), desc=f"fetch {person_dir.name}", unit="img", disable=not config.progress)
    try:
        with pillow_bomb_guard(config.max_pixels):
            limit_reached = bool(config.max_images) and total_saved >= config.max_images
            while not limit_reached:
                while len(pending) < window:
                    candidate = next(todo_iter, None)
                    if candidate is None:
                        break
                    pending.append(executor.submit(fetch_and_check, client, candidate, config))
                if not pending:
                    break
                outcome = pending.popleft().result()
                row = _decide(outcome, index, person_dir, config)
                rows[row["url"]] = row
                counts["attempted"] += 1
                counts[row["status"]] += 1
                if row["status"] == "rejected":
                    rejected_by_reason[_reason_token(row["reason"])] += 1
                elif row["status"] == "error":
                    errors_by_reason[_reason_token(row["reason"])] += 1
                elif row["status"] == "saved":
                    total_saved += 1
                    limit_reached = bool(config.max_images) and total_saved >= config.max_images
                bar.update(1)
                bar.set_postfix(saved=counts["saved"], refresh=False)
                if counts["attempted"] % max(1, config.flush_every) == 0:
                    flush()
    finally:
        for future in pending:
            future.cancel()
        executor.shutdown(wait=True, cancel_futures=True)
        bar.close()
        flush()
        if own_client:
            client.close()

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
    """Ask one source for candidates, fetching pages and API answers through `client` (see `fetch_person`)."""
    config = client.config
    stats = stats if stats is not None else Counter()
    robots = RobotsPolicy(client.fetch_text, config.user_agent) if config.respect_robots else None
    if source == "wikimedia":
        records = wikimedia_candidates(
            client.fetch_text, query=None if category else (query or person), category=category,
            api_url=api_url, thumb_width=config.thumb_width, max_requests=config.max_pages, stats=stats)
    elif source == "page":
        if not url:
            raise ValueError("source 'page' needs url= (the gallery page to start from)")
        records = gallery_candidates(client.fetch_text, url, max_pages=config.max_pages, robots=robots, stats=stats)
    elif source == "search":
        records = search_candidates(client.fetch_text, query or person, url=url, max_pages=config.max_pages,
                                    robots=robots, stats=stats)
    else:
        raise ValueError(f"unknown source {source!r}; choose wikimedia, page or search")
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
        pages_blocked_by_robots, page_errors, api_requests, api_errors).
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
