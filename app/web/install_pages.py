"""The pages an install ends on, shared by every CRM's install flow: the browser is signed in
to the admin pages, a first install shows the write key and the next steps."""

from __future__ import annotations

from flask import make_response, redirect, render_template_string

from app.sync.lifecycle import Installed
from app.web.admin.session import sign_in
from connectors import registry

INSTALLED_PAGE = """<!doctype html>
<title>PQL engine installed</title>
<h1>Installed in {{ where }}</h1>
<p>Send your product's events to <code>{{ public_url }}/v1/batch</code> (Segment-compatible
HTTP API) with this write key as the Basic-auth user name. Copy it now; the admin pages can
reveal it again (Home → Write keys) and rotate it.</p>
<pre>{{ key }}</pre>
<h2>Next steps</h2>
<ol>
<li>Point your Segment/RudderStack destination or SDK at the URL above with the key.</li>
<li>{{ fields_hint | safe }}</li>
<li>Adjust Activation steps, scoring profiles and PQL thresholds in the
<a href="/app/definitions">admin pages</a> (or with <code>pql definitions export/import</code>
or the JSON API).</li>
</ol>
<p><a href="/app/">Open the admin pages</a></p>
"""

ERROR_PAGE = """<!doctype html><title>Install failed</title>
<h1>The install did not complete</h1><p>{{ message }}</p>
<p><a href="{{ retry }}">Start again</a></p>"""


def error_page(message: str, status: int, retry: str):
    return render_template_string(ERROR_PAGE, message=message, retry=retry), status


def installed_page(svc, crm: str, installed: Installed, cookie: str):
    """Where an install ends: the browser is signed in to the admin pages for this tenant;
    a first install (or one after an uninstall) shows the write key and next steps, an admin
    signing in again goes straight to the admin pages. The install's cookie is cleared."""
    provider = registry.get(crm)
    sign_in(installed.tenant_id, f"{provider.display_name} admin")
    if installed.write_key is None:
        response = redirect("/app/")
        response.delete_cookie(cookie)
        return response
    page = render_template_string(
        INSTALLED_PAGE,
        where=provider.installation_name(installed.external_id),
        key=installed.write_key,
        public_url=svc.settings.public_url,
        fields_hint=provider.fields_hint,
    )
    response = make_response(page)
    response.delete_cookie(cookie)
    return response
