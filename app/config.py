"""Configuration from environment variables.

Every variable is documented in the README's configuration table; keep the two in step.
Development gets safe defaults so a newcomer runs the service with nothing set; production
refuses to start without real secrets.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.fernet import Fernet

ENVIRONMENTS = ("development", "test", "production")
DEV_SECRET_KEY = "dev-only-insecure-secret-key"
MIN_SECRET_KEY_LENGTH = 32


class ConfigError(RuntimeError):
    """The environment does not describe a service that may start."""


def _default_sqlite_url(instance_path: Path) -> str:
    return f"sqlite:///{instance_path / 'pql.sqlite3'}"


def normalise_database_url(url: str) -> str:
    """Accept the URLs hosting platforms hand out and pick our PostgreSQL driver (psycopg 3)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _dev_encryption_key(secret_key: str) -> str:
    """A stable development-only Fernet key derived from SECRET_KEY."""
    digest = hashlib.sha256(b"pql-token-encryption:" + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from exc
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    env: str
    secret_key: str
    token_encryption_keys: tuple[str, ...]
    database_url: str
    log_level: str = "INFO"
    public_url: str = "http://127.0.0.1:5000"
    # SECRET_KEY or a token key is the public development value (refused beside a real CRM
    # app, and by the web server on a non-loopback address).
    development_secrets: bool = False
    # Ingestion limits follow Segment's HTTP API: 32 KB per message, 500 KB per batch.
    max_message_bytes: int = 32 * 1024
    max_batch_bytes: int = 500 * 1024
    # Scoring, then the CRM push, every this many seconds: an event reaches the CRM within it.
    scoring_interval_seconds: int = 30
    # HubSpot app: HubSpot installs are on when its client id and secret are set.
    hubspot_client_id: str = ""
    hubspot_client_secret: str = ""
    hubspot_base_url: str = "https://api.hubapi.com"
    hubspot_authorize_url: str = "https://app.hubspot.com/oauth/authorize"
    # The date version of HubSpot's REST paths (/crm/objects/2026-03/...).
    hubspot_api_version: str = "2026-03"
    # Requests per 10 s per portal for all our processes together (HubSpot allows ~110).
    hubspot_requests_per_10s: int = 100
    # Searches per second per portal for all our processes (HubSpot allows 5, shared with the
    # portal's other apps).
    hubspot_searches_per_second: int = 4
    # Salesforce app (External Client App or connected app): on when its id and secret are set.
    salesforce_client_id: str = ""
    salesforce_client_secret: str = ""
    salesforce_login_url: str = "https://login.salesforce.com"
    salesforce_sandbox_login_url: str = "https://test.salesforce.com"
    salesforce_ca_bundle: str = ""  # a CA file for a Salesforce stand-in's own certificate
    salesforce_api_version: str = "62.0"
    # More changed records than this in one push go through one Bulk API 2.0 job.
    salesforce_bulk_threshold: int = 2000
    # Share of the org's daily API requests left to the customer's other integrations.
    salesforce_api_reserve_percent: int = 20
    # How long a sync waits after the org's API allowance stopped it.
    salesforce_pause_minutes: int = 60
    # Messages one write key may send per 10 seconds (Segment allows about 1,000 requests a
    # second per source); more answer 429 with Retry-After. 0: no limit.
    ingest_messages_per_10s: int = 10_000
    # All of one tenant's keys together: well below what one service takes in, so one tenant's
    # flood leaves room for everyone else.
    ingest_tenant_messages_per_10s: int = 10_000
    property_prefix: str = "pql_"
    pull_interval_seconds: int = 300
    uninstall_grace_days: int = 30
    # A refresh token refused this long without a reinstall counts as an uninstall.
    reauth_grace_days: int = 14
    extra: dict = field(default_factory=dict)

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def hubspot_enabled(self) -> bool:
        return bool(self.hubspot_client_id and self.hubspot_client_secret)

    @property
    def salesforce_enabled(self) -> bool:
        return bool(self.salesforce_client_id and self.salesforce_client_secret)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, instance_path: Path | None = None):
        env = os.environ if env is None else env
        app_env = env.get("APP_ENV", "development").strip().lower()
        if app_env not in ENVIRONMENTS:
            raise ConfigError(f"APP_ENV must be one of {', '.join(ENVIRONMENTS)}, got {app_env!r}")
        production = app_env == "production"

        secret_key = env.get("SECRET_KEY", "")
        if not secret_key:
            if production:
                raise ConfigError("SECRET_KEY must be set in production")
            secret_key = DEV_SECRET_KEY
        if production and (secret_key == DEV_SECRET_KEY or len(secret_key) < MIN_SECRET_KEY_LENGTH):
            raise ConfigError(
                f"SECRET_KEY must be a random value of at least {MIN_SECRET_KEY_LENGTH} "
                "characters in production"
            )

        raw_keys = [k.strip() for k in env.get("TOKEN_ENCRYPTION_KEYS", "").split(",") if k.strip()]
        if not raw_keys:
            if production:
                raise ConfigError(
                    "TOKEN_ENCRYPTION_KEYS must be set in production "
                    "(generate one with: pql secrets generate)"
                )
            raw_keys = [_dev_encryption_key(secret_key)]
        for position, key in enumerate(raw_keys, start=1):
            try:
                Fernet(key)
            except (ValueError, TypeError) as exc:
                raise ConfigError(
                    f"TOKEN_ENCRYPTION_KEYS entry {position} is not a valid Fernet key "
                    "(32 url-safe base64-encoded bytes)"
                ) from exc

        derived = {_dev_encryption_key(secret_key), _dev_encryption_key(DEV_SECRET_KEY)}
        development_secrets = secret_key == DEV_SECRET_KEY or bool(derived & set(raw_keys))
        public_url = env.get("PUBLIC_URL", "http://127.0.0.1:5000").rstrip("/")
        if production:
            _refuse_weak_production_values(secret_key, raw_keys, derived, public_url)

        database_url = env.get("DATABASE_URL", "")
        if not database_url:
            if instance_path is None:
                raise ConfigError("DATABASE_URL is not set and no instance folder is known")
            database_url = _default_sqlite_url(instance_path)

        crms = {**_hubspot(env), **_salesforce(env)}
        if development_secrets and _real_crm(crms):
            raise ConfigError(
                "real CRM app credentials are set but SECRET_KEY or TOKEN_ENCRYPTION_KEYS is the "
                "public development value: anyone could sign an admin session or read the "
                "tokens (generate real values with: pql secrets generate)"
            )
        if production and not (crms["hubspot_client_id"] or crms["salesforce_client_id"]):
            raise ConfigError(
                "production needs a CRM app: set HUBSPOT_CLIENT_ID and HUBSPOT_CLIENT_SECRET, "
                "or SALESFORCE_CLIENT_ID and SALESFORCE_CLIENT_SECRET"
            )
        return cls(
            env=app_env,
            secret_key=secret_key,
            token_encryption_keys=tuple(raw_keys),
            database_url=normalise_database_url(database_url),
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
            public_url=public_url,
            development_secrets=development_secrets,
            max_message_bytes=_int(env, "MAX_MESSAGE_BYTES", 32 * 1024, minimum=1024),
            max_batch_bytes=_int(env, "MAX_BATCH_BYTES", 500 * 1024, minimum=1024),
            ingest_messages_per_10s=_int(env, "INGEST_MESSAGES_PER_10S", 10_000, minimum=0),
            ingest_tenant_messages_per_10s=_int(
                env, "INGEST_TENANT_MESSAGES_PER_10S", 10_000, minimum=0
            ),
            scoring_interval_seconds=_int(env, "SCORING_INTERVAL_SECONDS", 30, minimum=5),
            **crms,
            property_prefix=_property_prefix(env.get("PROPERTY_PREFIX", "pql_")),
            pull_interval_seconds=_int(env, "PULL_INTERVAL_SECONDS", 300, minimum=10),
            uninstall_grace_days=_int(env, "UNINSTALL_GRACE_DAYS", 30, minimum=0),
            reauth_grace_days=_int(env, "REAUTH_GRACE_DAYS", 14, minimum=1),
        )


