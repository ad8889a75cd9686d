"""The Salesforce package's side that never goes into the package: the External Client App's
global OAuth settings (callback URL, PKCE, refresh-token rotation; Salesforce adds the
consumer key and secret). They are deployed once to the vendor's Dev Hub, the org that owns the
app; the packaged app in every customer org refers to them. The packaged part is the SFDX
project in ``salesforce/``."""

from __future__ import annotations

from urllib.parse import urlparse
from xml.sax.saxutils import escape

from connectors.salesforce.api import API_VERSION

APP_NAME = "PQL_Engine"  # the External Client App's API name in salesforce/force-app
GLOBAL_OAUTH_NAME = f"{APP_NAME}_glbloauth"
CALLBACK_PATH = "/salesforce/oauth-callback"
METADATA_NS = "http://soap.sforce.com/2006/04/metadata"


class PackageError(ValueError):
    pass


def callback_url(public_url: str) -> str:
    """The OAuth redirect URI the service sends for ``public_url``. Salesforce takes https
    callbacks, and http only for localhost."""
    parsed = urlparse(public_url.strip())
    local = parsed.hostname in ("localhost", "127.0.0.1")
    if parsed.scheme != "https" and not (parsed.scheme == "http" and local):
        raise PackageError(
            f"PUBLIC_URL {public_url!r} must be https:// (Salesforce accepts http only for "
            "localhost)"
        )
    if not parsed.hostname or parsed.username or parsed.password or parsed.query:
        raise PackageError(f"PUBLIC_URL {public_url!r} must be a plain https://host[/path]")
    return public_url.strip().rstrip("/") + CALLBACK_PATH


def global_oauth_files(public_url: str) -> dict[str, str]:
    """The global OAuth settings as a Metadata API deploy directory (path → content) for
    ``sf project deploy start --metadata-dir``."""
    callback = escape(callback_url(public_url))
    settings = f"""<?xml version="1.0" encoding="UTF-8"?>
<ExtlClntAppGlobalOauthSettings xmlns="{METADATA_NS}">
    <callbackUrl>{callback}</callbackUrl>
    <externalClientApplication>{APP_NAME}</externalClientApplication>
    <isConsumerSecretOptional>false</isConsumerSecretOptional>
    <isIntrospectAllTokens>false</isIntrospectAllTokens>
    <isPkceRequired>true</isPkceRequired>
    <isRefreshTokenRotationEnabled>true</isRefreshTokenRotationEnabled>
    <isSecretRequiredForRefreshToken>true</isSecretRequiredForRefreshToken>
    <label>PQL engine global OAuth</label>
</ExtlClntAppGlobalOauthSettings>
"""
    manifest = f"""<?xml version="1.0" encoding="UTF-8"?>
<Package xmlns="{METADATA_NS}">
    <types>
        <members>{GLOBAL_OAUTH_NAME}</members>
        <name>ExtlClntAppGlobalOauthSettings</name>
    </types>
    <version>{API_VERSION}</version>
</Package>
"""
    return {
        "package.xml": manifest,
        f"extlClntAppGlobalOauthSets/{GLOBAL_OAUTH_NAME}.ecaGlblOauth": settings,
    }
