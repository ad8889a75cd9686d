"""The daily pass moves the activity basis forward from the last full pass's day instead of
rebuilding it from everyone's history: the basis it leaves must be the one a rebuild makes, and
the scores the pure rules give, across late events, merges, forgotten users, new subjects, team
steps and gaps of one and several days."""

from __future__ import annotations

import datetime as dt
import os
import random

import pytest
from sqlalchemy import select, text

from app.models import AccountMembership, ActivityBasis, ScoringRun, User, UserScore
from app.scores import activity_basis, scoring_pass
from app.scores.definitions_store import current_definitions
from app.scores.scoring_pass import recompute
from app.tracking.privacy import forget_user
from tests.app.scores.test_differential import _check, _definitions, _traffic
from tests.helpers.events import NOW, ev, group, send


def _rows(session) -> dict:
    return {
        (r.subject, r.subject_id, r.event): (
            r.total,
            r.first_day,
            r.last_day,
            r.in_1,
            r.in_7,
            r.in_30,
            sorted(r.users) if r.users is not None else None,
            r.active_days,
        )
        for r in session.scalars(select(ActivityBasis))
    }


def _basis(db, tenant_id) -> dict:
    with db.tenant_session(tenant_id) as s:
        return _rows(s)


def _rebuilt(db, tenant_id, day) -> dict:
    """The basis a rebuild from every rollup makes for ``day`` (rolled back afterwards)."""
    defs = current_definitions(db, tenant_id).definitions
    with db.tenant_session(tenant_id) as s:
        try:
            for kind in (activity_basis.USERS, activity_basis.ACCOUNTS):
                activity_basis.rebuild(s, tenant_id, kind, None, defs, day)
            s.flush()
            return _rows(s)
        finally:
            s.rollback()


@pytest.fixture
def rebuilds(monkeypatch):
    """Which subjects each rebuild of the pass was asked for (None: everyone)."""
    asked: list = []
    original = activity_basis.rebuild

    def recording(session, tenant_id, kind, ids, defs, day, meanwhile=None):
        asked.append(ids)
        return original(session, tenant_id, kind, ids, defs, day, meanwhile)

    monkeypatch.setattr(activity_basis, "rebuild", recording)
    return asked


def _day(days: int) -> dt.datetime:
    return NOW + dt.timedelta(days=days)


