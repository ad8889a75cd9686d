"""gunicorn's settings for the ``web`` process (``gunicorn -c python:app.gunicorn_config``).

The access log leaves out what gunicorn's default format prints that is a secret here: the
HTTP Basic user (the tracking API's write key) and the query string (the OAuth callback's
``code``, the admin pages' filters). It keeps the client, time, method, path, status, size and
duration.
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
threads = int(os.environ.get("WEB_THREADS", "2"))
accesslog = "-"
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'
