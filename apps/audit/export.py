"""The audit trail as CSV, streamed: a year of events must not be built in memory first.

Cells that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, tab or
carriage return) are prefixed with ``'``: an attacker-chosen user agent or username must not
become a formula on the compliance officer's machine."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator

from django.db.models import QuerySet

from apps.audit.models import AuditEvent

COLUMNS = list(AuditEvent.RECORD_FIELDS)
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


class _Echo:
    def write(self, value: str) -> str:
        return value


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    elif hasattr(value, "isoformat"):
        text = value.isoformat()
    else:
        text = str(value)
    return "'" + text if text.startswith(_FORMULA) else text


def csv_rows(events: QuerySet[AuditEvent], chunk_size: int = 2000) -> Iterator[str]:
    """The header, then one CSV line per event, in seq order."""
    writer = csv.writer(_Echo())
    yield writer.writerow(COLUMNS)
    for event in events.order_by("seq").iterator(chunk_size=chunk_size):
        yield writer.writerow([_cell(getattr(event, c)) for c in COLUMNS])
