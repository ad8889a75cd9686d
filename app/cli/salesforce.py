"""``pql salesforce``: what a vendor deploys to its own Dev Hub for the packaged app."""

from __future__ import annotations

from pathlib import Path

import click
from flask.cli import with_appcontext

from app.services import services
from connectors.salesforce.package import PackageError, callback_url, global_oauth_files


@click.group("salesforce", help="The Salesforce package: the vendor's Dev Hub side.")
def salesforce_group() -> None:
    pass


@salesforce_group.command(
    "global-oauth",
    help="Write the External Client App's global OAuth settings (callback URL from PUBLIC_URL, "
    "PKCE, refresh-token rotation) as a Metadata API directory, for `sf project deploy start "
    "--metadata-dir DIR --target-org <Dev Hub>`. They stay in the Dev Hub: never packaged.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("salesforce/source-org"),
    show_default=True,
)
@click.option("--public-url", default=None, help="The service's public URL (default PUBLIC_URL).")
@with_appcontext
def salesforce_global_oauth(out: Path, public_url: str | None) -> None:
    url = public_url or services().settings.public_url
    try:
        files = global_oauth_files(url)
    except PackageError as exc:
        raise click.ClickException(str(exc)) from exc
    for name, content in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    click.echo(f"wrote {len(files)} files to {out} (callback {callback_url(url)})")
