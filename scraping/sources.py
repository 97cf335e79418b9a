"""Where candidate photos come from: the Wikimedia Commons API, any HTML gallery page, an image-search page.

Every source yields `Candidate` records (image URL, the page it was found on, a title, and the license and
author where the source knows them). Sources never download images themselves; `scraping.download` does that
for all of them, politely. Sources fetch their pages through a `FetchText` callable (`url -> (status, text)`),
so the downloader's retries, per-host limits and User-Agent apply to page and API requests too, and tests can
serve everything from a loopback server.

- Wikimedia Commons: the MediaWiki Action API (`action=query` with `generator=search` in the File namespace or
  `generator=categorymembers` with `gcmtype=file`, `prop=imageinfo`), license and author from `extmetadata`.
  Wikimedia asks every client for a descriptive User-Agent with contact details
  (https://meta.wikimedia.org/wiki/User-Agent_policy); set `FetchConfig.user_agent`.
- Gallery pages: parsed with beautifulsoup4 (`<img src>`, the largest `srcset` entry, lazy `data-src` /
  `data-srcset` / `data-original`, `<picture><source srcset>`, `<a href>` links to image files), following
  "next page" links up to a limit, honouring robots.txt (RFC 9309; see `RobotsPolicy`).
- Image-search results (Bing's HTML result page: `a.iusc` anchors whose `m` attribute holds JSON with `murl`,
  `purl`, `t`). Best effort and fragile by nature: the markup is undocumented and changes without notice, and
  the search engine's robots.txt may forbid automated fetches of result pages (then, with robots honoured, this
  source yields nothing and says so). It is tested only against a fixture page, never the live site; a results
  page saved by hand and served locally works too (`url=`).

A start URL that is not absolute http(s) raises `InputError` (bad input); a start page or first API request that
fails (no answer, HTTP 4xx/5xx, robots.txt unreachable) raises `PageFetchError`, a `RunFailed`: both reach the
command line as one line (exit 2 and 1).
"""
from __future__ import annotations

import html
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator
from urllib.parse import urldefrag, urlencode, urljoin, urlsplit
from urllib.robotparser import RobotFileParser

from bs4 import BeautifulSoup

from common.errors import InputError, RunFailed
from common.images import IMAGE_SUFFIXES

WIKIMEDIA_API = "https://commons.wikimedia.org/w/api.php"
BING_IMAGE_SEARCH = "https://www.bing.com/images/search"

# File extensions that mark an `<a href>` as a link to an image file (query strings are ignored): the project's
# image suffixes plus ".jpe", seen in old gallery links.
IMAGE_EXTENSIONS = tuple(sorted(IMAGE_SUFFIXES | {".jpe"}))
# Link texts that mean "next page of this gallery" (compared lower-cased, stripped).
NEXT_LINK_TEXTS = {"next", "next page", "next »", "next ›", "next >", "»", "›", ">", ">>", "older", "more"}
# Attributes where lazy-loading scripts keep the real image URL while `src` holds a placeholder.
LAZY_SRC_ATTRIBUTES = ("data-src", "data-original", "data-lazy-src", "data-lazy", "data-url")
LAZY_SRCSET_ATTRIBUTES = ("data-srcset", "data-lazy-srcset")
# Wikimedia MIME types that are drawings or documents, not photos.
WIKIMEDIA_SKIP_MIME = ("image/svg+xml", "image/vnd.djvu", "image/x-xcf")


@dataclass
class Candidate:
    """One image a source found. Empty strings mean "unknown"."""

    url: str  # absolute URL of the image file to download
    page: str = ""  # page the image was found on (for attribution and the manifest)
    title: str = ""  # alt text, caption or file title
    license: str = ""  # short license name, e.g. "CC BY-SA 4.0" (Wikimedia only)
    author: str = ""  # author / artist as plain text (Wikimedia only)


class PageFetchError(RunFailed):
    """A page or API request failed for good (network failure after retries, a redirect loop, ...).

    A `RunFailed`: when it ends a run (the start page failed), the command line reports one line and exits 1.
    """


class RobotsUnreachable(PageFetchError):
    """robots.txt could not be read (5xx, 429, no answer), so the site is disallowed (RFC 9309)."""