# A random SECRET_KEY of 32 characters has far more distinct characters than this.
MIN_DISTINCT_SECRET_CHARACTERS = 12


def _refuse_weak_production_values(
    secret_key: str, raw_keys: list[str], derived: set[str], public_url: str
) -> None:
    if len(set(secret_key)) < MIN_DISTINCT_SECRET_CHARACTERS:
        raise ConfigError(
            "SECRET_KEY is not random (too few distinct characters); "
            "generate one with: pql secrets generate"
        )
    if derived & set(raw_keys):
        raise ConfigError(
            "TOKEN_ENCRYPTION_KEYS holds the development key derived from SECRET_KEY; "
            "generate one with: pql secrets generate"
        )
    if not public_url.startswith("https://"):
        raise ConfigError(
            f"PUBLIC_URL must be an https:// address in production, got {public_url!r} "
            "(OAuth redirects and session cookies travel over it)"
        )


def _real_crm(crms: dict) -> bool:
    """App credentials for the real platforms (not a local stand-in)."""

    def host(url: str) -> str:
        return (urlsplit(url).hostname or "").lower()

    hubspot = crms["hubspot_client_id"] and host(crms["hubspot_base_url"]).endswith("hubapi.com")
    salesforce = crms["salesforce_client_id"] and host(crms["salesforce_login_url"]).endswith(
        ("salesforce.com", "force.com")
    )
    return bool(hubspot or salesforce)


