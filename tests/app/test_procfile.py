"""The web process as the Procfile starts it: its access log carries no secret."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from app.security import new_encryption_key

ROOT = Path(__file__).resolve().parents[2]


def _procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def test_processes_run_in_production_unless_told_otherwise():
    for command in _procfile().values():
        assert command.startswith("APP_ENV=${APP_ENV:-production} ")


def test_the_web_process_logs_no_write_key_and_no_query_string(migrated_url, unused_port):
    command = _procfile()["web"].split(" ", 1)[1]  # the command after its APP_ENV default
    argv = shlex.split(command)
    argv[0] = str(Path(sys.executable).parent / argv[0])
    env = {
        **os.environ,
        "APP_ENV": "test",
        "SECRET_KEY": secrets.token_urlsafe(32),
        "TOKEN_ENCRYPTION_KEYS": new_encryption_key(),
        "DATABASE_URL": migrated_url,
        "PORT": str(unused_port),
        "WEB_CONCURRENCY": "1",
        "LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    key, code = "wk_secretwritekey1234", "oauth-code-should-not-be-logged"
    base = f"http://127.0.0.1:{unused_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        auth = base64.b64encode(f"{key}:".encode()).decode()
        request = urllib.request.Request(
            f"{base}/v1/batch", data=b'{"batch": []}', headers={"Authorization": f"Basic {auth}"}
        )
        # Refused (an unknown key, a forged state): what matters is the log line.
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(request, timeout=5)
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(f"{base}/hubspot/oauth-callback?code={code}&state=x", timeout=5)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert '"POST /v1/batch HTTP/1.1" 401' in output, output  # the access log is there
    assert "/hubspot/oauth-callback HTTP/1.1" in output
    assert key not in output and code not in output


def test_the_web_process_refuses_a_public_address_with_the_development_secrets(
    migrated_url, unused_port
):
    command = _procfile()["web"].split(" ", 1)[1]
    argv = shlex.split(command)
    argv[0] = str(Path(sys.executable).parent / argv[0])
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "TOKEN_ENCRYPTION_KEYS")}
    env.update(APP_ENV="development", DATABASE_URL=migrated_url, PORT=str(unused_port))
    finished = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert finished.returncode != 0
    assert "refusing to listen on 0.0.0.0" in finished.stdout + finished.stderr
