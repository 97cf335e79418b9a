"""Serve a folder over HTTP on 127.0.0.1, so the real scraper can fetch the synthetic web.

A missing file answers 404 (that is how the web's broken link breaks); a busy port falls back to a free one with a
warning. The demo serves on `DEMO_PORT` every time: the scraper's manifests are keyed by URL, so a re-run resumes.
"""
from __future__ import annotations

import errno
import functools
import http.server
import threading
import warnings
from pathlib import Path

DEMO_PORT = 8701


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - no log line per request
        pass


class ServedFolder:
    """The folder `root` served from a daemon thread at `.url` until `.stop()` (or the end of a `with` block, which
    gets the URL); `port` 0 picks a free one."""

    def __init__(self, root: str | Path, host: str = "127.0.0.1", port: int = 0):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"nothing to serve: {self.root} is not a folder")
        handler = functools.partial(_QuietHandler, directory=str(self.root))
        try:
            self._server = http.server.ThreadingHTTPServer((host, port), handler)
        except OSError as error:
            if port == 0 or error.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise
            self._server = http.server.ThreadingHTTPServer((host, 0), handler)
            warnings.warn(f"port {port} on {host} is busy; serving {self.root} on free port "
                          f"{self._server.server_address[1]} instead", RuntimeWarning, stacklevel=2)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://{host}:{self.port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and free the port (safe to call twice)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *exc_info) -> None:
        self.stop()


serve_folder = ServedFolder  # `with serve_folder(root) as url:` serves `root` while the block runs
