"""Trigger targets: no request to an address inside the service's network."""

from __future__ import annotations

import socket
import time

import pytest
import requests

from app.jobs import outbound
from app.jobs.deliveries import check_trigger
from tests.helpers.drip import DripServer


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1@internal-host/x", "without a user name"),
        ("https://user:pw@hooks.example.test/x", "without a user name"),
        ("https://169.254.169.254/latest/meta-data", "not a public address"),
        ("https://10.0.0.5/", "not a public address"),
        ("https://192.168.1.1/", "not a public address"),
        ("https://100.64.1.1/", "not a public address"),  # CGNAT
        ("https://224.0.0.1/", "not a public address"),
        ("https://240.0.0.1/", "not a public address"),  # reserved
        ("https://[::1]:8443/", "not a public address"),
        ("https://[::ffff:10.0.0.1]/", "not a public address"),
        ("https://[fe80::1]/", "not a public address"),
        ("http://127.0.0.1:9/", "an https:// URL"),  # loopback only outside production
        ("http://example.test/", "an https:// URL"),
        ("ftp://example.test/", "an https:// URL"),
        ("https:///nohost", "with a host"),
    ],
)
def test_a_target_inside_the_network_is_refused(url, problem):
    with pytest.raises(outbound.UnsafeTarget, match=problem):
        outbound.resolve(url, allow_loopback=False)


def test_a_host_that_resolves_to_a_private_address_is_refused(monkeypatch):
    real = outbound._getaddrinfo

    def getaddrinfo(host, port):
        if host == "rebind.example.com":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port))]
        return real(host, port)

    monkeypatch.setattr(outbound, "_getaddrinfo", getaddrinfo)
    with pytest.raises(outbound.UnsafeTarget, match=r"resolves to 10\.1\.2\.3"):
        outbound.resolve("https://rebind.example.com/hook", allow_loopback=True)


def test_slack_actions_go_only_to_slacks_webhook_host():
    problems = check_trigger(
        {
            "name": "x",
            "subject": "account",
            "event": "became_pql",
            "params": {},
            "action": "slack",
            "action_params": {"url": "https://hooks.example.test/services/a"},
            "cap_hours": 0,
        }
    )
    assert "hooks.slack.com" in problems["url"]
    assert outbound.resolve("https://hooks.slack.com/services/T/B/x", False, slack=True)


def test_posting_resolves_once_and_follows_no_redirect(target, monkeypatch):
    port, seen = target
    calls = []
    real = outbound._getaddrinfo
    monkeypatch.setattr(outbound, "_getaddrinfo", lambda h, p: calls.append(h) or real(h, p))
    assert outbound.post(f"http://localhost:{port}/hook", b"{}", {}, 2, True) == 204
    assert calls == ["localhost"]
    assert outbound.post(f"http://localhost:{port}/redirect", b"{}", {}, 2, True) == 302
    assert len(seen) == 2  # the redirect was not followed


def test_the_connection_goes_to_the_checked_address_under_the_hosts_name(target):
    port, seen = target
    with requests.Session() as session:
        session.mount("http://", outbound._PinnedAdapter("127.0.0.1"))
        # The name resolves nowhere: only the pinned address is used, the name is the Host.
        answer = session.post(f"http://pinned.invalid:{port}/hook", data=b"{}", timeout=2)
    assert answer.status_code == 204 and seen == [f"pinned.invalid:{port}"]


def test_tls_is_checked_against_the_hosts_name_not_the_pinned_address():
    adapter = outbound._PinnedAdapter("93.184.215.14")
    request = requests.Request("POST", "https://hooks.example.test/x").prepare()
    pool = adapter.get_connection_with_tls_context(request, verify=True)
    assert pool.host == "93.184.215.14"
    assert pool.conn_kw["server_hostname"] == "hooks.example.test"
    assert pool.assert_hostname == "hooks.example.test"


def test_a_target_that_drips_its_answer_is_cut_at_the_wall_clock_deadline():
    drip = DripServer(interval=0.2, total=8.0)  # every read gets a byte well within 1 s
    try:
        started = time.monotonic()
        with pytest.raises(outbound.DeadlinePassed, match="no answer within 1 s"):
            outbound.post(f"http://127.0.0.1:{drip.port}/hook", b"{}", {}, 1.0, True)
        assert time.monotonic() - started < 3.0
    finally:
        drip.close()
