"""Candidate sources on fixtures: gallery-page parsing and crawling (srcset, lazy images, picture, links to full
size, pagination, robots.txt), the Wikimedia Commons API (query shape, continuation, license/author), and an
image-search results page. Everything is served from a loopback server; nothing touches the internet."""
from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from common.errors import InputError, RunFailed
from scraping.sources import (
    Candidate,
    PageFetchError,
    RobotsPolicy,
    RobotsUnreachable,
    gallery_candidates,
    largest_srcset_url,
    parse_gallery_html,
    parse_search_html,
    parse_srcset,
    parse_wikimedia_response,
    search_candidates,
    strip_html,
    wikimedia_candidates,
)

pytestmark = pytest.mark.timeout(60)
USER_AGENT = "faces-tests/1.0 (tests@example.org)"


class FixtureSite:
    """Loopback HTTP server: `pages[path] = (status, content_type, body)` or a callable(query) returning one."""

    def __init__(self):
        self.pages: dict = {}
        self.requests: list[str] = []
        self.user_agents: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                site.requests.append(self.path)
                site.user_agents.append(self.headers.get("User-Agent", ""))
                parts = urlsplit(self.path)
                entry = site.pages.get(parts.path, (404, "text/plain", "missing"))
                if callable(entry):
                    entry = entry(parse_qs(parts.query))
                status, content_type, body = entry
                data = body.encode() if isinstance(body, str) else body
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def html(self, path: str, body: str) -> str:
        self.pages[path] = (200, "text/html; charset=utf-8", body)
        return self.base + path

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site():
    server = FixtureSite()
    yield server
    server.close()


@pytest.fixture
def fetch_text():
    """A plain `FetchText` over a `requests.Session` (no politeness: the sources alone are under test)."""
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT

    def fetch(url: str) -> tuple[int, str]:
        try:
            response = session.get(url, timeout=(2.0, 5.0))
        except requests.RequestException as exc:
            raise PageFetchError(f"{url}: {exc}") from exc
        return response.status_code, response.text

    yield fetch
    session.close()


# ----------------------------------------------------------------------------------------------------------------
# Gallery pages
# ----------------------------------------------------------------------------------------------------------------
def test_parse_srcset_picks_the_largest_entry():
    assert parse_srcset("a.jpg 480w, b.jpg 1080w") == [("a.jpg", 480.0, "w"), ("b.jpg", 1080.0, "w")]
    assert largest_srcset_url("s.jpg 320w, l.jpg 1600w, m.jpg 800w") == "l.jpg"
    assert largest_srcset_url("one.jpg, two.jpg 2x, three.jpg 1.5x") == "two.jpg"
    # Commas inside a URL do not split it (the URL ends at whitespace).
    assert largest_srcset_url("/img/a,b.jpg 100w, /img/c.jpg 50w") == "/img/a,b.jpg"
    assert largest_srcset_url("", None) is None


GALLERY = """<!doctype html><html><head><title>Gallery</title></head><body>
<h1>Photos of Julia Roberts</h1>
<img src="/static/logo.png" alt="site logo">
<img src="small.jpg" srcset="small.jpg 320w, /img/large.jpg 1600w, medium.jpg 800w" alt="red carpet">
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" data-src="lazy/one.jpg" alt="lazy one">
<img class="lazy" data-original="../archive/two.jpg" alt="lazy two">
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" data-srcset="lazy/s3.jpg 1x, lazy/l3.jpg 2x" alt="lazy three">
<picture>
  <source type="image/webp" srcset="pic-400.webp 400w, pic-1200.webp 1200w">
  <source type="image/jpeg" srcset="pic-400.jpg 400w, pic-900.jpg 900w">
  <img src="pic-fallback.jpg" alt="in a picture">
</picture>
<a href="https://cdn.example.org/full/premiere.jpg" title="premiere"><img src="thumbs/premiere_t.jpg"></a>
<a href="/full/award.JPEG?size=orig#top"><img src="thumbs/award_t.jpg" alt="award night"></a>
<a href="press/kit.png">press kit (PNG)</a>
<a href="/about.html">about us</a>
<img src="/img/large.jpg" alt="same file again">
<img src="https://cdn.example.org/full/premiere.jpg" alt="the linked file shown inline">
<a href="page2.html" class="pager">Next &rsaquo;</a>
</body></html>"""


