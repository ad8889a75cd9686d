"""The ``worker`` process: runs scheduled jobs apart from the web processes."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Worker:
    """Runs ``tick`` every ``interval`` seconds until SIGTERM/SIGINT, then exits cleanly."""

    def __init__(self, tick: Callable[[], None], interval: float):
        self._tick = tick
        self._interval = interval
        self._stop = threading.Event()

    def stop(self, *_args) -> None:
        log.info("worker stopping")
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> None:
        log.info("worker started (tick every %ss)", self._interval)
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:
                log.exception("worker tick failed; continuing")
            self._stop.wait(self._interval)
        log.info("worker stopped")
