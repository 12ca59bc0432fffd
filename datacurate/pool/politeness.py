"""Per-host politeness for img2dataset's download: a crawl must not hammer one site.

img2dataset has no per-host limit: each shard is fetched by ``thread_count`` threads, and a
url list that holds many images of one host (a CDN, a shop) sends it that many requests at
once, from every process. Here each download process lets at most ``per_host`` requests to
one host be in flight and starts two requests to one host at least ``interval`` seconds apart.
The limit holds per process (img2dataset's processes and Spark's executors do not talk to each
other); with P processes a host sees at most P x per_host requests at once.

How it reaches the workers: ``img2dataset.download`` builds one ``Downloader`` in the driver
and ships it (pickled) to the processes or executors. ``polite`` swaps in ``PoliteDownloader``,
a subclass that carries the limits in its own fields and, in whichever process it is called,
wraps img2dataset's ``download_image`` with the gate before fetching a shard.
"""
from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import urlsplit

from img2dataset import downloader as _img2dataset_downloader

DEFAULT_PER_HOST = 8          # requests in flight to one host, per download process


@dataclass(frozen=True)
class Politeness:
    per_host: int = DEFAULT_PER_HOST   # 0: no limit
    interval: float = 0.0              # seconds between two request starts to one host
    exempt: tuple[str, ...] = ()       # host:port not limited (the offline pool's own loopback server)

    @property
    def limits(self) -> bool:
        return self.per_host > 0 or self.interval > 0


class HostGate:
    """Admits a request to a host when fewer than ``per_host`` are in flight there and its last
    start is ``interval`` seconds ago; thread-safe, one per process."""

    def __init__(self, rules: Politeness):
        self.rules = rules
        self._lock = threading.Lock()
        self._slots: dict[str, threading.Semaphore] = {}
        self._next_start: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, url: str) -> Iterator[None]:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if not host or parts.netloc.lower() in self.rules.exempt:
            yield
            return
        with self._lock:
            slot = self._slots.get(host)
            if slot is None and self.rules.per_host > 0:
                slot = self._slots[host] = threading.Semaphore(self.rules.per_host)
        if slot is not None:
            slot.acquire()
        try:
            if self.rules.interval > 0:
                with self._lock:   # book the next start time for this host, then wait for it outside the lock
                    now = time.monotonic()
                    start = max(now, self._next_start.get(host, now))
                    self._next_start[host] = start + self.rules.interval
                if start > now:
                    time.sleep(start - now)
            yield
        finally:
            if slot is not None:
                slot.release()


_ORIGINAL = _img2dataset_downloader.download_image
_installed: Politeness | None = None     # the rules download_image is gated with in this process
_install_lock = threading.Lock()


def install(rules: Politeness) -> None:
    """Route img2dataset's ``download_image`` in this process through a gate with these rules."""
    global _installed
    with _install_lock:
        if _installed == rules:
            return
        gate = HostGate(rules)

        def download_image(row, *args, **kwargs):
            with gate(row[1]):
                return _ORIGINAL(row, *args, **kwargs)

        _img2dataset_downloader.download_image = download_image if rules.limits else _ORIGINAL
        _installed = rules


class PoliteDownloader(_img2dataset_downloader.Downloader):
    """img2dataset's Downloader with the politeness rules it was built under, applied where it runs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.politeness = _pending or Politeness()

    def __call__(self, row):
        install(self.politeness)
        return super().__call__(row)


_pending: Politeness | None = None


@contextlib.contextmanager
def polite(rules: Politeness) -> Iterator[None]:
    """While inside, ``img2dataset.download`` builds a PoliteDownloader carrying ``rules``."""
    global _pending
    import importlib

    img2dataset_main = importlib.import_module("img2dataset.main")   # the package's `main` attribute is the function

    with _install_lock:
        saved = img2dataset_main.Downloader
        _pending, img2dataset_main.Downloader = rules, PoliteDownloader
    try:
        yield
    finally:
        with _install_lock:
            _pending, img2dataset_main.Downloader = None, saved