def test_parse_gallery_html_finds_every_kind_of_image():
    page = "https://example.org/people/julia/gallery.html"
    candidates, next_url = parse_gallery_html(GALLERY, page)
    urls = [c.url for c in candidates]
    assert urls == [
        "https://example.org/static/logo.png",
        "https://example.org/img/large.jpg",  # largest srcset entry, not src
        "https://example.org/people/julia/lazy/one.jpg",  # data-src beats the data: placeholder
        "https://example.org/people/archive/two.jpg",  # data-original, relative ../ resolved
        "https://example.org/people/julia/lazy/l3.jpg",  # largest data-srcset density
        "https://example.org/people/julia/pic-1200.webp",  # largest <picture><source srcset>
        "https://cdn.example.org/full/premiere.jpg",  # the link to full size wins over its thumbnail
        "https://example.org/full/award.JPEG?size=orig",  # fragment dropped, query kept
        "https://example.org/people/julia/press/kit.png",  # a plain link to an image file
    ]
    assert not any("thumbs/" in url or "about.html" in url or url.startswith("data:") for url in urls)
    titles = {c.url.rsplit("/", 1)[-1]: c.title for c in candidates}
    assert titles["large.jpg"] == "red carpet" and titles["premiere.jpg"] == "premiere"
    assert titles["award.JPEG?size=orig"] == "award night"
    assert {c.page for c in candidates} == {page}
    assert next_url == "https://example.org/people/julia/page2.html"


@pytest.mark.parametrize("markup, expected", [
    ('<link rel="next" href="/p/2"><a href="/p/9">9</a>', "https://example.org/p/2"),
    ('<a href="?page=3" rel="nofollow next">older photos</a>', "https://example.org/g?page=3"),
    ('<a href="/g/2">»</a>', "https://example.org/g/2"),
    ('<a href="/g/2"> Next page </a>', "https://example.org/g/2"),
    ('<a href="/g/0">Previous</a><a href="/g/5">5</a>', None),
])
def test_next_page_link_detection(markup, expected):
    assert parse_gallery_html(f"<html><body>{markup}</body></html>", "https://example.org/g")[1] == expected


def test_pagination_is_followed_up_to_the_limit(site, fetch_text):
    for n in range(1, 5):
        site.html(f"/g/{n}.html", f'<img src="/img/{n}a.jpg"><img src="/img/{n}b.jpg">'
                                  f'<a rel="next" href="{n + 1}.html">next</a>')
    stats = Counter()
    found = list(gallery_candidates(fetch_text, site.base + "/g/1.html", max_pages=2, stats=stats))
    assert [c.url for c in found] == [f"{site.base}/img/{n}{x}.jpg" for n in (1, 2) for x in "ab"]
    assert stats["pages_fetched"] == 2 and "/g/3.html" not in site.requests
    # A cycle (2 -> 1) ends the crawl instead of looping.
    site.html("/g/2.html", '<img src="/img/2a.jpg"><a rel="next" href="1.html">next</a>')
    found = list(gallery_candidates(fetch_text, site.base + "/g/1.html", max_pages=10))
    assert len(found) == 3 and site.requests.count("/g/1.html") == 2  # once per crawl


def test_robots_txt_is_honoured(site, fetch_text):
    site.pages["/robots.txt"] = (200, "text/plain", "User-agent: *\nDisallow: /private/\n")
    site.html("/private/g.html", '<img src="/img/secret.jpg">')
    site.html("/public/g.html", '<img src="/img/fine.jpg">')
    robots = RobotsPolicy(fetch_text, USER_AGENT)
    stats = Counter()
    assert list(gallery_candidates(fetch_text, site.base + "/private/g.html", robots=robots, stats=stats)) == []
    assert stats["pages_blocked_by_robots"] == 1 and "/private/g.html" not in site.requests
    allowed = list(gallery_candidates(fetch_text, site.base + "/public/g.html", robots=robots))
    assert [c.url for c in allowed] == [site.base + "/img/fine.jpg"]
    assert site.requests.count("/robots.txt") == 1  # parsed once per site
    assert set(site.user_agents) == {USER_AGENT}


