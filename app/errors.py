"""Errors leave the service as JSON ``{"code", "message"}``.

Segment's SDKs read exactly these two keys from an error body; without them they retry even a
4xx, so every error response keeps this shape.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger(__name__)


class RequestError(Exception):
    """A request refused at the door: ``status`` with ``{"code", "message", ...details}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **details: Any,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details


def error_response(status: int, code: str, message: str, **extra):
    body = {"code": code, "message": message, **extra}
    response = jsonify(body)
    response.status_code = status
    return response


def _code_for(exc: HTTPException) -> str:
    return (exc.name or "error").lower().replace(" ", "_").replace("'", "")


NUL_MESSAGE = "contains a NUL character (U+0000), which cannot be stored"


def register(app: Flask) -> None:
    @app.before_request
    def _refuse_nul_in_the_url():
        """PostgreSQL cannot hold U+0000: a path or query with one is refused at the door
        (bodies are checked where they are parsed)."""
        if "\x00" in request.path or b"%00" in request.query_string.lower():
            return error_response(400, "invalid_characters", f"the URL {NUL_MESSAGE}")
        admin_form = request.method == "POST" and request.path.startswith("/app/")
        if admin_form and any("\x00" in v for v in request.form.values()):
            return error_response(400, "invalid_characters", f"the form {NUL_MESSAGE}")
        return None

    @app.errorhandler(RequestError)
    def _refused(exc: RequestError):
        response = error_response(exc.status, exc.code, exc.message, **exc.details)
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        response = error_response(exc.code or 500, _code_for(exc), exc.description or "")
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unhandled(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_server_error", InternalServerError.description)
