"""What a connector needs from the app, backed by the database so every process shares it:
the per-portal request budget and the tenant's OAuth tokens."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

from sqlalchemy import select

from app.bulk import dialect_insert
from app.db import Database
from app.models import RateWindow, Tenant
from app.security import TokenCipher
from connectors.base import AuthorizationLost

log = logging.getLogger(__name__)

# Refresh an access token this long before the CRM says it expires.
REFRESH_MARGIN = dt.timedelta(minutes=5)


class SharedRateBudget:
    """At most ``limit`` requests in any ``window`` seconds for one key (a HubSpot portal),
    counted across every process: each grant is recorded under the key's row lock."""

    def __init__(
        self,
        db: Database,
        key: str,
        limit: int,
        window: float = 10.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.db, self.key, self.limit, self.window = db, key, limit, window
        self.clock, self.sleep = clock, sleep
        with db.system_transaction() as session:
            session.connection().execute(
                dialect_insert(session)(RateWindow.__table__).on_conflict_do_nothing(),
                [{"key": key, "grants": [], "paused_until": 0.0}],
            )

    def _row(self, session) -> RateWindow:
        return session.scalars(
            select(RateWindow).where(RateWindow.key == self.key).with_for_update()
        ).one()

    def acquire(self) -> None:
        while True:
            with self.db.system_transaction() as session:
                row = self._row(session)
                now = self.clock()
                grants = [t for t in row.grants if t > now - self.window]
                if row.paused_until > now:
                    wait = row.paused_until - now
                elif len(grants) < self.limit:
                    row.grants = [*grants, now]
                    return
                else:
                    wait = grants[0] + self.window - now
            self.sleep(max(wait, 0.01))

    def pause(self, seconds: float) -> None:
        with self.db.system_transaction() as session:
            row = self._row(session)
            row.paused_until = max(row.paused_until, self.clock() + seconds)


class TenantTokens:
    """A tenant's CRM tokens: the access token is refreshed shortly before it expires, by
    one process at a time (the tenant row is locked and re-read), so concurrent workers use the
    same fresh token rather than each refreshing. A refused refresh token marks the tenant as
    needing re-authorisation."""

    def __init__(
        self,
        db: Database,
        tenant_id: int,
        cipher: TokenCipher,
        refresh: Callable[[str], object],
        clock: Callable[[], dt.datetime],
    ):
        self.db, self.tenant_id, self.cipher = db, tenant_id, cipher
        self._refresh, self.clock = refresh, clock
        self._cached: tuple[str, dt.datetime] | None = None

    def access_token(self) -> str:
        if self._cached and self._cached[1] - REFRESH_MARGIN > self.clock():
            return self._cached[0]
        return self._locked_refresh(stale=None)

    def refresh(self, stale: str) -> str:
        return self._locked_refresh(stale=stale)

    def _locked_refresh(self, stale: str | None) -> str:
        with self.db.system_transaction() as session:
            tenant = session.scalars(
                select(Tenant).where(Tenant.id == self.tenant_id).with_for_update()
            ).one()
            if tenant.status == "needs_reauth" or not tenant.refresh_token_encrypted:
                raise AuthorizationLost(f"tenant {self.tenant_id} must reinstall the app")
            current = (
                self.cipher.decrypt(tenant.access_token_encrypted)
                if tenant.access_token_encrypted
                else None
            )
            expires = tenant.access_token_expires_at
            fresh_enough = expires is not None and expires - REFRESH_MARGIN > self.clock()
            if current and fresh_enough and current != stale:
                # Someone refreshed already (or it is simply still valid).
                self._cached = (current, expires)
                return current
            refresh_token = self.cipher.decrypt(tenant.refresh_token_encrypted)
            refused = None
            try:
                tokens = self._refresh(refresh_token)
            except AuthorizationLost as exc:
                # The grant is refused for good (RFC 6749 invalid_grant); any other failure of
                # the token endpoint is retried on the next round. Recorded (the transaction
                # commits), then raised below.
                refused = exc
                tenant.status = "needs_reauth"
                tenant.access_token_encrypted = None
                tenant.settings = {
                    **(tenant.settings or {}),
                    "needs_reauth_since": self.clock().isoformat(),
                }
            else:
                # Stored before the row lock is released: a process waiting on it sees it.
                expires = self.clock() + dt.timedelta(seconds=tokens.expires_in)
                tenant.access_token_encrypted = self.cipher.encrypt(tokens.access_token)
                tenant.refresh_token_encrypted = self.cipher.encrypt(tokens.refresh_token)
                tenant.access_token_expires_at = expires
                self._cached = (tokens.access_token, expires)
        if refused is not None:
            log.warning("tenant %s: refresh token refused, needs re-authorisation", self.tenant_id)
            raise AuthorizationLost(
                f"tenant {self.tenant_id}: the CRM refused the refresh token ({refused})"
            ) from refused
        log.info("tenant %s: access token refreshed", self.tenant_id)
        return tokens.access_token
