"""One pattern for every inbound edge (Sentry's validated request): an object reads the body
within its size cap, then ``authenticate`` (a signature or a key), ``parse`` (untrusted data
into typed values) and ``resolve`` (the tenant it is for). A step that refuses raises
``RequestError`` with its HTTP status; the app answers it as JSON ``{"code", "message"}``.
Nothing past ``validated()`` checks the request again."""

from __future__ import annotations

from typing import Self

from app.bodies import read_capped
from app.services import Services

MAX_BODY_BYTES = 1024 * 1024


class InboundRequest:
    max_bytes: int = MAX_BODY_BYTES

    def __init__(self, svc: Services):
        self.svc = svc
        self.body = read_capped(self.max_bytes)
        self.tenant_id: int | None = None

    @classmethod
    def validated(cls, svc: Services, *args, **kwargs) -> Self:
        inbound = cls(svc, *args, **kwargs)
        inbound.authenticate()
        inbound.parse()
        inbound.resolve()
        return inbound

    def authenticate(self) -> None:
        raise NotImplementedError

    def parse(self) -> None:
        """Turn the body (and query) into typed values; nothing to parse by default."""

    def resolve(self) -> None:
        """Find the tenant the request is for; the edge's own business by default."""