# url -> (HTTP status, decoded body text); raises PageFetchError when no HTTP answer could be had.
FetchText = Callable[[str], "tuple[int, str]"]


def session_fetcher(session, timeout: float | tuple[float, float] = (5.0, 20.0)) -> FetchText:
    """A plain `FetchText` over a `requests.Session` (no per-host limits; `scraping.download` has the polite one).

    Args:
        session: a `requests.Session` (set its User-Agent header yourself).
        timeout: seconds, or a (connect, read) pair, passed to `session.get`.
    """
    import requests

    def fetch_text(url: str) -> tuple[int, str]:
        try:
            response = session.get(url, timeout=timeout)
        except requests.RequestException as exc:
            raise PageFetchError(f"{url}: {exc}") from exc
        return response.status_code, response.text

    return fetch_text


def strip_html(text: str | None) -> str:
    """Plain text from an HTML snippet (Wikimedia `extmetadata` values are HTML), whitespace collapsed."""
    if not text:
        return ""
    if "<" in text:
        text = BeautifulSoup(text, "html.parser").get_text(" ")
    else:
        text = html.unescape(text)
    return re.sub(r"\s+", " ", text).strip()


def is_http_url(url: str) -> bool:
    """True for absolute http(s) URLs with a host."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def check_start_url(url: str, what: str = "the start page") -> None:
    """Raise `InputError` unless `url` is an absolute http(s) URL with a host (file:, ftp:, relative paths...)."""
    if not isinstance(url, str) or not is_http_url(url.strip()):
        raise InputError(f"{what} must be an absolute http:// or https:// URL, got {url!r}")


# --------------------------------------------------------------------------------------------------------------
# Wikimedia Commons
# --------------------------------------------------------------------------------------------------------------
def wikimedia_params(
    *, query: str | None = None, category: str | None = None, thumb_width: int = 960, batch: int = 50
) -> dict[str, str]:
    """Query parameters for one Commons API request: a File-namespace search or a category's files.

    Args:
        query: full-text search in the File namespace (`generator=search`, `gsrnamespace=6`); `filetype:bitmap`
            is appended (CirrusSearch syntax) unless the query already names a filetype, to skip drawings,
            PDFs and video.
        category: a Commons category name, with or without the `Category:` prefix (`generator=categorymembers`,
            `gcmtype=file`). Exactly one of `query` and `category`.
        thumb_width: ask for a thumbnail this many pixels wide (`iiurlwidth`); 0 downloads original files.
            Commons serves a set of standard widths (e.g. 500, 960, 1280) cheaply; odd widths may be throttled.
        batch: results per request (the API allows up to 50 for anonymous clients with extmetadata).
    """
    if (query is None) == (category is None):
        raise ValueError("give exactly one of query= or category=")
    params = {
        "action": "query",
        "format": "json",
        "formatversion": "2",
        "prop": "imageinfo",
        "iiprop": "url|extmetadata|size|mime",
        "iiextmetadatafilter": "Artist|LicenseShortName|ObjectName|ImageDescription",
    }
    if thumb_width:
        params["iiurlwidth"] = str(int(thumb_width))
    if query is not None:
        search = query if "filetype:" in query else f"{query} filetype:bitmap"
        params.update(generator="search", gsrsearch=search, gsrnamespace="6", gsrlimit=str(batch))
    else:
        title = category if category.lower().startswith("category:") else f"Category:{category}"
        params.update(generator="categorymembers", gcmtitle=title, gcmtype="file", gcmlimit=str(batch))
    return params


def parse_wikimedia_response(data: dict) -> list[Candidate]:
    """Candidates from one API answer (`formatversion=1` dict of pages or `=2` list), in search-rank order.

    The thumbnail URL (`thumburl`) is preferred when present; `descriptionurl` becomes the page; author and
    license come from `extmetadata` Artist / LicenseShortName with their HTML stripped.
    """
    pages = (data.get("query") or {}).get("pages") or []
    if isinstance(pages, dict):
        pages = list(pages.values())
    pages = sorted(pages, key=lambda page: page.get("index", 0))
    out = []
    for page in pages:
        infos = page.get("imageinfo") or []
        if not infos:
            continue  # missing or deleted file
        info = infos[0]
        if info.get("mime", "") in WIKIMEDIA_SKIP_MIME:
            continue
        url = info.get("thumburl") or info.get("url")
        if not url:
            continue
        url = urljoin("https:", url)  # protocol-relative URLs appear in older answers
        meta = info.get("extmetadata") or {}

        def meta_text(key: str) -> str:
            return strip_html((meta.get(key) or {}).get("value", ""))

        title = page.get("title", "")
        title = meta_text("ObjectName") or re.sub(r"\.\w{2,5}$", "", re.sub(r"^File:", "", title))
        out.append(
            Candidate(
                url=url,
                page=info.get("descriptionurl", ""),
                title=title,
                license=meta_text("LicenseShortName"),
                author=meta_text("Artist"),
            )
        )
    return out


def wikimedia_candidates(
    fetch_text: FetchText,
    *,
    query: str | None = None,
    category: str | None = None,
    api_url: str = WIKIMEDIA_API,
    thumb_width: int = 960,
    max_requests: int = 5,
    batch: int = 50,
    stats: Counter | None = None,
) -> Iterator[Candidate]:
    """Yield Commons files matching `query` or in `category`, following API continuation.

    Args:
        fetch_text: how to GET a URL (see `FetchText`); the polite client from `scraping.download`.
        query / category / thumb_width / batch: see `wikimedia_params`.
        api_url: the `api.php` endpoint (configurable so tests can serve fixtures).
        max_requests: stop after this many API requests (each returns up to `batch` files).
        stats: optional counter; gets `api_requests` and `api_errors`.

    Raises:
        InputError: `api_url` is not an http(s) URL.
        PageFetchError: the first request fails or the API answers with an error (later failures stop paging).
    """
    check_start_url(api_url, "the Wikimedia API URL (api_url)")
    stats = stats if stats is not None else Counter()
    base = wikimedia_params(query=query, category=category, thumb_width=thumb_width, batch=batch)
    continuation: dict[str, str] = {}
    for request_index in range(max_requests):
        url = f"{api_url}?{urlencode({**base, **continuation})}"
        try:
            status, text = fetch_text(url)
            if status != 200:
                raise PageFetchError(f"Wikimedia API answered HTTP {status} for {url}")
            data = json.loads(text)
            if "error" in data:
                error = data["error"]
                raise PageFetchError(f"Wikimedia API error {error.get('code')}: {error.get('info')}")
        except (PageFetchError, ValueError) as exc:
            stats["api_errors"] += 1
            if request_index == 0:
                text = str(exc) if api_url in str(exc) else f"Wikimedia API request to {api_url} failed: {exc}"
                raise PageFetchError(text) from exc
            return
        stats["api_requests"] += 1
        yield from parse_wikimedia_response(data)
        if "continue" not in data:
            return
        # The API's continuation contract: send back every key of `continue` unchanged.
        continuation = {key: str(value) for key, value in data["continue"].items()}


# --------------------------------------------------------------------------------------------------------------
# Gallery pages
# --------------------------------------------------------------------------------------------------------------
def parse_srcset(value: str | None) -> list[tuple[str, float, str]]:
    """Parse a `srcset` attribute into (url, size, kind) entries; kind is "w" (width), "x" (density) or "h".

    Follows the HTML spec's tokenizer closely enough for real pages: URLs may contain commas (a URL ends at
    whitespace; trailing commas end the entry), and an entry without a descriptor counts as `1x`.
    """
    entries = []
    if not value:
        return entries
    pos, n = 0, len(value)
    while pos < n:
        while pos < n and (value[pos].isspace() or value[pos] == ","):
            pos += 1
        start = pos
        while pos < n and not value[pos].isspace():
            pos += 1
        url = value[start:pos]
        descriptor = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            start = pos
            depth = 0
            while pos < n and (value[pos] != "," or depth):
                depth += {"(": 1, ")": -1}.get(value[pos], 0)
                pos += 1
            descriptor = value[start:pos].strip()
        if not url:
            continue
        match = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([wxh])", descriptor.split()[0]) if descriptor else None
        entries.append((url, float(match.group(1)), match.group(2)) if match else (url, 1.0, "x"))
    return entries


def largest_srcset_url(*values: str | None) -> str | None:
    """The URL of the largest entry over one or more `srcset` values (width descriptors beat densities)."""
    entries = [entry for value in values for entry in parse_srcset(value)]
    if not entries:
        return None
    widths = [entry for entry in entries if entry[2] == "w"]
    pool = widths or entries
    return max(pool, key=lambda entry: entry[1])[0]


def _looks_like_image_file(url: str) -> bool:
    return urlsplit(url).path.lower().endswith(IMAGE_EXTENSIONS)


def _absolute(base_url: str, raw: str | None) -> str | None:
    """Resolve `raw` against the page URL; None for empty values and inline `data:` placeholders."""
    if not raw:
        return None
    raw = raw.strip()
    if not raw or raw.startswith("data:") or raw.startswith("#"):
        return None
    return urldefrag(urljoin(base_url, raw))[0]


def _img_url(img, base_url: str) -> str | None:
    """The best URL for one `<img>`: largest srcset (own, lazy, and `<picture>` sources), then lazy src, src."""
    srcsets = [img.get("srcset"), *(img.get(name) for name in LAZY_SRCSET_ATTRIBUTES)]
    picture = img.find_parent("picture")
    if picture is not None:
        for source in picture.find_all("source"):
            srcsets += [source.get("srcset"), source.get("data-srcset")]
    # Inline data: entries are placeholders for lazy loading, never the photo.
    best = largest_srcset_url(*[value for value in srcsets if value and not value.lstrip().startswith("data:")])
    for raw in (best, *(img.get(name) for name in LAZY_SRC_ATTRIBUTES), img.get("src")):
        url = _absolute(base_url, raw)
        if url:
            return url
    return None


def _is_next_link(tag) -> bool:
    rel = tag.get("rel") or []
    if isinstance(rel, str):
        rel = rel.split()
    if "next" in [value.lower() for value in rel]:
        return True
    if tag.name != "a":
        return False
    text = re.sub(r"\s+", " ", tag.get_text(" ")).strip().lower()
    label = (tag.get("aria-label") or "").strip().lower()
    return text in NEXT_LINK_TEXTS or label in ("next", "next page") or text.startswith("next page")


def parse_gallery_html(html_text: str, page_url: str) -> tuple[list[Candidate], str | None]:
    """Candidates on one gallery page, plus the absolute URL of its "next page" link (or None).

    A link from a thumbnail to an image file wins over the thumbnail (the full-size file is what we want);
    URLs are resolved against `page_url`, fragments dropped, and duplicates removed in document order.
    """
    soup = BeautifulSoup(html_text, "html.parser")
    base = soup.find("base", href=True)
    base_url = urljoin(page_url, base["href"]) if base else page_url
    found: dict[str, Candidate] = {}

    def add(url: str | None, title: str) -> None:
        if url and url not in found:
            found[url] = Candidate(url=url, page=page_url, title=re.sub(r"\s+", " ", title or "").strip())

    for tag in soup.find_all(["a", "img"]):
        if tag.name == "a":
            href = _absolute(base_url, tag.get("href"))
            if href and _looks_like_image_file(href):
                inner = tag.find("img")
                title = tag.get("title") or (inner.get("alt") if inner else "") or tag.get_text(" ")
                add(href, title)
        else:
            link = tag.find_parent("a", href=True)
            if link is not None:
                href = _absolute(base_url, link.get("href"))
                if href and _looks_like_image_file(href):
                    continue  # the linked full-size file was taken instead of this thumbnail
            add(_img_url(tag, base_url), tag.get("alt") or tag.get("title") or "")

    next_url = None
    for tag in soup.find_all(["a", "link"], href=True):
        if _is_next_link(tag):
            next_url = _absolute(base_url, tag["href"])
            if next_url:
                break
    return list(found.values()), next_url


class RobotsPolicy:
    """robots.txt checks for HTML pages, one parsed file per site, fetched through the same `FetchText`.

    Status handling follows RFC 9309: 2xx is parsed; a missing robots.txt (4xx) allows everything, except that
    401/403 disallow the whole site (as `urllib.robotparser` does: the site refuses us); a robots.txt that cannot
    be read (5xx, 429 "come back later", or no answer at all) is *unreachable*, and then the whole site is
    disallowed for this run (the RFC's default, since it may hide rules we would break) unless
    `unreachable="allow"`. `verdict(url)` tells the three cases apart, so callers can say "robots.txt unreachable"
    instead of "blocked by robots"; `unreachable_why(url)` says what went wrong.
    """

    def __init__(self, fetch_text: FetchText, user_agent: str, *, unreachable: str = "disallow"):
        if unreachable not in ("disallow", "allow"):
            raise InputError(f"robots_unreachable must be 'disallow' or 'allow', got {unreachable!r}")
        self.fetch_text = fetch_text
        self.user_agent = user_agent
        self.unreachable = unreachable
        self._parsers: dict[str, RobotFileParser] = {}
        self._unreachable: dict[str, str] = {}  # site -> what went wrong reading its robots.txt

    @staticmethod
    def _site(url: str) -> str:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}"

    def verdict(self, url: str) -> str:
        """ "allowed", "disallowed" (by the rules, or 401/403), or "unreachable" (robots.txt could not be read)."""
        site = self._site(url)
        if site in self._unreachable:
            return "unreachable"
        parser = self._parsers.get(site)
        if parser is None:
            parser = RobotFileParser(f"{site}/robots.txt")
            try:
                status, text = self.fetch_text(f"{site}/robots.txt")
            except PageFetchError as exc:
                self._unreachable[site] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                return "unreachable"
            if status >= 500 or status == 429:
                self._unreachable[site] = f"HTTP {status}"
                return "unreachable"
            if 200 <= status < 300:
                parser.parse(text.splitlines())
            elif status in (401, 403):
                parser.disallow_all = True
            else:
                parser.allow_all = True
            self._parsers[site] = parser
        return "allowed" if parser.can_fetch(self.user_agent, url) else "disallowed"

    def unreachable_why(self, url: str) -> str:
        """What went wrong reading the robots.txt of `url`'s site ("" if it was read)."""
        return self._unreachable.get(self._site(url), "")

    def allowed(self, url: str) -> bool:
        verdict = self.verdict(url)
        return verdict == "allowed" or (verdict == "unreachable" and self.unreachable == "allow")


def crawl_pages(
    fetch_text: FetchText,
    start_url: str,
    parse: Callable[[str, str], "tuple[list[Candidate], str | None]"],
    *,
    max_pages: int = 5,
    robots: RobotsPolicy | None = None,
    stats: Counter | None = None,
) -> Iterator[Candidate]:
    """Fetch `start_url`, yield what `parse(html, url)` finds, follow its next-page URL up to `max_pages`.

    Only pages on the same site are followed (a "next" link elsewhere ends the crawl), each page at most once.
    `stats` gets `pages_fetched`, `pages_blocked_by_robots` (robots.txt rules forbid the page),
    `pages_robots_unreachable` (robots.txt could not be read), `page_errors`. A start page that robots.txt
    forbids yields nothing (and is counted); everything else wrong with the start page raises.

    Raises:
        InputError: `start_url` is not an absolute http(s) URL.
        RobotsUnreachable: the site's robots.txt cannot be read and `robots.unreachable` is "disallow".
        PageFetchError: the first page cannot be fetched (later failures end the crawl quietly, counted).
    """
    check_start_url(start_url)
    stats = stats if stats is not None else Counter()
    site = urlsplit(start_url)[:2]
    seen_urls: set[str] = set()
    seen_pages: set[str] = set()
    url: str | None = start_url
    while url and len(seen_pages) < max_pages and url not in seen_pages and urlsplit(url)[:2] == site:
        seen_pages.add(url)
        first = len(seen_pages) == 1
        if robots is not None:
            verdict = robots.verdict(url)
            if verdict == "unreachable":
                stats["pages_robots_unreachable"] += 1
                if robots.unreachable != "allow":
                    if first:
                        raise RobotsUnreachable(
                            f"robots.txt unreachable at {RobotsPolicy._site(url)}/robots.txt: "
                            f"{robots.unreachable_why(url)}; the start page {url} was not fetched (RFC 9309: an "
                            "unreachable robots.txt disallows the site; robots_unreachable=allow fetches anyway)")
                    return
            elif verdict == "disallowed":
                stats["pages_blocked_by_robots"] += 1
                return
        try:
            status, text = fetch_text(url)
        except PageFetchError as exc:
            stats["page_errors"] += 1
            if first:
                detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise PageFetchError(f"start page {url} could not be fetched: {detail}") from exc
            return
        if status != 200:
            stats["page_errors"] += 1
            if first:
                raise PageFetchError(f"start page {url} answered HTTP {status}")
            return
        stats["pages_fetched"] += 1
        candidates, url = parse(text, url)
        for candidate in candidates:
            if candidate.url not in seen_urls:
                seen_urls.add(candidate.url)
                yield candidate


def gallery_candidates(
    fetch_text: FetchText,
    url: str,
    *,
    max_pages: int = 5,
    robots: RobotsPolicy | None = None,
    stats: Counter | None = None,
) -> Iterator[Candidate]:
    """Yield the images of a gallery page and the pages its "next" links lead to (see `crawl_pages`)."""
    yield from crawl_pages(fetch_text, url, parse_gallery_html, max_pages=max_pages, robots=robots, stats=stats)


# --------------------------------------------------------------------------------------------------------------
# Image-search results page (fragile by nature; see the module docstring)
# --------------------------------------------------------------------------------------------------------------
def parse_search_html(html_text: str, page_url: str) -> tuple[list[Candidate], str | None]:
    """Candidates from a Bing image-results page: `a.iusc` anchors with JSON in `m` (`murl`, `purl`, `t`).

    Anchors whose JSON does not parse or lacks an http(s) `murl` are skipped. Returns no next-page URL: result
    pages are addressed by offset instead (see `search_candidates`).
    """
    soup = BeautifulSoup(html_text, "html.parser")
    out: dict[str, Candidate] = {}
    for anchor in soup.select("a.iusc[m]"):
        try:
            meta = json.loads(anchor["m"])
        except (ValueError, TypeError):
            continue
        if not isinstance(meta, dict):
            continue
        url = urldefrag(str(meta.get("murl") or "").strip())[0]
        if not is_http_url(url) or url in out:
            continue
        page = str(meta.get("purl") or "")
        out[url] = Candidate(url=url, page=page if is_http_url(page) else page_url, title=strip_html(meta.get("t")))
    return list(out.values()), None


def search_candidates(
    fetch_text: FetchText,
    query: str,
    *,
    url: str | None = None,
    search_url: str = BING_IMAGE_SEARCH,
    max_pages: int = 1,
    page_size: int = 35,
    robots: RobotsPolicy | None = None,
    stats: Counter | None = None,
) -> Iterator[Candidate]:
    """Yield image-search results for `query` (best effort; see the module docstring).

    Args:
        fetch_text: how to GET a URL.
        query: the search words (usually the person's name).
        url: fetch exactly this results page instead of building one from `query` (e.g. a saved page served
            locally); then only that one page is read.
        search_url: the results endpoint; pages are `?q=...&first=1`, `&first=1+page_size`, ...
        max_pages: result pages to read; reading stops early when a page adds nothing new.
        robots / stats: as for `crawl_pages`.
    """
    stats = stats if stats is not None else Counter()
    pages = [url] if url else [
        f"{search_url}?{urlencode({'q': query, 'first': 1 + index * page_size})}" for index in range(max_pages)
    ]
    seen: set[str] = set()
    for index, page_url in enumerate(pages):
        before = len(seen)
        try:
            for candidate in crawl_pages(
                fetch_text, page_url, parse_search_html, max_pages=1, robots=robots, stats=stats
            ):
                if candidate.url not in seen:
                    seen.add(candidate.url)
                    yield candidate
        except PageFetchError:
            if index == 0:
                raise
            return  # a later result page failing ends the search; what was found is kept
        if len(seen) == before:
            return
