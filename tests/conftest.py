"""Fixtures: a fresh database per test run on the backend named by PQL_TEST_DB, a fresh app per
test, and helpers to make tenants.

PQL_TEST_DB=sqlite (default) uses temporary files; PQL_TEST_DB=postgresql creates databases on
the server at PQL_TEST_PG_URL (default: 127.0.0.1:5432, trust auth) and drops them afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from app import create_app, migrate
from app.models import Base
from sandbox.hubspot import app_env as hubspot_env
from sandbox.salesforce import app_env as salesforce_env

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


def config_for(database_url: str, **extra: str) -> dict[str, str]:
    """A test app's environment: both CRM apps configured, pointing at sandboxes on a port
    nothing listens on until a test passes a running sandbox's ``app_env``."""
    return {
        "APP_ENV": "test",
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
        **hubspot_env("http://127.0.0.1:9"),
        **salesforce_env("https://127.0.0.1:9"),
        **extra,
    }


def _empty_all_tables(app) -> None:
    db = app.extensions["pql"].db
    tables = list(reversed(Base.metadata.sorted_tables))
    with db.engine.begin() as connection:
        if db.dialect == "postgresql":
            names = ", ".join(t.name for t in tables)
            connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                connection.execute(table.delete())


@pytest.fixture
def app(migrated_url):
    app = create_app(config_for(migrated_url))
    yield app
    _empty_all_tables(app)
    app.extensions["pql"].db.dispose()


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
def live_server(app):
    """The app served over real HTTP on a free loopback port; yields its base URL."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)
