"""Requests to addresses an admin typed (trigger targets), without server-side request forgery.

A target is ``https://`` (plain ``http://`` only to this machine, and only outside
production), carries no user-info, and every address its host resolves to is public: no
loopback, private, link-local, CGNAT, multicast, reserved or IPv4-mapped IPv6 address. The
request then connects to the address that was checked (no second lookup a rebinding DNS
server could answer differently), follows no redirect, uses no proxy from the environment,
and reports only the status code: an answer's body is never stored or logged. Slack actions go
only to Slack's incoming-webhook host.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

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


class _PinnedAdapter(HTTPAdapter):
    """Connects to ``address`` while speaking to (and verifying the certificate of) the
    URL's host name."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(max_retries=0)

    def add_headers(self, request, **kwargs) -> None:
        request.headers["Host"] = urlsplit(request.url).netloc  # not the pinned address

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        host_params, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
        name = host_params["host"]
        host_params["host"] = self.address
        if host_params["scheme"] == "https":
            pool_kwargs = {**pool_kwargs, "server_hostname": name, "assert_hostname": name}
        return self.poolmanager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout: tuple[float, float],
    allow_loopback: bool,
    slack: bool = False,
) -> int:
    """POST ``body`` to ``url`` under the rules above; the answer's status code.
    ``UnsafeTarget`` for a refused target, ``requests.RequestException`` for no answer."""
    address = resolve(url, allow_loopback, slack)[0]
    parts = urlsplit(url)
    with requests.Session() as session:
        session.trust_env = False  # no proxy or .netrc from the environment
        session.mount(f"{parts.scheme}://", _PinnedAdapter(address))
        answer = session.post(
            url, data=body, headers=headers, timeout=timeout, allow_redirects=False, stream=True
        )
        answer.close()  # the body is never read
    return answer.status_code
