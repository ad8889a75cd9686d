"""Engine and sessions.

Two kinds of session exist and nothing else touches the database:

* ``tenant_session(tenant_id)``: every ORM SELECT, UPDATE and DELETE of a tenant-owned model is
  filtered to that tenant (``with_loader_criteria``), and flushing an object of another tenant
  raises. This is what request handlers, jobs and the CLI use for a tenant's data.
* ``system_session()``: no tenant filter, for the few cross-tenant needs (resolving a write key to
  its tenant, listing installations, the scheduler picking tenants).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker, with_loader_criteria

from app.models import TenantOwned

TENANT_KEY = "tenant_id"


class TenantScopeError(RuntimeError):
    """An object of one tenant was about to be written through another tenant's session."""


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # Dialect branch (SQLite): several processes (web + worker) share the file, so use WAL,
        # wait on locks instead of failing at once, and turn foreign keys on. Transactions start
        # with BEGIN IMMEDIATE so that a read-modify-write (trait merges) holds the write lock
        # from its first read, as SELECT ... FOR UPDATE does on PostgreSQL.
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin_immediate(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


class Database:
    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def system_session(self) -> Session:
        return self._sessions()

    def tenant_session(self, tenant_id: int) -> Session:
        if not isinstance(tenant_id, int):
            raise TypeError("tenant_id must be an int")
        session = self._sessions()
        session.info[TENANT_KEY] = tenant_id
        return session

    @contextmanager
    def tenant_transaction(self, tenant_id: int) -> Iterator[Session]:
        """A tenant session that commits on success and rolls back on error."""
        with self.tenant_session(tenant_id) as session, session.begin():
            yield session

    @contextmanager
    def system_transaction(self) -> Iterator[Session]:
        with self.system_session() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def to_tenant(statement, session: Session):
    """``statement`` filtered to the session's tenant (unchanged in a system session)."""
    tenant_id = session.info.get(TENANT_KEY)
    if tenant_id is None:
        return statement
    return statement.options(
        with_loader_criteria(
            TenantOwned,
            lambda cls: cls.tenant_id == tenant_id,
            include_aliases=True,
        )
    )


def stream(session: Session, statement, batch: int = 20_000):
    """The rows of a large read, a batch at a time (a server-side cursor on PostgreSQL), filtered
    to the session's tenant like every ORM statement. Run on the session's connection: the
    ORM would turn each batch into rows of its own first (a fifth of a full pass at 10M
    events)."""
    if session.get_bind().dialect.name == "postgresql":
        # A cursor is planned for its first rows (10% by default): index scans where the
        # whole result is wanted. All of it is read.
        session.execute(text("SET LOCAL cursor_tuple_fraction = 1.0"))
    return session.connection().execute(
        to_tenant(statement, session), execution_options={"yield_per": batch}
    )


@contextmanager
def overlapped(session: Session) -> Iterator[None]:
    """Statements executed within are sent without waiting for the database to run them (a
    libpq pipeline, on PostgreSQL), so that Python work done within runs meanwhile: the
    database and Python each keep a core busy. Leaving waits for them all and raises the
    first error (the driver's own, ``psycopg.Error``). Only statements that return no rows
    belong within: SQLAlchemy reads a result's columns as soon as it is executed, before a
    pipeline has it. Elsewhere (SQLite) statements run as they are executed."""
    if session.get_bind().dialect.name != "postgresql":
        yield
        return
    with session.connection().connection.dbapi_connection.pipeline():
        yield


@event.listens_for(Session, "do_orm_execute")
def _filter_to_session_tenant(state) -> None:
    if state.is_select and (state.is_column_load or state.is_relationship_load):
        return  # the parent row was already filtered
    if state.is_select or state.is_update or state.is_delete:
        state.statement = to_tenant(state.statement, state.session)


@event.listens_for(Session, "before_flush")
def _stamp_and_check_tenant(session: Session, _context, _instances) -> None:
    tenant_id = session.info.get(TENANT_KEY)
    if tenant_id is None:
        return
    for obj in list(session.new) + list(session.dirty) + list(session.deleted):
        if not isinstance(obj, TenantOwned):
            continue
        if obj.tenant_id is None and obj in session.new:
            obj.tenant_id = tenant_id
        elif obj.tenant_id != tenant_id:
            raise TenantScopeError(
                f"{type(obj).__name__} of tenant {obj.tenant_id} written in a session of "
                f"tenant {tenant_id}"
            )
