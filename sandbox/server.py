"""A sandbox's WSGI app on a loopback port in a background thread (tests, demo, benchmarks),
over HTTP or, given an SSL context, HTTPS."""

from __future__ import annotations

import ssl
import threading
from typing import Self

from werkzeug.serving import WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:
        pass


class LoopbackServer:
    def __init__(self, app, port: int = 0, quiet: bool = True, tls: ssl.SSLContext | None = None):
        handler = _QuietHandler if quiet else WSGIRequestHandler
        self.server = make_server(
            "127.0.0.1", port, app, threaded=True, request_handler=handler, ssl_context=tls
        )
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)
