"""Structured JSON logs with correlation ids, and the one filter that makes a log line safe.

``RedactionFilter`` sits on every handler of ``settings.LOGGING`` (and on uvicorn's and daphne's
own loggers, medai/asgi.py): before any handler formats a record, its message, arguments,
exception and stack text lose

- credentials (apps/audit/credentials.py: tokens, keys, ``?token=``);
- identifiers that reach a log line from requests rather than from notes: every query value of a
  URL (``/admin/accounts/user/?q=smith`` → ``?q=[REDACTED]``; short numbers and booleans, such as
  ``?limit=50``, are kept), usernames (``username: 'alice'``, ``user=alice``: a user name is an
  identifier of its own, and django-axes logs one per failed login) and values of headers that
  name a person (``X-User``, ``X-Patient-Id``, ``From``);
- PHI in the text (apps/audit/redaction.py: names, MRNs, dates of birth, phones, emails,
  addresses, SSNs, card numbers).

Done on the record, not in a formatter, so every handler (a file, syslog, uvicorn's coloured
console) writes the same clean line. The JSON formatter applies the same cleaning again to what it
writes, for a handler someone adds without the filter.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

from apps.audit.context import get_correlation_id
from apps.audit.credentials import REDACTED, CredentialFilter, redact_credentials
from apps.audit.redaction import redact

_QUERY_VALUE = re.compile(r"([?&;][\w.\-\[\]%]{1,64}=)([^&;#\s\"'<>]+)")
_SAFE_VALUE = re.compile(r"\d{1,6}|true|false|asc|desc|json|csv|\[REDACTED\]", re.IGNORECASE)
_USERNAME = re.compile(r"(?i)\b(user(?:name)?|login|account|actor|email|e-mail)(\s*[:=]\s*['\"]?)(?!\[)([^\s'\",;&)]+)")
# a request path echoed by a log line (django.request's "Not Found: /v1/…", the access log): a
# segment that is not a route word, a short number or a UUID is client input (an MRN, a name)
_URL_PATH = re.compile(r"(?<![\w/.])/(?:v1|admin|api|ws)/[^\s?#\"']*")
_SAFE_SEGMENT = re.compile(r"[a-z][a-z0-9_-]{0,39}|\d{1,6}|[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}|[0-9a-f]{32}|")
_PERSON_HEADER = re.compile(
    r"(?im)^((?:x-)?(?:user|username|patient[\w-]*|from|x-forwarded-user|remote-user):[ \t]*)(.+)$"
)


def redact_identifiers(text: str) -> str:
    """Query values, usernames and personal header values of ``text`` replaced by ``[REDACTED]``."""
    if "=" in text:
        text = _QUERY_VALUE.sub(
            lambda m: m.group(0) if _SAFE_VALUE.fullmatch(m.group(2)) else m.group(1) + REDACTED, text
        )
    if "/" in text:
        text = _URL_PATH.sub(
            lambda m: "/".join(s if _SAFE_SEGMENT.fullmatch(s) else REDACTED for s in m.group(0).split("/")), text
        )
    text = _USERNAME.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    if ":" in text:
        text = _PERSON_HEADER.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def redact_log_text(text: str) -> str:
    """What every log line goes through: credentials, request identifiers, then PHI."""
    if not text:
        return text
    return redact(redact_identifiers(redact_credentials(text)))


class RedactionFilter(CredentialFilter):
    """Credentials, request identifiers and PHI out of a record, before any handler sees it."""

    @staticmethod
    def clean(text: str) -> str:
        return redact_log_text(text)


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
            "msg": redact_log_text(record.getMessage()),
        }
        cid = getattr(record, "correlation_id", "")
        if cid:
            payload["correlation_id"] = cid
        if record.exc_text:
            payload["exc"] = redact_log_text(record.exc_text)
        elif record.exc_info:
            payload["exc"] = redact_log_text(self.formatException(record.exc_info))
        return json.dumps(payload, default=str)
