"""The cyclic garbage collector is held off while a scoring pass runs, and comes back after."""

from __future__ import annotations

import gc
import threading

import pytest

from app.scores import scoring_pass
from app.scores.collector import collector_paused
from app.scores.scoring_pass import preview_definitions, recompute
from scoring.defaults import default_definitions
from tests.helpers.events import NOW, acme_trial


@pytest.fixture(autouse=True)
def _collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_the_collector_is_off_inside_and_back_on_after():
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_it_comes_back_when_the_pass_fails():
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("pass failed")
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off():
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()


def test_overlapping_passes_keep_it_off_until_the_last_one_ends():
    first_in, release = threading.Event(), threading.Event()
    seen = []

    def first():
        with collector_paused():
            first_in.set()
            release.wait(5)

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(5)
    with collector_paused():
        pass
    seen.append(gc.isenabled())  # the first pass still runs
    release.set()
    thread.join(5)
    assert seen == [False]
    assert gc.isenabled()


def test_scoring_passes_and_the_preview_run_with_the_collector_off(
    client, db, tenant_key, monkeypatch
):
    tenant_id, key = tenant_key
    acme_trial(client, key)
    states = []
    score_rows = scoring_pass._score_rows

    def recording(*args, **kwargs):
        states.append(gc.isenabled())
        return score_rows(*args, **kwargs)

    monkeypatch.setattr(scoring_pass, "_score_rows", recording)
    recompute(db, tenant_id, NOW)
    preview_definitions(db, tenant_id, default_definitions(), NOW)
    assert states and not any(states)
    assert gc.isenabled()