@pytest.mark.parametrize("status, verdict", [(404, "allowed"), (410, "allowed"), (403, "disallowed"),
                                             (401, "disallowed"), (429, "unreachable"), (500, "unreachable"),
                                             (503, "unreachable")])
def test_robots_status_codes(site, fetch_text, status, verdict):
    site.pages["/robots.txt"] = (status, "text/plain", "")
    robots = RobotsPolicy(fetch_text, USER_AGENT)
    assert robots.verdict(site.base + "/any/page.html") == verdict
    assert robots.allowed(site.base + "/any/page.html") is (verdict == "allowed")
    # RFC 9309: unreachable means disallowed by default; the option lets it through, and nothing else.
    lenient = RobotsPolicy(fetch_text, USER_AGENT, unreachable="allow")
    assert lenient.allowed(site.base + "/any/page.html") is (verdict != "disallowed")


def test_unreachable_robots_txt_is_reported_as_such(site, fetch_text):
    def down(url):
        raise PageFetchError(f"{url}: connection refused")

    site.html("/g.html", '<img src="/img/a.jpg">')
    stats = Counter()
    with pytest.raises(RobotsUnreachable, match=r"^robots.txt unreachable at .*connection refused") as caught:
        list(gallery_candidates(fetch_text, site.base + "/g.html", robots=RobotsPolicy(down, USER_AGENT),
                                stats=stats))
    assert isinstance(caught.value, RunFailed) and "blocked" not in str(caught.value)
    assert stats == Counter(pages_robots_unreachable=1) and "/g.html" not in site.requests
    allowed = list(gallery_candidates(fetch_text, site.base + "/g.html", stats=stats,
                                      robots=RobotsPolicy(down, USER_AGENT, unreachable="allow")))
    assert [c.url for c in allowed] == [site.base + "/img/a.jpg"] and stats["pages_robots_unreachable"] == 2
    with pytest.raises(InputError, match="robots_unreachable"):
        RobotsPolicy(down, USER_AGENT, unreachable="sometimes")


def test_first_page_failure_is_an_error(site, fetch_text):
    with pytest.raises(PageFetchError, match="404") as caught:
        list(gallery_candidates(fetch_text, site.base + "/nowhere.html"))
    assert isinstance(caught.value, RunFailed)  # the command line reports it in one line, exit 1
    assert str(caught.value) == f"start page {site.base}/nowhere.html answered HTTP 404"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/g.html", "/relative/g.html", "http://"])
def test_start_url_must_be_http(fetch_text, url):
    with pytest.raises(InputError, match="http"):
        list(gallery_candidates(fetch_text, url))
    with pytest.raises(InputError, match="http"):
        list(search_candidates(fetch_text, "x", url=url))
    with pytest.raises(InputError, match="api_url"):
        list(wikimedia_candidates(fetch_text, query="x", api_url=url))


# ----------------------------------------------------------------------------------------------------------------
# Wikimedia Commons API
# ----------------------------------------------------------------------------------------------------------------
def commons_page(pageid, index, name, *, artist, license_name, mime="image/jpeg", thumb=True):
    path = f"https://upload.wikimedia.org/wikipedia/commons/a/ab/{name}"
    info = {"size": 2446118, "width": 2304, "height": 3072, "url": path, "mime": mime,
            "descriptionurl": f"https://commons.wikimedia.org/wiki/File:{name}",
            "extmetadata": {"Artist": {"value": artist, "source": "commons-desc-page"},
                            "LicenseShortName": {"value": license_name, "source": "commons-desc-page"}}}
    if thumb:
        info.update(thumburl=f"https://upload.wikimedia.org/wikipedia/commons/thumb/a/ab/{name}/960px-{name}",
                    thumbwidth=960, thumbheight=1280)
    return {"pageid": pageid, "ns": 6, "title": f"File:{name.replace('_', ' ')}", "index": index,
            "imagerepository": "local", "imageinfo": [info]}


