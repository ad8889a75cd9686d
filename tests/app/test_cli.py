import json

from sqlalchemy import select

from app import create_app
from app.models import Tenant, Trigger, WriteKey
from app.security import TokenCipher, new_encryption_key
from app.tenants import create_tenant, issue_write_key, resolve_write_key
from tests.helpers.apps import config_for


def test_tenant_create_prints_a_working_write_key(cli, db):
    result = cli.invoke(args=["tenant", "create", "--name", "Acme", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert resolve_write_key(db, out["write_key"]).tenant_id == out["tenant_id"]


def test_tenant_list_shows_tenants(cli, db):
    create_tenant(db, "Acme")
    create_tenant(db, "Globex", crm="hubspot", external_id="123456")
    result = cli.invoke(args=["tenant", "list", "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.output)
    assert [(r["name"], r["crm"], r["external_id"]) for r in rows] == [
        ("Acme", "none", None),
        ("Globex", "hubspot", "123456"),
    ]


def test_key_rotate_revokes_the_old_key_and_prints_a_new_one(cli, db):
    out = json.loads(cli.invoke(args=["tenant", "create", "--name", "A", "--json"]).output)
    result = cli.invoke(args=["key", "rotate", "--tenant", str(out["tenant_id"]), "1"])
    assert result.exit_code == 0, result.output
    new_secret = result.output.strip().rsplit(" ", 1)[-1]
    assert resolve_write_key(db, out["write_key"]) is None
    assert resolve_write_key(db, new_secret).tenant_id == out["tenant_id"]


def test_key_revoke_of_an_unknown_key_exits_non_zero_with_a_message(cli, db):
    tenant = create_tenant(db, "Acme")
    result = cli.invoke(args=["key", "revoke", "--tenant", str(tenant.id), "999"])
    assert result.exit_code == 1
    assert "has no write key 999" in result.output


def test_tenant_create_rejects_an_unknown_crm(cli):
    result = cli.invoke(args=["tenant", "create", "--name", "A", "--crm", "pipedrive"])
    assert result.exit_code == 2
    assert "pipedrive" in result.output


def test_commands_refuse_an_unmigrated_database_with_a_hint(db_factory):
    app = create_app(config_for(db_factory.new_url()))
    result = app.test_cli_runner().invoke(args=["tenant", "list"])
    assert result.exit_code == 1
    assert "pql db upgrade" in result.output
    app.extensions["pql"].db.dispose()


def test_db_upgrade_then_current_reports_head(db_factory):
    app = create_app(config_for(db_factory.new_url()))
    runner = app.test_cli_runner()
    assert runner.invoke(args=["db", "current"]).exit_code == 1
    assert runner.invoke(args=["db", "upgrade"]).exit_code == 0
    assert runner.invoke(args=["db", "current"]).exit_code == 0
    app.extensions["pql"].db.dispose()


def test_rotate_tokens_re_encrypts_with_the_new_primary_key(db, migrated_url):
    old_key, new_key = new_encryption_key(), new_encryption_key()
    old_cipher = TokenCipher([old_key])
    tenant = create_tenant(db, "Acme", crm="hubspot", external_id="42")
    with db.system_transaction() as s:
        s.get(Tenant, tenant.id).refresh_token_encrypted = old_cipher.encrypt("refresh-me")
    issue_write_key(db, tenant.id, cipher=old_cipher)
    with db.tenant_transaction(tenant.id) as s:
        # A webhook trigger saved before signing secrets were encrypted.
        s.add(
            Trigger(
                tenant_id=tenant.id,
                name="Bridge",
                subject="account",
                event="new",
                params={},
                action="webhook",
                action_params={"url": "https://bridge.test/x", "secret": "plain-old-secret"},
                cap_hours=24,
                enabled=True,
            )
        )

    app = create_app(config_for(migrated_url, TOKEN_ENCRYPTION_KEYS=f"{new_key},{old_key}"))
    result = app.test_cli_runner().invoke(args=["secrets", "rotate-tokens"])
    assert result.exit_code == 0, result.output
    assert "re-encrypted 3 secrets" in result.output
    with db.system_session() as s:
        stored = s.scalar(select(Tenant.refresh_token_encrypted))
        key = s.scalar(select(WriteKey.secret_encrypted))
        params = s.scalar(select(Trigger.action_params))
    assert TokenCipher([new_key]).decrypt(stored) == "refresh-me"
    assert TokenCipher([new_key]).decrypt(key).startswith("wk_")
    assert "secret" not in params
    assert TokenCipher([new_key]).decrypt(params["secret_encrypted"]) == "plain-old-secret"
    app.extensions["pql"].db.dispose()


def test_definitions_export_then_import_adds_a_version(cli, db, tmp_path):
    tenant = create_tenant(db, "Acme")
    exported = cli.invoke(args=["definitions", "export", "--tenant", str(tenant.id)])
    assert exported.exit_code == 0, exported.output
    assert "complexity: simple" in exported.output
    path = tmp_path / "defs.yaml"
    path.write_text(exported.output.replace("complexity: simple", "complexity: complex"))
    result = cli.invoke(
        args=["definitions", "import", "--tenant", str(tenant.id), "--note", "complex", str(path)]
    )
    assert result.exit_code == 0, result.output
    assert "saved as version 2" in result.output
    history = cli.invoke(args=["definitions", "history", "--tenant", str(tenant.id)])
    assert "complex" in history.output


def test_definitions_import_of_an_invalid_file_names_the_fields_and_saves_nothing(
    cli, db, tmp_path
):
    tenant = create_tenant(db, "Acme")
    exported = cli.invoke(args=["definitions", "export", "--tenant", str(tenant.id)]).output
    path = tmp_path / "defs.yaml"
    path.write_text(exported.replace("time_frame_days: 7", "time_frame_days: 9"))
    result = cli.invoke(args=["definitions", "import", "--tenant", str(tenant.id), str(path)])
    assert result.exit_code == 1
    assert "profiles.0.time_frame_days" in result.output
    assert "nothing saved" in result.output
    (tmp_path / "broken.yaml").write_text("a: [unclosed")
    broken = cli.invoke(
        args=["definitions", "import", "--tenant", str(tenant.id), str(tmp_path / "broken.yaml")]
    )
    assert broken.exit_code == 1 and "not valid YAML" in broken.output


def test_definitions_import_refuses_yaml_aliases_and_oversized_files(cli, db, tmp_path):
    tenant = create_tenant(db, "Acme")
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)
    )
    (tmp_path / "bomb.yaml").write_text(bomb)
    result = cli.invoke(
        args=["definitions", "import", "--tenant", str(tenant.id), str(tmp_path / "bomb.yaml")]
    )
    assert result.exit_code == 1 and "anchors and aliases are not allowed" in result.output
    (tmp_path / "big.yaml").write_text("frequency_days: 7\n" + "#" * 300_000 + "\n")
    big = cli.invoke(
        args=["definitions", "import", "--tenant", str(tenant.id), str(tmp_path / "big.yaml")]
    )
    assert big.exit_code == 1 and "the limit is" in big.output
    history = cli.invoke(args=["definitions", "history", "--tenant", str(tenant.id)])
    assert [line.split()[0] for line in history.output.splitlines()] == ["1"]


def test_score_command_reports_what_it_scored(cli, db):
    tenant = create_tenant(db, "Acme")
    result = cli.invoke(args=["score", "--tenant", str(tenant.id)])
    assert result.exit_code == 0, result.output
    assert "full pass: 0 accounts, 0 users" in result.output
    missing = cli.invoke(args=["score", "--tenant", "999"])
    assert missing.exit_code == 1 and "no tenant with id 999" in missing.output


def test_admin_keys_are_issued_with_their_own_prefix(cli, db):
    tenant = create_tenant(db, "Acme")
    result = cli.invoke(args=["key", "create", "--tenant", str(tenant.id), "--scope", "admin"])
    assert result.exit_code == 0
    secret = result.output.strip().rsplit(" ", 1)[-1]
    assert secret.startswith("ak_")
    assert resolve_write_key(db, secret) is None
    assert resolve_write_key(db, secret, scope="admin").tenant_id == tenant.id


def test_a_key_rotated_from_the_cli_can_be_revealed_again_like_the_admin_pages_rotation(cli, db):
    tenant = create_tenant(db, "Acme")
    old = issue_write_key(db, tenant.id, label="web app")
    result = cli.invoke(args=["key", "rotate", "--tenant", str(tenant.id), str(old.key_id)])
    assert result.exit_code == 0, result.output
    with db.tenant_session(tenant.id) as s:
        fresh = s.scalar(select(WriteKey).where(WriteKey.revoked_at.is_(None)))
    assert fresh.label == "web app" and fresh.secret_encrypted


def test_uninstall_removing_crm_properties_needs_an_installed_crm(cli, db):
    out = json.loads(cli.invoke(args=["tenant", "create", "--name", "A", "--json"]).output)
    tenant = str(out["tenant_id"])
    result = cli.invoke(args=["tenant", "uninstall", tenant, "--remove-crm-properties"])
    assert result.exit_code == 1
    assert "can only be removed while the app is installed in a CRM" in result.output
    # Nothing was uninstalled: the key still works.
    assert resolve_write_key(db, out["write_key"]).tenant_id == out["tenant_id"]
