"""An admin's browser going through an app install against the local sandboxes: our install URL
→ the CRM's consent screen, where the admin picks the account (``choice``: the query parameter
the sandbox's account picker adds) → our callback. Returns the page the install ends on."""

from __future__ import annotations

import http.cookiejar
import ssl
import urllib.request
from urllib.parse import urlencode


class _Stop(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # hand the redirect back instead of following it


def install_page(
    start_url: str, choice: dict[str, str], tls: ssl.SSLContext | None = None, timeout=60
) -> str:
    handlers = [urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())]
    if tls is not None:
        handlers.append(urllib.request.HTTPSHandler(context=tls))
    stopping = urllib.request.build_opener(*handlers, _Stop())
    following = urllib.request.build_opener(*handlers)
    try:
        stopping.open(start_url, timeout=timeout)
    except urllib.error.HTTPError as redirect:
        if redirect.code not in (301, 302, 303, 307):
            raise
        consent = redirect.headers["Location"]
    else:
        raise RuntimeError(f"{start_url} did not redirect to the CRM's consent screen")
    with following.open(f"{consent}&{urlencode(choice)}", timeout=timeout) as response:
        return response.read().decode()


def write_key_on(page: str) -> str:
    """The write key a first install shows."""
    if "<pre>" not in page:
        raise RuntimeError(f"the install did not complete: {page[:300]}")
    return page.split("<pre>")[1].split("</pre>")[0].strip()