@pytest.mark.parametrize("seed, custom", [(21, True), (22, True), (23, True), (24, False)])
def test_the_daily_pass_moves_the_basis_to_what_a_rebuild_makes(
    app, client, db, tenant_key, rebuilds, seed, custom
):
    """With the test's definitions (profiles of 7 and 30 days, one decaying) and with the
    defaults (7 days only: the other frames are not kept, and hold 0)."""
    rng = random.Random(seed)
    tenant_id, key = tenant_key
    if custom:
        _definitions(db, tenant_id)
    app.extensions["pql"].clock = lambda: NOW - dt.timedelta(minutes=30)
    plans = ["trial", "paid", "free", "trial", "paid"]
    history = [
        group(f"u{u}", f"g{u % 5}", days_ago=rng.choice([40, 20, 9]), plan=plans[u % 5])
        for u in range(14)
    ]
    history += _traffic(rng, range(14), [0, 0.3, 1, 2, 6, 7, 8, 29, 30, 31, 45])
    send(client, key, history)
    recompute(db, tenant_id, NOW)
    assert rebuilds == [None, None]  # the first pass builds everyone's basis

    # Day 1: that day's traffic, events of the basis day itself (received after its pass: not
    # late, the roll reads that day), late ones (before the basis day), a merge, a new user.
    rebuilds.clear()
    app.extensions["pql"].clock = lambda: _day(1)
    traffic = _traffic(rng, range(0, 16), [-1, -0.9, 0])
    late = ev("u3", "Report Created", "g3", days_ago=12, n=2)
    when = _day(1).isoformat()
    alias = {"type": "alias", "userId": "u12", "previousId": "u13", "timestamp": when}
    send(client, key, [group("u15", "g2", days_ago=-1), *traffic, *late, alias])
    summary = recompute(db, tenant_id, _day(1) + dt.timedelta(hours=1))
    assert summary.full
    assert None not in rebuilds  # moved, not rebuilt from everyone's history
    with db.tenant_session(tenant_id) as s:
        ids = dict(s.execute(select(User.external_id, User.id)).all())
    # Rebuilt: the late events' user, the merge's target, the new user; the others moved.
    assert {ids["u3"], ids["u12"], ids["u15"]} <= set(rebuilds[0]) < set(ids.values())
    today = _day(1).date()
    assert _basis(db, tenant_id) == _rebuilt(db, tenant_id, today)
    assert _check(db, tenant_id, today) > 15

    # Three days later (frames drop several days at once), after a user was forgotten.
    forget_user(db, tenant_id, _day(2), external_id="u5")
    app.extensions["pql"].clock = lambda: _day(4)
    send(client, key, _traffic(rng, range(0, 16, 3), [-4, -3.5, -2, -1.5]))
    rebuilds.clear()
    recompute(db, tenant_id, _day(4) + dt.timedelta(hours=2))
    today = _day(4).date()
    assert None not in rebuilds
    assert _basis(db, tenant_id) == _rebuilt(db, tenant_id, today)
    assert _check(db, tenant_id, today) > 15

    if not custom:
        kept = {(in_1, in_30) for _, _, _, in_1, _, in_30, _, _ in _basis(db, tenant_id).values()}
        assert kept == {(0, 0)}

    # A second full pass the same day: the basis is already that day's.
    send(client, key, _traffic(rng, range(0, 16, 4), [-4]))
    recompute(db, tenant_id, _day(4) + dt.timedelta(hours=3))
    assert _basis(db, tenant_id) == _rebuilt(db, tenant_id, today)
    assert _check(db, tenant_id, today) > 15

    # A pass for a past day (`pql score --as-of`) leaves the basis at that day; the pass that
    # follows moves it from there, not from the day of the pass started latest.
    recompute(db, tenant_id, _day(2).replace(hour=23, minute=59, second=59))
    recompute(db, tenant_id, _day(4) + dt.timedelta(hours=4))
    assert _basis(db, tenant_id) == _rebuilt(db, tenant_id, today)
    assert _check(db, tenant_id, today) > 15


def test_a_basis_too_old_or_of_other_definitions_is_rebuilt(app, client, db, tenant_key, rebuilds):
    tenant_id, key = tenant_key
    app.extensions["pql"].clock = lambda: NOW
    send(client, key, [group("ada", "acme", plan="trial"), *ev("ada", "Report Created", "acme")])
    recompute(db, tenant_id, NOW)
    recompute(db, tenant_id, _day(scoring_pass.ROLL_DAYS + 1))
    assert rebuilds[-2:] == [None, None]
    rebuilds.clear()
    recompute(db, tenant_id, _day(scoring_pass.ROLL_DAYS + 2))
    assert None not in rebuilds
    _definitions(db, tenant_id)  # a new definitions version
    recompute(db, tenant_id, _day(scoring_pass.ROLL_DAYS + 3))
    assert rebuilds[-2:] == [None, None]
    with db.tenant_session(tenant_id) as s:
        runs = s.scalars(select(ScoringRun.basis_day).order_by(ScoringRun.started_at)).all()
    assert runs[-1] == _day(scoring_pass.ROLL_DAYS + 3).date()


