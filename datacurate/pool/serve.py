"""Serve a pool's ``www/`` folder on loopback so img2dataset downloads it as from the web.

The server lives in a background thread of the process that runs the download job
and is stopped by it; a missing file answers 404 exactly as a dead link on the web.
``delay`` adds a per-request latency (seconds) to imitate a slow remote host.
"""
from __future__ import annotations

import contextlib
import functools
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator


class _QuietHandler(SimpleHTTPRequestHandler):
    """Static files, no access log on stderr, optional latency."""

    delay = 0.0

    def log_message(self, format, *args):  # noqa: A002 - signature fixed by http.server
        pass

    def do_GET(self):
        if self.delay:
            time.sleep(self.delay)
        super().do_GET()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # img2dataset opens many connections at once


@contextlib.contextmanager
def serve_directory(root: str | Path, host: str = "127.0.0.1", port: int = 0,
                    delay: float = 0.0, advertise: str | None = None) -> Iterator[str]:
    """Serve ``root`` on ``host`` at a free port; yield the base url ``http://host:port/``.

    ``advertise``: the host name put in the url when binding to all interfaces
    (``host="0.0.0.0"``) for executors on other machines.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory to serve")
    handler = type("Handler", (_QuietHandler,), {"delay": float(delay)})
    server = _Server((host, port), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="datacurate-www", daemon=True)
    thread.start()
    try:
        yield f"http://{advertise or host}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
