"""Security headers on every answer: no framing of the service's pages, no content sniffing,
no referrer to other sites, HSTS in production; and nothing a browser may keep of the pages that
show a tenant's data or keys (the admin pages and the install page)."""

from __future__ import annotations

from flask import Flask, Response, request

PRIVATE_PREFIXES = ("/app/", "/hubspot/oauth-callback", "/salesforce/oauth-callback")


def register(app: Flask, production: bool) -> None:
    @app.after_request
    def _security_headers(response: Response) -> Response:
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("X-Frame-Options", "DENY")
        if response.mimetype == "text/html":
            headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
        if production:
            headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        if request.path.startswith(PRIVATE_PREFIXES) or request.path == "/app":
            headers["Cache-Control"] = "no-store"
        return response
