import pytest
from sqlalchemy import delete, func, select, update

from app.db import TenantScopeError, stream
from app.models import Account, AccountMembership, User
from app.tenants import create_tenant


@pytest.fixture
def two_tenants(db):
    a = create_tenant(db, "Tenant A")
    b = create_tenant(db, "Tenant B")
    for tenant, prefix in ((a, "a"), (b, "b")):
        with db.tenant_transaction(tenant.id) as s:
            acct = Account(external_id=f"{prefix}-acct", name=f"{prefix} inc")
            user = User(external_id=f"{prefix}-user", email=f"{prefix}@example.com")
            s.add_all([acct, user])
            s.flush()
            s.add(AccountMembership(account_id=acct.id, user_id=user.id))
    return a.id, b.id


def test_tenant_session_select_returns_only_its_own_rows(db, two_tenants):
    a, _ = two_tenants
    with db.tenant_session(a) as s:
        assert [x.external_id for x in s.scalars(select(Account))] == ["a-acct"]
        assert [x.external_id for x in s.scalars(select(User))] == ["a-user"]
        assert s.scalar(select(func.count()).select_from(AccountMembership)) == 1


def test_streamed_reads_are_filtered_to_the_tenant_too(db, two_tenants):
    """Large reads go round the ORM's row loading (``stream``): the tenant filter must not."""
    a, _ = two_tenants
    with db.tenant_session(a) as s, s.begin():
        joined = stream(
            s,
            select(User.external_id, AccountMembership.account_id).join(
                AccountMembership, AccountMembership.user_id == User.id
            ),
            batch=1,
        ).all()
        assert [row[0] for row in joined] == ["a-user"]
    with db.system_session() as s, s.begin():
        assert sorted(r[0] for r in stream(s, select(User.external_id))) == ["a-user", "b-user"]


def test_tenant_session_cannot_reach_another_tenants_row_by_id_or_join(db, two_tenants):
    a, b = two_tenants
    with db.tenant_session(b) as s:
        b_account_id = s.scalar(select(Account.id))
    with db.tenant_session(a) as s:
        assert s.scalar(select(Account).where(Account.id == b_account_id)) is None
        joined = s.execute(
            select(User.external_id).join(AccountMembership, AccountMembership.user_id == User.id)
        ).all()
        assert joined == [("a-user",)]


def test_bulk_update_and_delete_stay_inside_the_tenant(db, two_tenants):
    a, b = two_tenants
    with db.tenant_transaction(a) as s:
        s.execute(update(Account).values(name="renamed"))
        s.execute(delete(User).where(User.email.like("%@example.com")))
    with db.tenant_session(b) as s:
        assert s.scalar(select(Account.name)) == "b inc"
        assert s.scalar(select(User.email)) == "b@example.com"


def test_new_rows_are_stamped_with_the_session_tenant(db, two_tenants):
    a, _ = two_tenants
    with db.tenant_transaction(a) as s:
        acct = Account(external_id="fresh")
        s.add(acct)
        s.flush()
        assert acct.tenant_id == a


def test_writing_another_tenants_row_raises(db, two_tenants):
    a, b = two_tenants
    with pytest.raises(TenantScopeError), db.tenant_transaction(a) as s:
        s.add(Account(tenant_id=b, external_id="smuggled"))
    with db.system_session() as s:
        assert s.scalar(select(Account).where(Account.external_id == "smuggled")) is None


def test_system_session_sees_every_tenant(db, two_tenants):
    with db.system_session() as s:
        assert s.scalar(select(func.count()).select_from(Account)) == 2
