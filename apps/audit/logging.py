"""Structured JSON logs with correlation ids; every message passes through PHI redaction and
credential redaction (apps/audit/credentials.py)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from apps.audit.context import get_correlation_id
from apps.audit.credentials import redact_credentials
from apps.audit.redaction import redact


class CorrelationFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = get_correlation_id()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(redact_credentials(record.getMessage())),
        }
        cid = getattr(record, "correlation_id", "")
        if cid:
            payload["correlation_id"] = cid
        if record.exc_text:
            payload["exc"] = redact(redact_credentials(record.exc_text))
        elif record.exc_info:
            payload["exc"] = redact(redact_credentials(self.formatException(record.exc_info)))
        return json.dumps(payload, default=str)
