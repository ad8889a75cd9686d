"""Bulk API 2.0: one ingest job per object for pushes above the connector's threshold, its rows
mapped back to records (successful, failed, unprocessed)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from connectors.base import (
    Outcome,
    Write,
)
from connectors.salesforce.api import GONE
from connectors.salesforce.errors import FieldsNotVisible, hidden_fields_message

log = logging.getLogger(__name__)


class BulkMixin:
    """The connector's Bulk API 2.0 half."""

    def _bulk(
        self,
        sobject: str,
        writes: Sequence[Write],
        create: bool,
        rows: Sequence[tuple[Write, dict[str, Any]]] | None = None,
    ) -> list[Outcome]:
        """One Bulk API 2.0 job (upsert on the key for creates, update by Id otherwise);
        every row's result mapped back to its write."""
        if rows is None:
            rows = [(w, {"Id": w.crm_id, **self._fields(sobject, w.properties)}) for w in writes]
        # A cell left out keeps the record's value, and every row of a job has the same
        # columns: rows are grouped by the fields they set, one job per group (a sync usually
        # writes the same fields everywhere, so one job).
        shapes: dict[tuple[str, ...], list[int]] = {}
        for index, (_, fields) in enumerate(rows):
            shapes.setdefault(tuple(sorted(fields)), []).append(index)
        outcomes: list[Outcome | None] = [None] * len(rows)
        for shape, indexes in shapes.items():
            job_rows = [{c: _csv_value(rows[i][1][c]) for c in shape} for i in indexes]
            results = self._bulk_job(sobject, create, [rows[i][0] for i in indexes], job_rows)
            for position, i in enumerate(indexes):
                outcomes[i] = results[position]
        return outcomes  # type: ignore[return-value]

    def _bulk_job(
        self, sobject: str, create: bool, writes: Sequence[Write], rows: list[dict[str, str]]
    ) -> dict[int, Outcome]:
        key = self._key_field(sobject)

        def run(sf):
            handler = getattr(sf.bulk2, sobject)
            # simple-salesforce waits up to a day for a job; a sync round waits this long,
            # then the job is left to Salesforce and the next round looks again.
            handler._client.DEFAULT_WAIT_TIMEOUT_SECONDS = self.bulk_wait_seconds
            if create:
                jobs = handler.upsert(
                    records=rows, external_id_field=key, wait=self.bulk_poll_seconds
                )
            else:
                jobs = handler.update(records=rows, wait=self.bulk_poll_seconds)
            results = {"successfulRecords": [], "failedRecords": [], "unprocessedRecords": []}
            for job in jobs:
                for kind, found in handler.get_all_ingest_records(job["job_id"]).items():
                    results[kind] += found
            return results

        results = self._call(f"bulk {'upsert' if create else 'update'} {len(rows)} {sobject}", run)
        self.caller.count("bulk_jobs")
        index_of = (
            {w.key: i for i, w in enumerate(writes)}
            if create
            else {w.crm_id[:15]: i for i, w in enumerate(writes)}
        )

        def index(row: dict[str, str]) -> int | None:
            return index_of.get(row.get(key) if create else (row.get("Id") or "")[:15])

        out: dict[int, Outcome] = {}
        for row in results["successfulRecords"]:
            i = index(row)
            if i is not None:
                out[i] = Outcome(writes[i].key, row.get("sf__Id") or writes[i].crm_id)
        for row in results["failedRecords"]:
            i = index(row)
            if i is None:
                continue
            text = row.get("sf__Error") or "failed"
            code = text.split(":", 1)[0]
            if code == "INVALID_FIELD":
                raise FieldsNotVisible(hidden_fields_message(text), 400, code)
            if code == "CANNOT_UPDATE_CONVERTED_LEAD":
                text = code
            elif code == "DUPLICATES_DETECTED":
                text = "DUPLICATES_DETECTED"
            out[i] = Outcome(writes[i].key, writes[i].crm_id, error=text, missing=code in GONE)
        for i, write in enumerate(writes):
            out.setdefault(
                i, Outcome(write.key, write.crm_id, error="not processed by the bulk job")
            )
        return out


def _csv_value(value: Any) -> str:
    """A Bulk API 2.0 CSV cell: ``#N/A`` clears a field (an empty cell leaves it as is)."""
    if value is None:
        return "#N/A"
    if value is True or value is False:
        return "true" if value else "false"
    return str(value)
