"""``pql secrets``: fresh secrets, and re-encrypting what is stored under a new key."""

from __future__ import annotations

import secrets as pysecrets

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from app.cli.common import require_schema
from app.security import new_encryption_key
from app.services import services

# --- secrets --------------------------------------------------------------------------------


@click.group("secrets", help="Generate secrets and rotate token encryption.")
def secrets_group() -> None:
    pass


@secrets_group.command("generate", help="Print fresh SECRET_KEY and TOKEN_ENCRYPTION_KEYS values.")
def secrets_generate() -> None:
    click.echo(f"SECRET_KEY={pysecrets.token_urlsafe(48)}")
    click.echo(f"TOKEN_ENCRYPTION_KEYS={new_encryption_key()}")


@secrets_group.command(
    "rotate-tokens",
    help="Re-encrypt every stored secret (CRM tokens, write keys kept for the admin pages, "
    "webhook triggers' signing secrets) with the first key of TOKEN_ENCRYPTION_KEYS.",
)
@with_appcontext
def secrets_rotate_tokens() -> None:
    require_schema()
    from app.models import Tenant, Trigger, WriteKey

    svc = services()
    count = 0
    encrypted = (
        (Tenant, ("access_token_encrypted", "refresh_token_encrypted")),
        (WriteKey, ("secret_encrypted",)),
    )
    with svc.db.system_transaction() as session:
        for model, attrs in encrypted:
            for row in session.scalars(select(model)):
                for attr in attrs:
                    value = getattr(row, attr)
                    if value:
                        setattr(row, attr, svc.token_cipher.rotate(value))
                        count += 1
        # Webhook triggers' signing secrets; a plain one from before they were encrypted is
        # encrypted now.
        for rule in session.scalars(select(Trigger).where(Trigger.action == "webhook")):
            params = dict(rule.action_params or {})
            if params.get("secret_encrypted"):
                params["secret_encrypted"] = svc.token_cipher.rotate(params["secret_encrypted"])
            elif params.get("secret"):
                params["secret_encrypted"] = svc.token_cipher.encrypt(params.pop("secret"))
            else:
                continue
            rule.action_params = params
            count += 1
    click.echo(f"re-encrypted {count} secrets")
