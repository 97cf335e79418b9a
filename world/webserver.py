"""Serve a folder over HTTP on the loopback interface, so the real scraper can fetch the synthetic web.

`serve_folder(root)` is a context manager yielding the base URL (`http://127.0.0.1:<port>/`); `ServedFolder` is the
same server as an object with `.url` and `.stop()`, handy in notebooks. A missing file answers 404 (that is how
the synthetic web's broken link breaks). A busy port is not an error: the server warns and takes a free one.

The scraper's manifests are keyed by URL, so a demo that should resume across runs serves on the same port each
time (`DEMO_PORT`); on a free port every run would see new URLs and download everything again (deduped, but slow).
"""
from __future__ import annotations

import errno
import functools
import http.server
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# Port the demo notebook serves the synthetic web on (fixed so that re-runs see the same URLs and resume).
DEMO_PORT = 8701


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static files from one folder, without a log line per request on stderr."""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class names it `format`
        pass


class ServedFolder:
    """A folder served by a `ThreadingHTTPServer` in a daemon thread.

    root: the folder to serve (the site root).
    host: interface to bind; the default keeps the server on this machine.
    port: 0 picks a free port; a busy port falls back to a free one with a `RuntimeWarning`.
    """

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
        self.host = host
        self.port = int(self._server.server_address[1])
        self.url = f"http://{host}:{self.port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"serve {self.root.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and free the port (safe to call twice)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> "ServedFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ServedFolder({str(self.root)!r}, url={self.url!r})"


@contextmanager
def serve_folder(root: str | Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `root` while the `with` block runs; yields the base URL ending in `/`."""
    served = ServedFolder(root, host, port)
    try:
        yield served.url
    finally:
        served.stop()
