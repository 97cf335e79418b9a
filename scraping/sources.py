"""Where candidate photos come from: the Wikimedia Commons API, any HTML gallery page, an image-search page.

Every source yields `Candidate` records and fetches its pages through a `FetchText` callable, so the downloader's
politeness applies to page and API requests too. The image-search source reads Bing's undocumented result markup.
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
IMAGE_EXTENSIONS = tuple(sorted(IMAGE_SUFFIXES | {".jpe"}))  # an `<a href>` to one of these is an image link
NEXT_LINK_TEXTS = {"next", "next page", "next »", "next ›", "next >", "»", "›", ">", ">>", "older", "more"}
# Where lazy-loading scripts keep the real image URL while `src` holds a placeholder.
LAZY_SRC_ATTRIBUTES = ("data-src", "data-original", "data-lazy-src", "data-lazy", "data-url")
LAZY_SRCSET_ATTRIBUTES = ("data-srcset", "data-lazy-srcset")
WIKIMEDIA_SKIP_MIME = ("image/svg+xml", "image/vnd.djvu", "image/x-xcf")  # drawings and documents, not photos


@dataclass
class Candidate:
    """One image a source found. Empty strings mean "unknown"."""

    url: str  # absolute URL of the image file to download
    page: str = ""  # page the image was found on (for attribution and the manifest)
    title: str = ""  # alt text, caption or file title
    license: str = ""  # short license name, e.g. "CC BY-SA 4.0" (Wikimedia only)
    author: str = ""  # author / artist as plain text (Wikimedia only)


class PageFetchError(RunFailed):
    """A page or API request failed for good; ending a run, the command line reports one line and exits 1."""


class RobotsUnreachable(PageFetchError):
    """robots.txt could not be read (5xx, 429, no answer), so the site is disallowed (RFC 9309)."""


# url -> (HTTP status, decoded body text); raises PageFetchError when no HTTP answer could be had.
FetchText = Callable[[str], "tuple[int, str]"]


def strip_html(text: str | None) -> str:
    """Plain text from an HTML snippet (Wikimedia `extmetadata` values are HTML), whitespace collapsed."""
    text = BeautifulSoup(text, "html.parser").get_text(" ") if "<" in (text or "") else html.unescape(text or "")
    return re.sub(r"\s+", " ", text).strip()


def is_http_url(url: str) -> bool:
    """True for absolute http(s) URLs with a host."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def check_start_url(url: str, what: str = "the start page") -> None:
    """Raise `InputError` unless `url` is an absolute http(s) URL with a host (file:, ftp:, relative paths...)."""
    if not isinstance(url, str) or not is_http_url(url.strip()):
        raise InputError(f"{what} must be an absolute http:// or https:// URL, got {url!r}")


def _site(url: str) -> str:
    return "{}://{}".format(*urlsplit(url)[:2])


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def parse_wikimedia_response(data: dict) -> list[Candidate]:
    """Candidates from one API answer (`formatversion=1` dict of pages or `=2` list), in search-rank order;
    the thumbnail URL when present, license and author from `extmetadata` with their HTML stripped."""
    pages = (data.get("query") or {}).get("pages") or []
    pages = sorted(pages.values() if isinstance(pages, dict) else pages, key=lambda page: page.get("index", 0))
    out = []
    for page in pages:
        info = (page.get("imageinfo") or [{}])[0]  # none: a missing or deleted file
        url = info.get("thumburl") or info.get("url")
        if not url or info.get("mime", "") in WIKIMEDIA_SKIP_MIME:
            continue
        meta = info.get("extmetadata") or {}
        text = {key: strip_html((meta.get(key) or {}).get("value", "")) for key in
                ("ObjectName", "LicenseShortName", "Artist")}
        title = text["ObjectName"] or re.sub(r"\.\w{2,5}$", "", re.sub(r"^File:", "", page.get("title", "")))
        out.append(Candidate(url=urljoin("https:", url), page=info.get("descriptionurl", ""), title=title,
                             license=text["LicenseShortName"], author=text["Artist"]))
    return out


