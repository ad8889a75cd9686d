"""A target that answers one byte at a time (a status line, then a header that never ends
soon): what holds a sender that only has per-read timeouts."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class DripServer:
    def __init__(self, interval: float = 0.2, total: float = 8.0) -> None:
        self.interval, self.total = interval, total
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests = 0
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.requests += 1
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            ends = time.monotonic() + self.total
            while time.monotonic() < ends and not self._stop.is_set():
                conn.sendall(b"a")
                time.sleep(self.interval)
            conn.sendall(b"\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