@pytest.mark.skipif(
    os.environ.get("PQL_TEST_DB", "sqlite") != "postgresql", reason="libpq pipelines"
)
def test_a_full_pass_scores_the_users_while_the_database_works_on_the_accounts_basis(
    app, client, db, tenant_key, monkeypatch
):
    """Both cores work: the accounts' basis statements (rebuilt in a first pass, moved in the
    daily one) are in flight in a pipeline while Python scores the users, not before it, and
    the users' history while it scores the accounts."""
    from psycopg import pq

    tenant_id, key = tenant_key
    app.extensions["pql"].clock = lambda: NOW
    send(client, key, [group("ada", "acme", plan="trial"), *ev("ada", "Report Created", "acme")])
    seen: list[tuple[str, str, bool]] = []
    connections = []

    def piped() -> bool:
        return connections[-1].pgconn.pipeline_status != pq.PipelineStatus.OFF

    def recorded(name, original):
        def wrapper(session, tenant_id, kind, *args):
            connections.append(session.connection().connection.dbapi_connection)
            original(session, tenant_id, kind, *args)
            seen.append((name, kind.subject, piped()))

        return wrapper

    score_rows = scoring_pass._score_rows

    def scoring(defs, data, ids, subject, *args, **kwargs):
        seen.append(("score", subject, piped()))
        return score_rows(defs, data, ids, subject, *args, **kwargs)

    monkeypatch.setattr(activity_basis, "_rebuild", recorded("rebuild", activity_basis._rebuild))
    monkeypatch.setattr(activity_basis, "_move", recorded("move", activity_basis._move))
    history = scoring_pass._history

    def writing(session, tenant_id, subject, *args):
        seen.append(("history", subject, piped()))
        return history(session, tenant_id, subject, *args)

    monkeypatch.setattr(scoring_pass, "_score_rows", scoring)
    monkeypatch.setattr(scoring_pass, "_history", writing)
    recompute(db, tenant_id, NOW)
    assert seen == [
        ("rebuild", "u", False),
        ("rebuild", "a", True),
        ("score", "u", True),
        ("history", "u", True),
        ("score", "a", True),
        ("history", "a", False),
    ]
    seen.clear()
    recompute(db, tenant_id, _day(1))
    # (The subjects without a basis or with late events are rebuilt after each move.)
    assert [step for step in seen if step[0] != "rebuild"] == [
        ("move", "u", False),
        ("move", "a", True),
        ("score", "u", True),
        ("history", "u", True),
        ("score", "a", True),
        ("history", "a", False),
    ]


@pytest.mark.skipif(
    os.environ.get("PQL_TEST_DB") != "postgresql", reason="the rows' place on disk (ctid)"
)
def test_a_rebuild_writes_each_subjects_rows_side_by_side(app, client, db, tenant_key):
    """An incremental pass reads a thousand subjects' basis: in key order on disk (each
    subject's marker, then its events), that is a few pages per subject instead of a page per
    row. The first pass writes the basis in that order, markers included."""
    rng = random.Random(5)
    tenant_id, key = tenant_key
    app.extensions["pql"].clock = lambda: NOW - dt.timedelta(minutes=30)
    history = [group(f"u{u}", f"g{u % 4}", days_ago=20, plan="trial") for u in range(12)]
    send(client, key, history + _traffic(rng, range(12), [1, 2, 6, 9, 15]))
    recompute(db, tenant_id, NOW)
    with db.tenant_session(tenant_id) as s:
        on_disk = [
            tuple(row)
            for row in s.execute(
                text(
                    "SELECT subject, subject_id, event FROM activity_bases "
                    "WHERE tenant_id = :t ORDER BY ctid"
                ),
                {"t": tenant_id},
            )
        ]
    assert len(on_disk) > 60
    for subject in ("u", "a"):
        rows = [row for row in on_disk if row[0] == subject]
        assert rows == sorted(rows)


