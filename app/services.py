"""What request handlers, jobs and CLI commands share: settings, the database, the token cipher
and the clock, built once per app by the factory and read with ``services()``.

Blueprints and jobs import this module, never the package ``__init__`` (which imports them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import current_app

from app.config import Settings
from app.db import Database
from app.models import utcnow
from app.security import TokenCipher


@dataclass
class Services:
    """What request handlers, jobs and CLI commands need, built once per app."""

    settings: Settings
    db: Database
    token_cipher: TokenCipher
    # Injected so that tests control time; everything that stamps "now" asks this.
    clock: Callable[[], dt.datetime] = field(default=utcnow)


def services() -> Services:
    return current_app.extensions["pql"]
