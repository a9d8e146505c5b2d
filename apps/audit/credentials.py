"""No credential in any log line: redaction of tokens, keys and passwords in log text.

Credentials reach log lines through URLs above all: a websocket opened with ``?token=<JWT>`` is
logged by uvicorn with its query string (its access log and its websocket lines), by Django on a
4xx/5xx, and by anything that logs a URL or an exception mentioning one. So two layers:

- query parameters that carry credentials (``token=``, ``access_token=``, ``api_key=``,
  ``password=``…) keep their name and lose their value;
- the credentials medai issues are recognised wherever they appear (a JWT, ``eyJ…``.``…``.``…``;
  an API key, ``mk_<8 hex>_<secret>``; a ``Bearer <token>`` header value), in a path, a message
  or an exception's text.

``CredentialFilter`` applies both to a log record's message, arguments, exception and stack text
before any handler formats it. medai's JSON formatter (apps/audit/logging.py) runs it too, and
medai/asgi.py installs it on uvicorn's own loggers, whose records never reach medai's handler.
"""

from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "[REDACTED]"

# Query parameter names whose value is a credential (case-insensitive; "-" and "_" alike).
SECRET_PARAMS = (
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "auth_token",
    "api_key",
    "apikey",
    "key",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "authorization",
    "auth",
    "jwt",
    "signature",
    "sig",
)

_NAMES = "|".join(re.escape(p).replace("_", "[-_]") for p in SECRET_PARAMS)
_PARAM = re.compile(r"(?i)([?&;]|^)((?:" + _NAMES + r")=)[^&;#\s\"'<>]*", re.MULTILINE)
# A JWT: three base64url parts, the first two JSON objects ("eyJ" is base64 for '{"').
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
# medai's API keys (apps.accounts: ApiKey.PREFIX "mk_", 8 hex, "_", the secret).
_API_KEY = re.compile(r"mk_[0-9a-f]{8}_[A-Za-z0-9_-]+")
_BEARER = re.compile(r"(?i)\b(bearer)(\s+|,\s*)(?!\[REDACTED\])[A-Za-z0-9._~+/=-]{8,}")


def redact_credentials(text: str) -> str:
    """``text`` with every credential it carries replaced by ``[REDACTED]``."""
    if not text:
        return text
    text = _PARAM.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    text = _JWT.sub(REDACTED, text)
    text = _API_KEY.sub(REDACTED, text)
    return _BEARER.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)


_formatter = logging.Formatter()


class CredentialFilter(logging.Filter):
    """Redacts credentials in the record itself, so every handler and formatter sees it clean.
    ``clean`` is what is applied to each piece of text (apps/audit/logging.py's ``RedactionFilter``
    adds PHI to it)."""

    @staticmethod
    def clean(text: str) -> str:
        return redact_credentials(text)

    def _redact_arg(self, value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float)):
            return value  # kept as they are: formatters may need the type (uvicorn's status code)
        text = value if isinstance(value, str) else str(value)
        clean = self.clean(text)
        return value if clean == text else clean

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_medai_redacted", None) is type(self):
            return True  # a logger's filter and its handler's: the work is done once
        # Arguments one by one, so a formatter that reads them (uvicorn's access formatter) still can.
        if isinstance(record.args, tuple):
            record.args = tuple(self._redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: self._redact_arg(v) for k, v in record.args.items()}
        template = record.msg if isinstance(record.msg, str) else self._redact_arg(record.msg)
        clean = self.clean(template) if isinstance(template, str) else template
        if clean != record.msg:
            if record.args and isinstance(record.msg, str):
                # the secret sits in the template itself ("...?token=%s"): redacting it there would
                # break the placeholders, so the whole message is formatted, then redacted
                record.msg, record.args = self.clean(record.getMessage()), None
            else:
                record.msg = clean
        if record.exc_info and not record.exc_text:
            record.exc_text = _formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.clean(record.exc_text)
        if record.stack_info:
            record.stack_info = self.clean(record.stack_info)
        setattr(record, "_medai_redacted", type(self))  # noqa: B010 - LogRecord has no such attribute declared
        return True


def install(*logger_names: str, filter_class: type[CredentialFilter] = CredentialFilter) -> None:
    """Add the filter to these loggers (idempotent): for loggers with handlers of their own."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(type(f) is filter_class for f in logger.filters):
            logger.addFilter(filter_class())