FIRST_ANSWER = {
    "batchcomplete": True,
    "continue": {"gsroffset": 2, "continue": "gsroffset||"},
    "query": {"pages": [
        # The API lists pages by id; `index` is the search rank.
        commons_page(900, 2, "Julia_Roberts_2011.jpg", license_name="CC BY 3.0",
                     artist='<a href="//commons.wikimedia.org/wiki/User:David_Shankbone" '
                            'title="User:David Shankbone">David Shankbone</a>'),
        commons_page(100, 1, "Julia_Roberts_Cannes.jpg", license_name="CC BY-SA 4.0",
                     artist='<bdi><a href="https://www.wikidata.org/wiki/Q1">Georges\n Biard</a></bdi> &amp; co'),
    ]},
}
SECOND_ANSWER = {
    "batchcomplete": True,
    "query": {"pages": [
        commons_page(300, 3, "Signature_of_Julia_Roberts.svg", mime="image/svg+xml", license_name="PD",
                     artist="unknown"),
        commons_page(400, 4, "Julia_Roberts_1990.png", license_name="Public domain", artist="", thumb=False),
    ]},
}


def test_wikimedia_search_with_continuation(site, fetch_text):
    def api(query):
        answer = SECOND_ANSWER if query.get("gsroffset") == ["2"] else FIRST_ANSWER
        return 200, "application/json", json.dumps(answer)

    site.pages["/w/api.php"] = api
    stats = Counter()
    found = list(wikimedia_candidates(fetch_text, query="Julia Roberts", api_url=site.base + "/w/api.php",
                                      thumb_width=960, stats=stats))
    assert [c.title for c in found] == ["Julia Roberts Cannes", "Julia Roberts 2011", "Julia Roberts 1990"]
    cannes, shankbone, old = found
    assert cannes.author == "Georges Biard & co" and cannes.license == "CC BY-SA 4.0"
    assert shankbone.author == "David Shankbone" and shankbone.license == "CC BY 3.0"
    assert shankbone.url.endswith("/thumb/a/ab/Julia_Roberts_2011.jpg/960px-Julia_Roberts_2011.jpg")
    assert shankbone.page == "https://commons.wikimedia.org/wiki/File:Julia_Roberts_2011.jpg"
    assert old.url == "https://upload.wikimedia.org/wikipedia/commons/a/ab/Julia_Roberts_1990.png"  # no thumb
    assert old.author == "" and old.license == "Public domain"
    assert stats["api_requests"] == 2

    first, second = (parse_qs(urlsplit(path).query) for path in site.requests)
    expected = {"action": "query", "format": "json", "generator": "search", "gsrnamespace": "6",
                "gsrsearch": "Julia Roberts filetype:bitmap", "prop": "imageinfo",
                "iiprop": "url|extmetadata|size|mime", "iiurlwidth": "960"}
    assert {key: first[key][0] for key in expected} == expected
    assert "gsroffset" not in first
    assert second["gsroffset"] == ["2"] and second["continue"] == ["gsroffset||"]
    assert second["gsrsearch"] == first["gsrsearch"]


def test_wikimedia_category_query_and_formatversion_1(site, fetch_text):
    pages = {str(p["pageid"]): p for p in FIRST_ANSWER["query"]["pages"]}  # formatversion=1: a dict by id
    site.pages["/w/api.php"] = (200, "application/json", json.dumps({"query": {"pages": pages}}))
    found = list(wikimedia_candidates(fetch_text, category="Julia Roberts", api_url=site.base + "/w/api.php"))
    assert [c.title for c in found] == ["Julia Roberts Cannes", "Julia Roberts 2011"]
    query = parse_qs(urlsplit(site.requests[0]).query)
    assert query["generator"] == ["categorymembers"] and query["gcmtype"] == ["file"]
    assert query["gcmtitle"] == ["Category:Julia Roberts"]


