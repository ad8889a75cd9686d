"""The cyclic garbage collector held off while a scoring pass runs.

A full pass builds millions of small objects (facts, rows) that live until the pass ends, and
Python's collector walks the live ones again and again as they pile up: a fifth of the daily
pass at 10M events (32 s to 26 s without it). What a pass makes is freed by reference counting
as soon as it is let go (dicts and lists, no cycles), so nothing waits for the collector.

Process-wide, as the collector is: passes in other threads share one count, and the collector
comes back (if it was on) when the last of them ends.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_holders = 0
_was_enabled = False


@contextmanager
def collector_paused() -> Iterator[None]:
    global _holders, _was_enabled
    with _lock:
        if _holders == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _was_enabled:
                gc.enable()
