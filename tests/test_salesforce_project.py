"""The Salesforce package source (salesforce/) and the Python side agree: the External Client
App's scopes cover what the install asks for, its policies keep authorisation to admin-approved
users, the integration permission set covers the objects the connector writes, the API version
is the connector's; the global OAuth settings (never packaged) carry the service's real
callback with PKCE and refresh-token rotation. The metadata types and folders themselves are
checked offline by ``npm run check`` in salesforce/ (scripts/test runs it)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from connectors.salesforce.api import API_VERSION, SCOPES
from connectors.salesforce.package import (
    APP_NAME,
    CALLBACK_PATH,
    PackageError,
    global_oauth_files,
)

PROJECT = Path(__file__).resolve().parent.parent / "salesforce"
SOURCE = PROJECT / "force-app/main/default"
NS = "{http://soap.sforce.com/2006/04/metadata}"
# OAuth scope parameters as the External Client App's metadata names them.
SCOPE_NAMES = {"api": "Api", "refresh_token": "RefreshToken", "offline_access": "RefreshToken"}


def _xml(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag.startswith(NS), f"{path.name}: not in the Metadata API namespace"
    return root


def _text(root: ET.Element, name: str) -> str | None:
    return root.findtext(f"{NS}{name}")


def test_the_project_packages_one_directory_at_the_connectors_api_version():
    project = json.loads((PROJECT / "sfdx-project.json").read_text())
    packaged = [d for d in project["packageDirectories"] if d.get("package")]
    assert [d["path"] for d in packaged] == ["force-app"]
    assert project["sourceApiVersion"] == API_VERSION


def test_every_app_file_names_the_app_and_the_app_is_packaged():
    app = _xml(SOURCE / f"externalClientApps/{APP_NAME}.eca-meta.xml")
    assert _text(app, "distributionState") == "Packaged"
    parts = [
        *SOURCE.glob("extlClntAppOauthSettings/*"),
        *SOURCE.glob("extlClntAppOauthPolicies/*"),
        *SOURCE.glob("extlClntAppPolicies/*"),
    ]
    assert len(parts) == 3
    for path in parts:
        assert _text(_xml(path), "externalClientApplication") == APP_NAME, path.name
    # The consumer key and secret never enter the package or the repository.
    assert not list(PROJECT.rglob("*.ecaGlblOauth*"))
    assert "extlClntAppGlobalOauthSets" in (PROJECT / ".forceignore").read_text()


def test_the_apps_scopes_are_the_ones_the_install_asks_for():
    oauth = _xml(SOURCE / f"extlClntAppOauthSettings/{APP_NAME}_oauth.ecaOauth-meta.xml")
    scopes = {s.strip() for s in _text(oauth, "commaSeparatedOauthScopes").split(",")}
    assert scopes == {SCOPE_NAMES[s] for s in SCOPES}


def test_only_admin_approved_users_authorise_and_the_oauth_plugin_is_on():
    policies = _xml(SOURCE / f"extlClntAppOauthPolicies/{APP_NAME}_oauthPlcy.ecaOauthPlcy-meta.xml")
    assert _text(policies, "permittedUsersPolicyType") == "AdminApprovedPreAuthorized"
    assert _text(policies, "isClientCredentialsFlowEnabled") == "false"
    plugins = _xml(SOURCE / f"extlClntAppPolicies/{APP_NAME}_plcy.ecaPlcy-meta.xml")
    assert _text(plugins, "isEnabled") == _text(plugins, "isOauthPluginEnabled") == "true"


def test_the_integration_permission_set_covers_what_the_connector_writes():
    root = _xml(SOURCE / "permissionsets/PQL_Engine_Integration.permissionset-meta.xml")
    objects = {
        _text(p, "object"): {c.tag[len(NS) :] for c in p if c.text == "true"}
        for p in root.findall(f"{NS}objectPermissions")
    }
    for sobject in ("Account", "Contact", "Lead", "Task"):
        assert {"allowRead", "allowCreate", "allowEdit"} <= objects[sobject], sobject
    assert "allowRead" in objects["Opportunity"]  # stages are pulled back
    # Nothing it does not need: no deletes, no view/modify all.
    granted = set().union(*objects.values())
    assert not granted & {"allowDelete", "modifyAllRecords", "viewAllRecords"}


def test_global_oauth_settings_carry_the_services_callback_with_pkce_and_rotation(make_app):
    files = global_oauth_files("https://pql.example.com/")
    settings = ET.fromstring(files["extlClntAppGlobalOauthSets/PQL_Engine_glbloauth.ecaGlblOauth"])
    assert _text(settings, "callbackUrl") == "https://pql.example.com/salesforce/oauth-callback"
    assert _text(settings, "externalClientApplication") == APP_NAME
    assert _text(settings, "isPkceRequired") == "true"
    assert _text(settings, "isRefreshTokenRotationEnabled") == "true"
    assert _text(settings, "isConsumerSecretOptional") == "false"
    manifest = ET.fromstring(files["package.xml"])
    assert _text(manifest.find(f"{NS}types"), "name") == "ExtlClntAppGlobalOauthSettings"
    assert _text(manifest, "version") == API_VERSION
    # The callback is the route the service serves.
    routes = {r.rule for r in make_app().url_map.iter_rules()}
    assert CALLBACK_PATH in routes


@pytest.mark.parametrize(
    "url",
    ["http://pql.example.com", "ftp://pql.example.com", "https://user:pw@pql.example.com", ""],
)
def test_global_oauth_settings_refuse_a_url_salesforce_would_not_call_back(url):
    with pytest.raises(PackageError, match="PUBLIC_URL"):
        global_oauth_files(url)


def test_the_cli_writes_the_deploy_directory_or_exits_non_zero(make_app, tmp_path):
    runner = make_app().test_cli_runner()
    out = tmp_path / "source-org"
    result = runner.invoke(
        args=["salesforce", "global-oauth", "--out", str(out), "--public-url", "https://a.test"]
    )
    assert result.exit_code == 0, result.output
    assert (out / "package.xml").is_file()
    assert "https://a.test/salesforce/oauth-callback" in result.output
    refused = runner.invoke(
        args=[
            "salesforce",
            "global-oauth",
            "--out",
            str(tmp_path / "x"),
            "--public-url",
            "http://a.test",
        ]
    )
    assert refused.exit_code != 0
    assert "must be https://" in refused.output
    assert not (tmp_path / "x").exists()