def wikimedia_candidates(fetch_text: FetchText, *, query: str | None = None, category: str | None = None,
                         api_url: str = WIKIMEDIA_API, thumb_width: int = 960, max_requests: int = 5,
                         batch: int = 50, stats: Counter | None = None) -> Iterator[Candidate]:
    """Yield Commons files matching `query` (bitmaps only) or in `category`, following API continuation for up to
    `max_requests` requests of `batch` files. thumb_width: thumbnails this wide (0 = original files). stats: gets
    api_requests and api_errors. Raises `PageFetchError` when the first request fails (later failures end paging).
    """
    if (query is None) == (category is None):
        raise ValueError("give exactly one of query= or category=")
    check_start_url(api_url, "the Wikimedia API URL (api_url)")
    stats = stats if stats is not None else Counter()
    base = {"action": "query", "format": "json", "formatversion": "2", "prop": "imageinfo",
            "iiprop": "url|extmetadata|size|mime", "iiextmetadatafilter": "Artist|LicenseShortName|ObjectName"}
    if thumb_width:
        base["iiurlwidth"] = str(int(thumb_width))
    if query is not None:
        search = query if "filetype:" in query else f"{query} filetype:bitmap"
        base.update(generator="search", gsrsearch=search, gsrnamespace="6", gsrlimit=str(batch))
    else:
        title = category if category.lower().startswith("category:") else f"Category:{category}"
        base.update(generator="categorymembers", gcmtitle=title, gcmtype="file", gcmlimit=str(batch))
    continuation: dict[str, str] = {}
    for request_index in range(max_requests):
        url = f"{api_url}?{urlencode({**base, **continuation})}"
        try:
            status, text = fetch_text(url)
            if status != 200:
                raise PageFetchError(f"Wikimedia API answered HTTP {status} for {url}")
            data = json.loads(text)
            if "error" in data:
                raise PageFetchError(f"Wikimedia API error {data['error'].get('code')}: {data['error'].get('info')}")
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
        continuation = {key: str(value) for key, value in data["continue"].items()}  # sent back unchanged


def parse_srcset(value: str | None) -> list[tuple[str, float, str]]:
    """Parse a `srcset` attribute into (url, size, kind) entries; kind is "w" (width), "x" (density) or "h".
    As in the HTML spec, a URL ends at whitespace (it may hold commas) and no descriptor means `1x`."""
    entries, rest = [], value or ""
    while rest := rest.lstrip(" \t\r\n\f,"):
        url, rest = re.match(r"(\S*)(.*)", rest, re.S).groups()
        descriptor = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            descriptor, _, rest = rest.partition(",")
        match = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([wxh])", descriptor.split()[0]) if descriptor.strip() else None
        entries.append((url, float(match.group(1)), match.group(2)) if match else (url, 1.0, "x"))
    return entries


def largest_srcset_url(*values: str | None) -> str | None:
    """The URL of the largest entry over one or more `srcset` values (width descriptors beat densities)."""
    entries = [entry for value in values for entry in parse_srcset(value)]
    widths = [entry for entry in entries if entry[2] == "w"]
    return max(widths or entries, key=lambda entry: entry[1])[0] if entries else None


def _absolute(base_url: str, raw: str | None) -> str | None:
    """Resolve `raw` against the page URL; None for empty values, fragments and inline `data:` placeholders."""
    raw = (raw or "").strip()
    if not raw or raw.startswith(("data:", "#")):
        return None
    return urldefrag(urljoin(base_url, raw))[0]


def _image_link(base_url: str, href: str | None) -> str | None:
    url = _absolute(base_url, href)
    return url if url and urlsplit(url).path.lower().endswith(IMAGE_EXTENSIONS) else None


