"""gunicorn's settings for the ``web`` process (``gunicorn -c python:app.gunicorn_config``).

The access log leaves out what gunicorn's default format prints that is a secret here: the
HTTP Basic user (the tracking API's write key) and the query string (the OAuth callback's
``code``, the admin pages' filters). It keeps the client, time, method, path, status, size and
duration.
"""

import os
from pathlib import Path

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
threads = int(os.environ.get("WEB_THREADS", "2"))
accesslog = "-"
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'


def _loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    return address.startswith("unix:") or host in ("127.0.0.1", "localhost", "::1")


def on_starting(server) -> None:
    """Refuse to serve beyond this machine with the public development secrets: anyone
    could sign an admin session with them."""
    from app.config import Settings

    settings = Settings.from_env(instance_path=Path("instance").resolve())
    exposed = [a for a in server.cfg.bind if not _loopback(a)]
    if settings.development_secrets and exposed:
        raise SystemExit(
            f"refusing to listen on {', '.join(exposed)} with the development SECRET_KEY or "
            "token key: set APP_ENV=production with real secrets (pql secrets generate), "
            "or bind 127.0.0.1"
        )
