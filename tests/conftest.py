"""Fixtures: a fresh database per test run on the backend named by PQL_TEST_DB, a fresh app per
test, and helpers to make tenants.

PQL_TEST_DB=sqlite (default) uses temporary files; PQL_TEST_DB=postgresql creates databases on
the server at PQL_TEST_PG_URL (default: 127.0.0.1:5432, trust auth) and drops them afterwards.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest
import responses
from sqlalchemy import create_engine, select, text

from app import create_app, migrate
from sandbox.hubspot import Sandbox, SandboxServer
from sandbox.hubspot import app_env as hubspot_env
from sandbox.salesforce import SalesforceSandbox, mount
from sandbox.server import LoopbackServer
from tests.helpers import hubspot, salesforce
from tests.helpers.apps import config_for, empty_all_tables, write_key_of

DB_KIND = os.environ.get("PQL_TEST_DB", "sqlite")
PG_ADMIN_URL = os.environ.get(
    "PQL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


class DatabaseFactory:
    """Makes empty databases of the backend under test and removes them at the end."""

    def __init__(self, kind: str, tmp_dir):
        if kind not in ("sqlite", "postgresql"):
            raise pytest.UsageError(f"PQL_TEST_DB must be sqlite or postgresql, got {kind!r}")
        self.kind = kind
        self._tmp_dir = tmp_dir
        self._pg_names: list[str] = []

    def new_url(self) -> str:
        name = f"pql_test_{uuid.uuid4().hex[:12]}"
        if self.kind == "sqlite":
            return f"sqlite:///{self._tmp_dir / (name + '.sqlite3')}"
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        self._pg_names.append(name)
        return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name

    def drop_all(self) -> None:
        if not self._pg_names:
            return
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            for name in self._pg_names:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def db_factory(tmp_path_factory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(DB_KIND, tmp_path_factory.mktemp("db"))
    yield factory
    factory.drop_all()


@pytest.fixture(scope="session")
def migrated_url(db_factory) -> str:
    url = db_factory.new_url()
    migrate.upgrade(url)
    return url


@pytest.fixture
def make_app(migrated_url):
    """Build test apps on the session's database (``config_for`` plus ``env``, an optional
    clock); their tables are emptied afterwards."""
    made = []

    def make(clock=None, **env: str):
        app = create_app(config_for(migrated_url, **env))
        if clock is not None:
            app.extensions["pql"].clock = clock
        made.append(app)
        return app

    yield make
    for app in made:
        empty_all_tables(app)
        app.extensions["pql"].db.dispose()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def db(app):
    return app.extensions["pql"].db


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def cli(app):
    return app.test_cli_runner()


@pytest.fixture
def tenant_key(db):
    """A tenant and a write key for it: (tenant_id, secret)."""
    from app.tenants import create_tenant, issue_write_key

    tenant = create_tenant(db, "Acme")
    return tenant.id, issue_write_key(db, tenant.id).secret


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server(app):
    """The app served over real HTTP on a free loopback port; yields its base URL."""
    with LoopbackServer(app) as server:
        yield server.url


@pytest.fixture
def served(app, unused_port):
    """The app served at ``unused_port`` (for apps whose PUBLIC_URL names that port)."""
    with LoopbackServer(app, unused_port) as server:
        yield server.url


# --- HubSpot: the local sandbox, an app configured for it, an installed portal -----------------


@pytest.fixture
def sandbox():
    """A running HubSpot sandbox (its own HTTP server: the HubSpot client speaks urllib3)."""
    with SandboxServer(Sandbox(requests_per_window=10_000)) as running:
        yield running


@pytest.fixture
def hubspot_app(make_app, sandbox):
    """The app configured for ``sandbox``, its clock at ``hubspot.NOW``. A test module that
    works against HubSpot makes it its ``app`` (a fixture ``app`` that returns it)."""
    return make_app(
        clock=lambda: hubspot.NOW, **hubspot_env(sandbox.url), PUBLIC_URL=hubspot.PUBLIC_URL
    )


@pytest.fixture
def installed(app, client, db):
    """Portal ``hubspot.HUB`` installed through the OAuth flow: (tenant id, its write key)."""
    from app.models import Tenant

    page = hubspot.install(client)
    assert page.status_code == 200, page.get_data(as_text=True)
    with db.system_session() as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.external_id == str(hubspot.HUB)))
    return tenant_id, write_key_of(app, tenant_id)


# --- Salesforce: a sandbox org under ``responses``, an app configured for it -------------------


@pytest.fixture
def org_server():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        org_sandbox = SalesforceSandbox()
        mount(mock, org_sandbox, salesforce.INSTANCE)
        # The login host is another name for the same fake (tokens, revocation).
        login = SalesforceSandbox.__new__(SalesforceSandbox)
        login.__dict__ = org_sandbox.__dict__
        mount(mock, login, salesforce.LOGIN)
        my_domain = SalesforceSandbox.__new__(SalesforceSandbox)
        my_domain.__dict__ = org_sandbox.__dict__
        mount(mock, my_domain, salesforce.MY_DOMAIN)
        org_sandbox.base_url = salesforce.INSTANCE
        yield org_sandbox


@pytest.fixture
def salesforce_app(make_app, org_server):
    return make_app(
        clock=lambda: hubspot.NOW,
        PUBLIC_URL=hubspot.PUBLIC_URL,
        SALESFORCE_LOGIN_URL=salesforce.LOGIN,
        SALESFORCE_SANDBOX_LOGIN_URL=salesforce.LOGIN,
        SALESFORCE_BULK_THRESHOLD="300",
    )


# A public address (documentation examples resolve nowhere offline) for the trigger targets
# tests send to: Slack's webhook host and the reserved ``.test`` names.
PUBLIC_TEST_ADDRESS = "93.184.215.14"


@pytest.fixture(autouse=True)
def _public_test_hosts(monkeypatch):
    from app.jobs import outbound

    real = outbound._getaddrinfo

    def getaddrinfo(host, port):
        if host == outbound.SLACK_WEBHOOK_HOST or host.endswith(".test"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_TEST_ADDRESS, port))]
        return real(host, port)

    monkeypatch.setattr(outbound, "_getaddrinfo", getaddrinfo)