def _img_url(img, base_url: str) -> str | None:
    """The best URL for one `<img>`: largest srcset (own, lazy, and `<picture>` sources), then lazy src, src."""
    srcsets = [img.get("srcset"), *(img.get(name) for name in LAZY_SRCSET_ATTRIBUTES)]
    picture = img.find_parent("picture")
    for source in picture.find_all("source") if picture is not None else []:
        srcsets += [source.get("srcset"), source.get("data-srcset")]
    best = largest_srcset_url(*[value for value in srcsets if value and not value.lstrip().startswith("data:")])
    for raw in (best, *(img.get(name) for name in LAZY_SRC_ATTRIBUTES), img.get("src")):
        if url := _absolute(base_url, raw):
            return url
    return None


def _is_next_link(tag) -> bool:
    rel = tag.get("rel") or []
    if "next" in [value.lower() for value in (rel.split() if isinstance(rel, str) else rel)]:
        return True
    text = re.sub(r"\s+", " ", tag.get_text(" ")).strip().lower()
    label = (tag.get("aria-label") or "").strip().lower()
    named_next = text in NEXT_LINK_TEXTS or label in ("next", "next page") or text.startswith("next page")
    return tag.name == "a" and named_next


def parse_gallery_html(html_text: str, page_url: str) -> tuple[list[Candidate], str | None]:
    """Candidates on one gallery page (document order, deduplicated) and the URL of its "next page" link or None.
    A link from a thumbnail to an image file wins over the thumbnail."""
    soup = BeautifulSoup(html_text, "html.parser")
    base = soup.find("base", href=True)
    base_url = urljoin(page_url, base["href"]) if base else page_url
    found: dict[str, Candidate] = {}
    for tag in soup.find_all(["a", "img"]):
        if tag.name == "a":
            url = _image_link(base_url, tag.get("href"))
            inner = tag.find("img")
            title = tag.get("title") or (inner.get("alt") if inner else "") or tag.get_text(" ")
        else:
            link = tag.find_parent("a", href=True)
            if link is not None and _image_link(base_url, link.get("href")):
                continue  # the linked full-size file was taken instead of this thumbnail
            url, title = _img_url(tag, base_url), tag.get("alt") or tag.get("title") or ""
        if url and url not in found:
            found[url] = Candidate(url=url, page=page_url, title=re.sub(r"\s+", " ", title or "").strip())
    next_links = (_absolute(base_url, tag["href"]) for tag in soup.find_all(["a", "link"], href=True)
                  if _is_next_link(tag))
    return list(found.values()), next(filter(None, next_links), None)


class RobotsPolicy:
    """robots.txt checks for HTML pages, one parsed file per site (RFC 9309: 4xx but 401/403 allows everything;
    5xx, 429 or no answer is "unreachable" and disallows the site unless `unreachable="allow"`)."""

    def __init__(self, fetch_text: FetchText, user_agent: str, *, unreachable: str = "disallow"):
        if unreachable not in ("disallow", "allow"):
            raise InputError(f"robots_unreachable must be 'disallow' or 'allow', got {unreachable!r}")
        self.fetch_text, self.user_agent, self.unreachable = fetch_text, user_agent, unreachable
        self._parsers: dict[str, RobotFileParser] = {}
        self.why: dict[str, str] = {}  # site -> what went wrong reading its unreachable robots.txt

    def verdict(self, url: str) -> str:
        """"allowed", "disallowed" (by the rules, or 401/403), or "unreachable" (robots.txt could not be read)."""
        site = _site(url)
        if site not in self._parsers and site not in self.why:
            parser = RobotFileParser(f"{site}/robots.txt")
            try:
                status, text = self.fetch_text(f"{site}/robots.txt")
            except PageFetchError as exc:
                status, text = 0, _first_line(exc)
            if status >= 500 or status in (0, 429):
                self.why[site] = text if status == 0 else f"HTTP {status}"
            else:
                if 200 <= status < 300:
                    parser.parse(text.splitlines())
                else:  # missing: everything allowed, unless the site refuses us (401/403)
                    parser.disallow_all = status in (401, 403)
                    parser.allow_all = not parser.disallow_all
                self._parsers[site] = parser
        if site in self.why:
            return "unreachable"
        return "allowed" if self._parsers[site].can_fetch(self.user_agent, url) else "disallowed"

    def allowed(self, url: str) -> bool:
        verdict = self.verdict(url)
        return verdict == "allowed" or (verdict == "unreachable" and self.unreachable == "allow")