def test_wikimedia_api_error_is_reported(site, fetch_text):
    error = {"error": {"code": "badvalue", "info": "Unrecognized value for parameter"}}
    site.pages["/w/api.php"] = (200, "application/json", json.dumps(error))
    with pytest.raises(PageFetchError, match="badvalue"):
        list(wikimedia_candidates(fetch_text, query="x", api_url=site.base + "/w/api.php"))
    with pytest.raises(ValueError):
        list(wikimedia_candidates(fetch_text, query="x", category="y"))


def test_strip_html_and_protocol_relative_urls():
    assert strip_html('<span class="fn">Jane <b>Doe</b></span>\n') == "Jane Doe"
    assert strip_html("Tom &amp; Jerry") == "Tom & Jerry"
    page = commons_page(1, 1, "A.jpg", artist="", license_name="")
    page["imageinfo"][0]["thumburl"] = "//upload.wikimedia.org/x/A.jpg"
    assert parse_wikimedia_response({"query": {"pages": [page]}})[0].url == "https://upload.wikimedia.org/x/A.jpg"


# ----------------------------------------------------------------------------------------------------------------
# Image-search results page (fixture only: the live markup is undocumented and changes)
# ----------------------------------------------------------------------------------------------------------------
def iusc(meta) -> str:
    value = json.dumps(meta) if not isinstance(meta, str) else meta
    escaped = value.replace("&", "&amp;").replace('"', "&quot;")
    return f'<div class="imgpt"><a class="iusc" m="{escaped}" href="/images/search?view=detail"><img src="t.jpg"></a></div>'


SEARCH_PAGE = "<html><body><div id='mmComponent_images_1'>" + "".join([
    iusc({"murl": "https://img.example.com/julia-1.jpg", "purl": "https://news.example.com/story",
          "t": "Julia <strong>Roberts</strong> at the premiere", "turl": "https://tse.example/th?id=1"}),
    iusc({"murl": "https://img.example.com/julia-2.jpg", "purl": "not a url", "t": "second"}),
    iusc("{not json"),
    iusc({"murl": "javascript:alert(1)", "purl": "https://evil.example"}),
    iusc({"murl": "https://img.example.com/julia-1.jpg#dup", "t": "duplicate"}),
    iusc(["a", "list"]),
    '<a class="other" m=\'{"murl": "https://img.example.com/not-a-result.jpg"}\'>x</a>',
]) + "</div></body></html>"


def test_parse_search_html():
    page = "https://www.bing.com/images/search?q=julia+roberts"
    found, next_url = parse_search_html(SEARCH_PAGE, page)
    assert found == [
        Candidate(url="https://img.example.com/julia-1.jpg", page="https://news.example.com/story",
                  title="Julia Roberts at the premiere"),
        Candidate(url="https://img.example.com/julia-2.jpg", page=page, title="second"),
    ]
    assert next_url is None


def test_search_candidates_reads_a_served_results_page(site, fetch_text):
    site.html("/images/search", SEARCH_PAGE)
    found = list(search_candidates(fetch_text, "Julia Roberts", search_url=site.base + "/images/search",
                                   max_pages=3))
    assert [c.url for c in found] == ["https://img.example.com/julia-1.jpg", "https://img.example.com/julia-2.jpg"]
    # The second page adds nothing new, so the third is never asked for.
    offsets = [parse_qs(urlsplit(path).query)["first"] for path in site.requests]
    assert offsets == [["1"], ["36"]]
    assert parse_qs(urlsplit(site.requests[0]).query)["q"] == ["Julia Roberts"]
    # robots.txt forbidding result pages: the source yields nothing and says why.
    site.pages["/robots.txt"] = (200, "text/plain", "User-agent: *\nDisallow: /images/search\n")
    stats = Counter()
    blocked = list(search_candidates(fetch_text, "x", url=site.base + "/images/search?q=x",
                                     robots=RobotsPolicy(fetch_text, USER_AGENT), stats=stats))
    assert blocked == [] and stats["pages_blocked_by_robots"] == 1