@pytest.mark.skipif(
    os.environ.get("PQL_TEST_DB", "sqlite") != "postgresql", reason="libpq pipelines"
)
def test_the_users_scores_are_compared_and_written_while_the_accounts_are_scored(
    app, client, db, tenant_key, monkeypatch
):
    """The accounts' members' statistics count the users as just scored, so the users' rows
    need not be stored before the accounts are read and scored: they are COPYed first (COPY has
    no place in a pipeline), and compared and written in the pipeline that runs while Python
    scores the accounts, in a full pass and in an incremental one. The accounts' own writes
    wait for their reply (what changed goes to the CRM push and the members' fit)."""
    from psycopg import pq
    from sqlalchemy import event

    tenant_id, key = tenant_key
    app.extensions["pql"].clock = lambda: NOW
    send(
        client,
        key,
        [
            group("ada", "acme", plan="trial"),
            group("bob", "acme"),
            *ev("ada", "Report Created", "acme"),
        ],
    )
    sent: list[tuple[str, bool]] = []

    def before(connection, cursor, statement, params, context, executemany):
        words = statement.split()
        verb, table = words[0].upper(), words[2] if words[0].upper() == "DELETE" else words[1]
        if table == "INTO":
            table = words[2]
        if verb in ("UPDATE", "INSERT", "DELETE") and table in ("user_scores", "account_scores"):
            # The pass's own compare and write name the stored rows "t"; the members following
            # their account's fit is a plain UPDATE.
            label = f"{verb} {table}" + (" (fit)" if words[2] == "SET" else "")
            status = connection.connection.dbapi_connection.pgconn.pipeline_status
            sent.append((label, status != pq.PipelineStatus.OFF))

    event.listen(db.engine, "before_cursor_execute", before)
    try:
        recompute(db, tenant_id, NOW)
        assert sent == [
            ("DELETE user_scores", True),
            ("UPDATE user_scores", True),
            ("INSERT user_scores", True),
            ("DELETE account_scores", False),
            ("UPDATE account_scores", False),
            # (The new accounts are COPYed straight into their table.)
            ("UPDATE user_scores (fit)", False),
        ]
        sent.clear()
        app.extensions["pql"].clock = lambda: NOW + dt.timedelta(minutes=1)
        send(client, key, ev("bob", "Report Created", "acme", days_ago=0))
        summary = recompute(db, tenant_id, NOW + dt.timedelta(minutes=2), full=False)
        assert summary.full is False
        assert sent == [("UPDATE user_scores", True), ("UPDATE account_scores", False)]
    finally:
        event.remove(db.engine, "before_cursor_execute", before)
    with db.tenant_session(tenant_id) as s:
        scored = dict(
            s.execute(
                select(User.external_id, UserScore.engagement_score).join(
                    UserScore, UserScore.user_id == User.id
                )
            ).all()
        )
    assert scored["bob"] > 0  # written, though sent while the accounts were scored