def gallery_candidates(fetch_text: FetchText, start_url: str, *, max_pages: int = 5,
                       robots: RobotsPolicy | None = None, stats: Counter | None = None,
                       parse: Callable[[str, str], tuple] = parse_gallery_html) -> Iterator[Candidate]:
    """Fetch the gallery page `start_url`, yield what `parse(html, url)` finds, follow its next-page URL on the
    same site up to `max_pages`. `stats` gets pages_fetched, pages_blocked_by_robots, pages_robots_unreachable,
    page_errors. A failing start page raises `PageFetchError`; later failures end quietly.
    """
    check_start_url(start_url)
    stats = stats if stats is not None else Counter()
    site, seen_urls, seen_pages, url = urlsplit(start_url)[:2], set(), set(), start_url
    while url and len(seen_pages) < max_pages and url not in seen_pages and urlsplit(url)[:2] == site:
        seen_pages.add(url)
        first = len(seen_pages) == 1
        verdict = robots.verdict(url) if robots is not None else "allowed"
        if verdict == "unreachable":
            stats["pages_robots_unreachable"] += 1
            if robots.unreachable != "allow":
                if first:
                    site = _site(url)
                    raise RobotsUnreachable(
                        f"robots.txt unreachable at {site}/robots.txt: {robots.why[site]}; the start page {url} was "
                        "not fetched (RFC 9309: an unreachable robots.txt disallows the site; robots_unreachable=allow "
                        "fetches anyway)")
                return
        elif verdict == "disallowed":
            stats["pages_blocked_by_robots"] += 1
            return
        try:
            status, text = fetch_text(url)
        except PageFetchError as exc:
            stats["page_errors"] += 1
            if first:
                raise PageFetchError(f"start page {url} could not be fetched: {_first_line(exc)}") from exc
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


def parse_search_html(html_text: str, page_url: str) -> tuple[list[Candidate], str | None]:
    """Candidates from a Bing image-results page: `a.iusc` anchors with JSON in `m` (`murl`, `purl`, `t`);
    anchors without valid JSON or an http(s) `murl` are skipped. No next-page URL (pages go by offset)."""
    out: dict[str, Candidate] = {}
    for anchor in BeautifulSoup(html_text, "html.parser").select("a.iusc[m]"):
        try:
            meta = json.loads(anchor["m"])
            url, page = urldefrag(str(meta.get("murl") or "").strip())[0], str(meta.get("purl") or "")
        except (ValueError, TypeError, AttributeError):
            continue
        if is_http_url(url) and url not in out:
            out[url] = Candidate(url, page if is_http_url(page) else page_url, strip_html(meta.get("t")))
    return list(out.values()), None


def search_candidates(fetch_text: FetchText, query: str, *, url: str | None = None,
                      search_url: str = BING_IMAGE_SEARCH, max_pages: int = 1, page_size: int = 35,
                      robots: RobotsPolicy | None = None, stats: Counter | None = None) -> Iterator[Candidate]:
    """Yield image-search results for `query` from up to `max_pages` result pages (`?q=...&first=1`, then
    `1 + page_size`, ...), stopping at a page that adds nothing new; `url` reads exactly that one page instead
    (e.g. a saved page served locally). robots / stats: as for `gallery_candidates`."""
    pages = [url] if url else [f"{search_url}?{urlencode({'q': query, 'first': 1 + index * page_size})}"
                               for index in range(max_pages)]
    seen: set[str] = set()
    for index, page_url in enumerate(pages):
        before = len(seen)
        try:
            for candidate in gallery_candidates(fetch_text, page_url, max_pages=1, robots=robots, stats=stats,
                                                parse=parse_search_html):
                if candidate.url not in seen:
                    seen.add(candidate.url)
                    yield candidate
        except PageFetchError:
            if index == 0:
                raise
            return  # a later result page failing ends the search; what was found is kept
        if len(seen) == before:
            return
