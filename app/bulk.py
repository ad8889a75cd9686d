"""Bulk writes on the ingestion hot path: events, and counts added to rollup rows.

Dialect branch: on PostgreSQL each write is one statement over ``unnest`` of array parameters,
so a 100-event request costs no per-row work in Python (SQLAlchemy's executemany builds a
parameter dict per row, which was most of the request's CPU). Elsewhere (SQLite, in-process)
the portable executemany path is used. Both give the same rows.
"""

from __future__ import annotations

import datetime as dt
import json
import operator
from collections.abc import Callable, Collection
from functools import partial
from typing import Any

from sqlalchemy import or_, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql import sqltypes

from app.models import AccountEventDay, Event, ScoreHistory, UserEventDay, UTCDateTime


def dialect_insert(session: Session):
    """Dialect branch: ON CONFLICT lives in each dialect's own ``insert``."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert
    return sqlite.insert


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


_PG_INSERT_EVENTS = text(
    """
    INSERT INTO events
        (tenant_id, message_id, type, name, user_id, account_id, timestamp, received_at, payload)
    SELECT :tenant_id, m, t, n, u, a, ts, :received_at, p::json
    FROM unnest(
        CAST(:message_ids AS varchar[]), CAST(:types AS varchar[]), CAST(:names AS varchar[]),
        CAST(:user_ids AS integer[]), CAST(:account_ids AS integer[]),
        CAST(:timestamps AS timestamp[]), CAST(:payloads AS text[])
    ) AS rows(m, t, n, u, a, ts, p)
    ON CONFLICT (tenant_id, message_id) DO NOTHING
    RETURNING message_id
    """
)


def insert_events(
    session: Session, tenant_id: int, rows: list[dict[str, Any]], received_at: dt.datetime
) -> set[str]:
    """Insert events (``message_id, type, name, user_id, account_id, timestamp, payload``);
    returns the message ids actually stored (others were already there)."""
    if not rows:
        return set()
    if _is_postgresql(session):
        result = session.connection().execute(
            _PG_INSERT_EVENTS,
            {
                "tenant_id": tenant_id,
                "received_at": _naive_utc(received_at),
                "message_ids": [r["message_id"] for r in rows],
                "types": [r["type"] for r in rows],
                "names": [r["name"] for r in rows],
                "user_ids": [r["user_id"] for r in rows],
                "account_ids": [r["account_id"] for r in rows],
                "timestamps": [_naive_utc(r["timestamp"]) for r in rows],
                "payloads": [json.dumps(r["payload"], default=str) for r in rows],
            },
        )
        return set(result.scalars())
    table = Event.__table__
    statement = (
        dialect_insert(session)(table)
        .on_conflict_do_nothing(index_elements=["tenant_id", "message_id"])
        .returning(table.c.message_id)
    )
    params = [{**r, "tenant_id": tenant_id, "received_at": received_at} for r in rows]
    return set(session.connection().execute(statement, params).scalars())


_PG_ADD_USER_COUNTS = text(
    """
    INSERT INTO user_event_days (tenant_id, user_id, event, day, count)
    SELECT :tenant_id, u, e, d, c
    FROM unnest(
        CAST(:user_ids AS integer[]), CAST(:events AS varchar[]), CAST(:days AS date[]),
        CAST(:counts AS integer[])
    ) AS rows(u, e, d, c)
    ON CONFLICT (tenant_id, user_id, event, day)
        DO UPDATE SET count = user_event_days.count + EXCLUDED.count
    """
)

_PG_ADD_ACCOUNT_COUNTS = text(
    """
    INSERT INTO account_event_days (tenant_id, account_id, event, day, user_id, count)
    SELECT :tenant_id, a, e, d, u, c
    FROM unnest(
        CAST(:account_ids AS integer[]), CAST(:events AS varchar[]), CAST(:days AS date[]),
        CAST(:user_ids AS integer[]), CAST(:counts AS integer[])
    ) AS rows(a, e, d, u, c)
    ON CONFLICT (tenant_id, account_id, event, day, user_id)
        DO UPDATE SET count = account_event_days.count + EXCLUDED.count
    """
)


def _add_counts_portably(session: Session, model, tenant_id: int, rows, keys) -> None:
    table = model.__table__
    statement = dialect_insert(session)(table)
    statement = statement.on_conflict_do_update(
        index_elements=["tenant_id", *keys],
        set_={"count": table.c.count + statement.excluded.count},
    )
    params = [
        {**dict(zip([*keys, "count"], row, strict=True)), "tenant_id": tenant_id} for row in rows
    ]
    session.connection().execute(statement, params)


def add_user_counts(
    session: Session, tenant_id: int, counts: dict[tuple[int, str, dt.date], int]
) -> None:
    """Add ``count`` to each (user_id, event, day). Rows are written in key order, so
    concurrent requests lock them in the same order and cannot deadlock."""
    if not counts:
        return
    rows = sorted((*key, count) for key, count in counts.items())
    if _is_postgresql(session):
        user_ids, events, days, values = (list(col) for col in zip(*rows, strict=True))
        session.connection().execute(
            _PG_ADD_USER_COUNTS,
            {
                "tenant_id": tenant_id,
                "user_ids": user_ids,
                "events": events,
                "days": days,
                "counts": values,
            },
        )
        return
    _add_counts_portably(session, UserEventDay, tenant_id, rows, ["user_id", "event", "day"])


def add_account_counts(
    session: Session, tenant_id: int, counts: dict[tuple[int, str, dt.date, int], int]
) -> None:
    """Add ``count`` to each (account_id, event, day, user_id), in key order."""
    if not counts:
        return
    rows = sorted((*key, count) for key, count in counts.items())
    if _is_postgresql(session):
        account_ids, events, days, user_ids, values = (list(c) for c in zip(*rows, strict=True))
        session.connection().execute(
            _PG_ADD_ACCOUNT_COUNTS,
            {
                "tenant_id": tenant_id,
                "account_ids": account_ids,
                "events": events,
                "days": days,
                "user_ids": user_ids,
                "counts": values,
            },
        )
        return
    _add_counts_portably(
        session, AccountEventDay, tenant_id, rows, ["account_id", "event", "day", "user_id"]
    )


def array_text(values) -> str:
    """Numbers as the text form of a PostgreSQL array (``{1,2,3}``), for a parameter the
    statement casts to its array type: psycopg's list adapter converts each number in turn
    (5.2 ms against 1.8 ms a round trip for 5,000 ids)."""
    return "{" + ",".join(map(str, values)) + "}"


def _remembered(convert, by_repr: bool = True, limit: int = 10_000):
    """``convert`` for a column whose values repeat from row to row (the pass's time, the same
    checklist steps done, the same segments): each distinct value is converted once. JSON
    values are told apart by ``repr``, which differs wherever the document would (1, 1.0 and
    True included); moments by themselves (the same instant in another zone converts to the
    same UTC time). The memory is bounded."""
    seen: dict[Any, Any] = {}

    def remembered(value):
        key = repr(value) if by_repr else value
        done = seen.get(key)
        if done is None:
            if len(seen) >= limit:
                seen.clear()
            done = seen[key] = convert(value)
        return done

    return remembered


def _copy_converters(table, columns: list[str]) -> list:
    """Per column, how a Python value (not None) becomes what COPY expects: JSON text, naive
    UTC; None where it goes as it is."""
    converters = []
    for name in columns:
        column_type = table.c[name].type
        if isinstance(column_type, sqltypes.JSON):
            converters.append(_remembered(lambda v: json.dumps(v, default=str)))
        elif isinstance(column_type, UTCDateTime):
            converters.append(_remembered(_naive_utc, by_repr=False))
        else:
            converters.append(None)
    return converters


def _copy_rows(
    session: Session,
    table,
    rows: list[dict[str, Any]],
    into: str,
    same: dict[str, Any] | None = None,
    names: dict[str, str] | None = None,
) -> None:
    """COPY ``rows`` (dicts with the same keys, values as for ``table``) into table ``into``,
    with the columns of ``same`` set to its values in every row. A row's key is its column's
    name, or the key ``names`` gives for that column."""
    same, names = same or {}, names or {}
    fields = [f for f in rows[0] if f not in same]
    columns = [names.get(f, f) for f in fields]
    # A row's values in one call, then only the columns that need it converted: a pass COPYs a
    # hundred thousand rows of forty columns, and a Python step per value was most of its cost.
    values_of = operator.itemgetter(*fields) if len(fields) > 1 else (lambda r: (r[fields[0]],))
    converted = [
        (position, convert)
        for position, convert in enumerate(_copy_converters(table, columns))
        if convert is not None
    ]
    constant = list(same.values())
    driver = session.connection().connection.driver_connection
    with (
        driver.cursor() as cursor,
        cursor.copy(f"COPY {into} ({', '.join([*columns, *same])}) FROM STDIN") as copy,
    ):
        for row in rows:
            values = list(values_of(row))
            for position, convert in converted:
                value = values[position]
                if value is not None:
                    values[position] = convert(value)
            values += constant
            copy.write_row(values)


def insert_rows(session: Session, table, rows: list[dict[str, Any]]) -> None:
    """Insert many rows of one table: COPY on PostgreSQL, executemany elsewhere."""
    if not rows:
        return
    if _is_postgresql(session):
        _copy_rows(session, table, rows, table.name)
        return
    session.connection().execute(table.insert(), rows)


def store_changed(
    session: Session,
    table,
    tenant_id: int,
    key: str,
    rows: list[dict[str, Any]],
    compared: list[str],
    full: bool,
    same: dict[str, Any] | None = None,
    key_field: str | None = None,
    existing: Collection[int] | None = None,
    later: list[Callable[[], Any]] | None = None,
) -> dict[int, set[str]] | None:
    """PostgreSQL: write rows of one tenant's table (found by ``tenant_id`` and ``key``) where
    they are new or differ in a ``compared`` column, flagging written rows ``crm_pending``; a
    full set (``full``) also deletes the tenant's rows it does not contain. The rows hold the
    key under ``key_field`` (default: ``key``); ``tenant_id`` and the columns of ``same`` take
    one value for every row (what a row holds under those names is not read): the rows are
    written as they are, a hundred thousand dicts not grown by a key each. The rows are
    COPYed into a staging table and compared by the database (one UPDATE of the rows that
    differ, one INSERT of the new ones), instead of reading every stored row back into Python
    to compare there. Given ``existing``, the keys known to have a stored row (read in the
    same transaction), the other rows are new: they are COPYed straight into the table, and
    the staged ones need no second look for a row to insert. Returns the keys written, each
    with the columns that changed (every compared column for a new row); keys changed alike
    share one set: read it, do not change it.

    Given ``later``, only the COPYs run now (COPY has no place in a pipeline); the statements
    that compare and write are added to ``later``, reading nothing back, to be sent while
    Python works on something else (``scoring_pass._sent``), and None is returned."""
    connection = session.connection()

    def run(statement, params: dict[str, Any] | None = None):
        return connection.execute(statement, params or {})

    if not rows:
        if full:
            deleted = partial(
                run,
                text(f"DELETE FROM {table.name} WHERE tenant_id = :tenant_id"),
                {"tenant_id": tenant_id},
            )
            if later is None:
                deleted()
            else:
                later.append(deleted)
        return None if later is not None else {}
    same = {"tenant_id": tenant_id, **(same or {}), "crm_pending": True}
    names = {key_field or key: key}
    columns = [names.get(f, f) for f in rows[0] if f not in same] + list(same)
    staging = f"_scored_{table.name}"
    run(
        text(
            f"CREATE TEMPORARY TABLE {staging} ON COMMIT DROP AS "
            f"SELECT {', '.join(columns)} FROM {table.name} WITH NO DATA"
        )
    )
    new: list[dict[str, Any]] = []
    # Rows known to be new go straight into the table, after a full set's DELETE (which would
    # take them): not when that DELETE is left for later.
    straight = existing is not None and not (full and later is not None)
    if straight:
        field = key_field or key
        new = [row for row in rows if row[field] not in existing]
        if new:
            rows = [row for row in rows if row[field] in existing]
    if rows:
        _copy_rows(session, table, rows, staging, same=same, names=names)
    match = f"t.tenant_id = :tenant_id AND s.tenant_id = :tenant_id AND t.{key} = s.{key}"
    delete_gone = text(
        f"DELETE FROM {table.name} AS t WHERE t.tenant_id = :tenant_id AND NOT EXISTS "
        f"(SELECT 1 FROM {staging} AS s WHERE s.{key} = t.{key})"
    )
    values = [c for c in columns if c not in (key, "tenant_id")]
    compare = [c for c in compared if c in columns and c not in (key, "tenant_id")]
    # The WHERE sees the stored row as it was; RETURNING sees it as written, so what changed
    # is returned from a second look at it (``o``), joined only when something is read back.
    set_changed = (
        f"UPDATE {table.name} AS t SET {', '.join(f'{c} = s.{c}' for c in values)} "
        f"FROM {staging} AS s"
    )
    where_changed = (
        f" WHERE {match} AND ({', '.join(f't.{c}' for c in compare)}) "
        f"IS DISTINCT FROM ({', '.join(f's.{c}' for c in compare)})"
    )
    # The rows not there yet (the UPDATE took the others). Not an anti-join with the table
    # itself: its scan would re-read the pages this very INSERT adds, once per row.
    insert_new = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "
        f"SELECT {', '.join(columns)} FROM {staging} "
        f"ON CONFLICT (tenant_id, {key}) DO NOTHING"
    )
    drop = text(f"DROP TABLE {staging}")
    tenant = {"tenant_id": tenant_id}
    if later is not None:
        if new:
            _copy_rows(session, table, new, table.name, same=same, names=names)
        if full:
            later.append(partial(run, delete_gone, tenant))
        later.append(partial(run, text(set_changed + where_changed), tenant))
        if not straight:
            later.append(partial(run, text(insert_new)))
        later.append(partial(run, drop))
        return None
    if full:
        run(delete_gone, tenant)
    written: dict[int, set[str]] = {}
    changed = run(
        text(
            f"{set_changed} JOIN {table.name} AS o "
            f"ON o.tenant_id = s.tenant_id AND o.{key} = s.{key}{where_changed} "
            f"RETURNING t.{key}, "
            f"ARRAY[{', '.join(f'o.{c} IS DISTINCT FROM s.{c}' for c in compare)}]"
        ),
        tenant,
    )
    # Subjects changed in the same columns share one set (a daily pass changes a hundred
    # thousand rows in a handful of ways: a set each was 50 MB at its peak).
    shared: dict[tuple[bool, ...], set[str]] = {}
    for sid, flags in changed:
        flags = tuple(flags)
        moved = shared.get(flags)
        if moved is None:
            moved = shared[flags] = {c for c, flag in zip(compare, flags, strict=True) if flag}
        written[sid] = moved
    every = set(compared)
    if straight:
        # Known to be new: written after the full set's DELETE, which would take them.
        if new:
            _copy_rows(session, table, new, table.name, same=same, names=names)
        for row in new:
            written[row[key_field or key]] = every
    else:
        for (sid,) in run(text(f"{insert_new} RETURNING {key}")):
            written[sid] = every
    run(drop)
    return written


_PG_UPSERT_HISTORY = text(
    """
    INSERT INTO score_history
        (tenant_id, subject, subject_id, day, engagement_score, activation_rate)
    SELECT :tenant_id, :subject, i, :day, e, a
    FROM unnest(CAST(:ids AS integer[]), CAST(:scores AS smallint[]), CAST(:rates AS smallint[]))
        AS rows(i, e, a)
    ON CONFLICT (tenant_id, subject, subject_id, day)
        DO UPDATE SET engagement_score = EXCLUDED.engagement_score,
                      activation_rate = EXCLUDED.activation_rate
        WHERE (score_history.engagement_score, score_history.activation_rate)
              IS DISTINCT FROM (EXCLUDED.engagement_score, EXCLUDED.activation_rate)
    """
)


def upsert_history(
    session: Session,
    tenant_id: int,
    subject: str,
    day: dt.date,
    values: list[tuple[int, int, int]],
) -> None:
    """Set (subject id, engagement score, activation rate) for ``day``, replacing a row of the
    same day from an earlier pass where it holds other values (an equal one is left alone)."""
    if not values:
        return
    values = sorted(values)
    if _is_postgresql(session):
        ids, scores, rates = (array_text(column) for column in zip(*values, strict=True))
        session.connection().execute(
            _PG_UPSERT_HISTORY,
            {
                "tenant_id": tenant_id,
                "subject": subject,
                "day": day,
                "ids": ids,
                "scores": scores,
                "rates": rates,
            },
        )
        return
    statement = dialect_insert(session)(ScoreHistory.__table__)
    statement = statement.on_conflict_do_update(
        index_elements=["tenant_id", "subject", "subject_id", "day"],
        set_={
            "engagement_score": statement.excluded.engagement_score,
            "activation_rate": statement.excluded.activation_rate,
        },
        where=or_(
            ScoreHistory.engagement_score != statement.excluded.engagement_score,
            ScoreHistory.activation_rate != statement.excluded.activation_rate,
        ),
    )
    session.connection().execute(
        statement,
        [
            {
                "tenant_id": tenant_id,
                "subject": subject,
                "subject_id": i,
                "day": day,
                "engagement_score": e,
                "activation_rate": a,
            }
            for i, e, a in values
        ],
    )