def _property_prefix(raw: str) -> str:
    """Names both CRMs accept: HubSpot's internal property names (lower-case letters, digits,
    underscores) and Salesforce's custom field names (no two underscores in a row; with the
    longest property name, 18 characters, within 40)."""
    prefix = raw.strip()
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,19}", prefix) or "__" in prefix:
        raise ConfigError(
            f"PROPERTY_PREFIX {raw!r} must start with a lower-case letter and hold only "
            "lower-case letters, digits and single underscores (at most 20)"
        )
    return prefix


def _hubspot(env: Mapping[str, str]) -> dict:
    client_id = env.get("HUBSPOT_CLIENT_ID", "").strip()
    client_secret = env.get("HUBSPOT_CLIENT_SECRET", "").strip()
    if bool(client_id) != bool(client_secret):
        raise ConfigError("set both HUBSPOT_CLIENT_ID and HUBSPOT_CLIENT_SECRET, or neither")
    version = env.get("HUBSPOT_API_VERSION", "2026-03").strip()
    if not re.fullmatch(r"20\d\d-(0[1-9]|1[0-2])", version):
        raise ConfigError(
            f"HUBSPOT_API_VERSION must be a date version like 2026-03, got {version!r}"
        )
    return {
        "hubspot_api_version": version,
        "hubspot_client_id": client_id,
        "hubspot_client_secret": client_secret,
        "hubspot_base_url": env.get("HUBSPOT_BASE_URL", "").rstrip("/") or "https://api.hubapi.com",
        "hubspot_authorize_url": env.get("HUBSPOT_AUTHORIZE_URL", "").rstrip("/")
        or "https://app.hubspot.com/oauth/authorize",
        "hubspot_requests_per_10s": _int(env, "HUBSPOT_REQUESTS_PER_10S", 100, minimum=1),
        "hubspot_searches_per_second": _int(env, "HUBSPOT_SEARCHES_PER_SECOND", 4, minimum=1),
    }


def _salesforce(env: Mapping[str, str]) -> dict:
    client_id = env.get("SALESFORCE_CLIENT_ID", "").strip()
    client_secret = env.get("SALESFORCE_CLIENT_SECRET", "").strip()
    if bool(client_id) != bool(client_secret):
        raise ConfigError("set both SALESFORCE_CLIENT_ID and SALESFORCE_CLIENT_SECRET, or neither")
    reserve = _int(env, "SALESFORCE_API_RESERVE_PERCENT", 20, minimum=0)
    if reserve > 90:
        raise ConfigError("SALESFORCE_API_RESERVE_PERCENT must be between 0 and 90")
    version = env.get("SALESFORCE_API_VERSION", "62.0").strip()
    if not re.fullmatch(r"\d{2}\.0", version):
        raise ConfigError("SALESFORCE_API_VERSION must look like 62.0")
    return {
        "salesforce_client_id": client_id,
        "salesforce_client_secret": client_secret,
        "salesforce_login_url": env.get("SALESFORCE_LOGIN_URL", "").rstrip("/")
        or "https://login.salesforce.com",
        "salesforce_sandbox_login_url": env.get("SALESFORCE_SANDBOX_LOGIN_URL", "").rstrip("/")
        or "https://test.salesforce.com",
        "salesforce_api_version": version,
        "salesforce_bulk_threshold": _int(env, "SALESFORCE_BULK_THRESHOLD", 2000, minimum=200),
        "salesforce_api_reserve_percent": reserve,
        "salesforce_pause_minutes": _int(env, "SALESFORCE_PAUSE_MINUTES", 60, minimum=1),
        "salesforce_ca_bundle": env.get("SALESFORCE_CA_BUNDLE", "").strip(),
    }