@pytest.mark.skipif(
    os.environ.get("PQL_TEST_DB", "sqlite") != "postgresql", reason="a second connection"
)
def test_an_incremental_pass_reads_its_accounts_while_it_scores_the_users(
    app, client, db, tenant_key, monkeypatch
):
    """The accounts' facts are read on a connection of their own while the pass works on the
    users, and then their other members' stored scores summed; an account whose past changed
    (a late event) is read in the pass's own transaction, after its basis is rebuilt there.
    The scores are the ones the rules give."""
    import threading

    tenant_id, key = tenant_key
    app.extensions["pql"].clock = lambda: NOW - dt.timedelta(hours=1)
    send(
        client,
        key,
        [
            group("ada", "acme", plan="trial"),
            group("bob", "acme"),
            group("cy", "initech", plan="trial"),
            *ev("ada", "Report Created", "acme"),
            *ev("cy", "Logged In", "initech"),
        ],
    )
    recompute(db, tenant_id, NOW)
    app.extensions["pql"].clock = lambda: NOW + dt.timedelta(minutes=1)
    send(
        client,
        key,
        [
            *ev("bob", "Report Created", "acme", days_ago=0),
            *ev("cy", "Dashboard Shared", "initech", days_ago=3),  # late: initech's past moved
        ],
    )
    reading = threading.Event()
    reads: list[tuple[list[int], bool, int]] = []  # ids, on the main thread, connection
    main: list[int] = []  # the pass's own connection
    waited: list[bool] = []
    summed: list[bool] = []  # on the main thread
    load_accounts, score_rows, stored, sums = (
        scoring_pass.load_accounts,
        scoring_pass._score_rows,
        scoring_pass._stored,
        scoring_pass._stored_member_sums,
    )

    def backend(session) -> int:
        return session.connection().connection.dbapi_connection.info.backend_pid

    def read(session, ids, *args):
        on_main = threading.current_thread() is threading.main_thread()
        reads.append((list(ids), on_main, backend(session)))
        reading.set()
        return load_accounts(session, ids, *args)

    def score(defs, data, ids, subject, *args, **kwargs):
        if subject == "u":
            # The accounts' read begins before the users are scored, or (read in turn, after
            # them) it never will.
            waited.append(reading.wait(timeout=10))
        return score_rows(defs, data, ids, subject, *args, **kwargs)

    def sum_members(*args):
        summed.append(threading.current_thread() is threading.main_thread())
        return sums(*args)

    def read_stored(session, *args):
        main.append(backend(session))
        return stored(session, *args)

    monkeypatch.setattr(scoring_pass, "load_accounts", read)
    monkeypatch.setattr(scoring_pass, "_score_rows", score)
    monkeypatch.setattr(scoring_pass, "_stored", read_stored)
    monkeypatch.setattr(scoring_pass, "_stored_member_sums", sum_members)
    summary = recompute(db, tenant_id, NOW + dt.timedelta(minutes=2), full=False)
    assert summary.full is False and summary.accounts == 2
    with db.tenant_session(tenant_id) as s:
        ids = dict(s.execute(text("SELECT external_id, id FROM accounts")).all())
    assert waited == [True]
    assert reads == [
        ([ids["acme"]], False, reads[0][2]),
        ([ids["initech"]], True, main[0]),
    ]
    assert reads[0][2] != main[0]
    assert summed == [False]  # ada's stored score, for acme (bob was scored in the pass)
    monkeypatch.undo()
    assert _check(db, tenant_id, NOW.date()) == 5  # three users, two accounts


def test_members_summed_ahead_and_those_left_unscored_count_as_when_summed_in_the_pass(
    app, client, db, tenant_key
):
    """The members' sums read ahead leave out every user the pass set out to score; one it did
    not score after all (merged or gone meanwhile) still counts, with its stored score, as it
    does when the pass sums the others itself."""
    from concurrent.futures import Future

    from app.scores.activity_basis import only

    tenant_id, key = tenant_key
    app.extensions["pql"].clock = lambda: NOW
    send(
        client,
        key,
        [
            group("ada", "acme", plan="trial"),
            group("bob", "acme"),
            group("cy", "acme"),
            *ev("ada", "Report Created", "acme"),
            *ev("bob", "Dashboard Viewed", "acme", n=3),
            *ev("cy", "Logged In", "acme", days_ago=0),
        ],
    )
    recompute(db, tenant_id, NOW)
    defs = current_definitions(db, tenant_id).definitions
    today = NOW.date()
    with db.tenant_session(tenant_id) as s:
        users = dict(s.execute(text("SELECT external_id, id FROM users")).all())
        accounts = [s.scalar(text("SELECT id FROM accounts"))]
        members = {users["ada"]: (True, 100.0, NOW)}  # scored in the pass; bob was not
        left_out = sorted([users["ada"], users["bob"]])
        ahead: Future = Future()
        where = ~only(AccountMembership.user_id, left_out)[0]
        ahead.set_result(
            (left_out, scoring_pass._stored_member_sums(s, accounts, where, defs, today))
        )
        in_pass = scoring_pass._member_stats(s, accounts, members, defs, today)
        summed_ahead = scoring_pass._member_stats(s, accounts, members, defs, today, ahead)
    assert summed_ahead == in_pass
    (stats,) = in_pass.values()
    assert stats.total == 3 and stats.activated >= 1
