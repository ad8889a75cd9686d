"""The admin web UI under ``/app``: server-rendered pages for the admin who installed the app
(install status and keys, definitions with preview and history, the PQL spectrum, account
detail, segments).

Signing in is the CRM install itself: the OAuth callback puts the tenant and the installing
admin in the session (``sign_in``); ``/app/login`` sends an admin through it again. A session
belongs to one tenant: every query runs in that tenant's session, so another tenant's ids
answer 404. Every form carries the session's CSRF token, checked on every POST.
"""

from app.web.admin import (  # noqa: F401 (their routes)
    accounts,
    definition_forms,
    definitions,
    events,
    fit,
    home,
    triggers,
)
from app.web.admin.session import bp, sign_in

__all__ = ["bp", "sign_in"]
