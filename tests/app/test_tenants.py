import pytest
from sqlalchemy import select, text

from app.models import Base, Tenant, WriteKey
from app.tenants import (
    NotFound,
    create_tenant,
    issue_write_key,
    resolve_write_key,
    revoke_write_key,
    rotate_write_key,
)


def _all_stored_text(db) -> str:
    dump = []
    with db.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            for row in connection.execute(text(f"SELECT * FROM {table.name}")):
                dump.append(repr(tuple(row)))
    return "\n".join(dump)


def test_write_key_is_not_stored_in_clear(db):
    tenant = create_tenant(db, "Acme")
    key = issue_write_key(db, tenant.id)
    stored = _all_stored_text(db)
    assert key.secret not in stored
    assert key.secret[len(key.display_prefix) :] not in stored
    with db.system_session() as s:
        row = s.scalar(select(WriteKey))
        assert len(row.key_hash) == 64 and row.key_hash != key.secret


def test_active_key_resolves_to_its_tenant(db):
    a = create_tenant(db, "A")
    b = create_tenant(db, "B")
    key_a = issue_write_key(db, a.id)
    key_b = issue_write_key(db, b.id)
    assert resolve_write_key(db, key_a.secret).tenant_id == a.id
    assert resolve_write_key(db, key_b.secret).tenant_id == b.id
    assert resolve_write_key(db, key_a.secret + "x") is None
    assert resolve_write_key(db, "") is None


def test_revoked_key_no_longer_resolves(db):
    tenant = create_tenant(db, "Acme")
    key = issue_write_key(db, tenant.id)
    revoke_write_key(db, tenant.id, key.key_id)
    assert resolve_write_key(db, key.secret) is None


def test_a_tenant_can_hold_several_keys_and_rotate_one(db):
    tenant = create_tenant(db, "Acme")
    first = issue_write_key(db, tenant.id, label="web")
    second = issue_write_key(db, tenant.id, label="backend")
    replacement = rotate_write_key(db, tenant.id, first.key_id)
    assert resolve_write_key(db, first.secret) is None
    assert resolve_write_key(db, second.secret).key_id == second.key_id
    assert resolve_write_key(db, replacement.secret).tenant_id == tenant.id
    with pytest.raises(ValueError, match="already revoked"):
        rotate_write_key(db, tenant.id, first.key_id)


def test_a_tenant_cannot_revoke_another_tenants_key(db):
    a = create_tenant(db, "A")
    b = create_tenant(db, "B")
    key_b = issue_write_key(db, b.id)
    with pytest.raises(NotFound):
        revoke_write_key(db, a.id, key_b.key_id)
    assert resolve_write_key(db, key_b.secret) is not None


def test_keys_of_an_uninstalled_tenant_do_not_resolve(db):
    tenant = create_tenant(db, "Acme")
    key = issue_write_key(db, tenant.id)
    with db.system_transaction() as s:
        s.get(Tenant, tenant.id).status = "uninstalled"
    assert resolve_write_key(db, key.secret) is None
