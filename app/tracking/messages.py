"""What the tracking edge hands to ingestion: validated messages and the rejections of the
invalid ones (typed values, so nothing past the edge validates again)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Message:
    """One validated message, with the skew-corrected time it happened."""

    type: str
    message_id: str
    user_id: str | None
    anonymous_id: str | None
    timestamp: dt.datetime
    # track: the event; page/screen: the name; else None.
    name: str | None
    # group: the groupId; track/page/screen: context.groupId or properties.groupId.
    group_id: str | None
    # alias: the id being merged away.
    previous_id: str | None
    traits: dict[str, Any]
    properties: dict[str, Any]
    # What is stored as the raw event: the message with the batch context merged in.
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    message_id: str | None
    errors: dict[str, Any]
    excerpt: str

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "messageId": self.message_id, "errors": self.errors}
