"""Requests to addresses an admin typed (trigger targets), without server-side request forgery.

A target is ``https://`` (plain ``http://`` only to this machine, and only outside
production), carries no user-info, and every address its host resolves to is public: no
loopback, private, link-local, CGNAT, multicast, reserved or IPv4-mapped IPv6 address. The
request then connects to the address that was checked (no second lookup a rebinding DNS
server could answer differently), follows no redirect, uses no proxy from the environment,
and reports only the status code: an answer's body is never stored or logged. Slack actions go
only to Slack's incoming-webhook host.

Each request has a wall-clock deadline, not only per-read timeouts: a target that answers one
byte every few seconds would otherwise hold the sender for as long as it likes. At the deadline
the connection's socket is shut down, whatever the request is waiting for.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

SLACK_WEBHOOK_HOST = "hooks.slack.com"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class UnsafeTarget(ValueError):
    """The URL may not be called; the message says why (without the URL's secret parts)."""


def _getaddrinfo(host: str, port: int):
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def _forbidden(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and (ip.ipv4_mapped or ip.sixtofour or ip.teredo):
        return True
    return not ip.is_global or ip.is_multicast


def check_url(url: str, allow_loopback: bool, slack: bool = False) -> str | None:
    """What is wrong with ``url`` as a target, from its text alone (None: nothing)."""
    try:
        parts = urlsplit(url)
        if parts.port == 0:
            return "a URL with a real port"
    except ValueError:
        return "a valid URL"
    host = (parts.hostname or "").lower()
    if not host:
        return "an https:// URL with a host"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "a URL without a user name or password in it"
    loopback = allow_loopback and host in LOOPBACK_NAMES
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        return "an https:// URL"
    if slack and host != SLACK_WEBHOOK_HOST and not loopback:
        return f"a Slack incoming-webhook URL (https://{SLACK_WEBHOOK_HOST}/services/…)"
    return None


def resolve(url: str, allow_loopback: bool, slack: bool = False) -> list[str]:
    """The checked addresses ``url``'s host resolves to; ``UnsafeTarget`` if any is not
    public (or the URL itself is refused)."""
    problem = check_url(url, allow_loopback, slack)
    if problem:
        raise UnsafeTarget(f"the target must be {problem}")
    parts = urlsplit(url)
    host = parts.hostname.lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = sorted({info[4][0] for info in _getaddrinfo(host, port)})
    except (OSError, UnicodeError) as exc:
        raise UnsafeTarget(f"{host} does not resolve") from exc
    if not addresses:
        raise UnsafeTarget(f"{host} does not resolve")
    loopback = allow_loopback and host in LOOPBACK_NAMES
    for address in addresses:
        if loopback and ipaddress.ip_address(address.split("%", 1)[0]).is_loopback:
            continue
        if _forbidden(address):
            raise UnsafeTarget(f"{host} resolves to {address}, which is not a public address")
    return addresses


class DeadlinePassed(requests.Timeout):
    """The target did not answer within the request's deadline."""


class _Deadline:
    """Shuts a connection's socket down at a moment on the monotonic clock."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.sockets: list[socket.socket] = []
        self.passed = False
        self._timer = threading.Timer(max(deadline - time.monotonic(), 0.0), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        self.passed = True
        for sock in self.sockets:
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()

    def pools(self) -> dict[str, type]:
        """Connection pool classes whose connections register their socket here (the raw TCP
        socket, so a TLS handshake in progress is cut too)."""
        watch = self

        def watched(base: type) -> type:
            class Watched(base):
                def _new_conn(self):
                    sock = super()._new_conn()
                    watch.sockets.append(sock)
                    if watch.passed:
                        watch._expire()
                    return sock

            return Watched

        return {
            "http": type("Pool", (HTTPConnectionPool,), {"ConnectionCls": watched(HTTPConnection)}),
            "https": type(
                "Pool", (HTTPSConnectionPool,), {"ConnectionCls": watched(HTTPSConnection)}
            ),
        }


class _PinnedAdapter(HTTPAdapter):
    """Connects to ``address`` while speaking to (and verifying the certificate of) the
    URL's host name; with a ``deadline``, its connections are cut when it passes."""

    def __init__(self, address: str, deadline: _Deadline | None = None) -> None:
        self.address = address
        super().__init__(max_retries=0)
        if deadline is not None:
            self.poolmanager.pool_classes_by_scheme = deadline.pools()

    def add_headers(self, request, **kwargs) -> None:
        request.headers["Host"] = urlsplit(request.url).netloc  # not the pinned address

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        host_params, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
        name = host_params["host"]
        host_params["host"] = self.address
        if host_params["scheme"] == "https":
            pool_kwargs = {**pool_kwargs, "server_hostname": name, "assert_hostname": name}
        return self.poolmanager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)


CONNECT_TIMEOUT = 5.0


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    deadline: float,
    allow_loopback: bool,
    slack: bool = False,
) -> int:
    """POST ``body`` to ``url`` under the rules above, answered within ``deadline`` seconds
    of wall-clock time; the answer's status code. ``UnsafeTarget`` for a refused target,
    ``DeadlinePassed`` when the deadline passed, ``requests.RequestException`` for no answer."""
    address = resolve(url, allow_loopback, slack)[0]
    parts = urlsplit(url)
    watch = _Deadline(time.monotonic() + deadline)
    try:
        with requests.Session() as session:
            session.trust_env = False  # no proxy or .netrc from the environment
            session.mount(f"{parts.scheme}://", _PinnedAdapter(address, watch))
            answer = session.post(
                url,
                data=body,
                headers=headers,
                timeout=(min(CONNECT_TIMEOUT, deadline), deadline),
                allow_redirects=False,
                stream=True,
            )
            answer.close()  # the body is never read
    except requests.RequestException as exc:
        if watch.passed:
            raise DeadlinePassed(f"no answer within {deadline:g} s") from exc
        raise
    finally:
        watch.cancel()
    if watch.passed:
        raise DeadlinePassed(f"no answer within {deadline:g} s")
    return answer.status_code
