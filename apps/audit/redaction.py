"""PHI redaction for logs and audit details.

Patterns cover what DESIGN.md names: names after titles, MRN, SSN, phone, email, dates of birth,
addresses and card numbers. Redaction is deliberately greedy: a false positive costs a word in a
log line, a false negative leaks PHI.
"""

from __future__ import annotations

import functools
import re
from typing import Any

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "[EMAIL]"),
    (re.compile(r"\b\d{3}-\d{2}-\d{4}\b"), "[SSN]"),
    (re.compile(r"\b(?:MRN|mrn|Medical Record(?: Number)?)[:#\s]*[A-Za-z0-9-]{4,}\b"), "[MRN]"),
    (re.compile(r"\b(?:\d[ -]?){13,19}\b"), "[CARD]"),
    (
        re.compile(
            r"\b(?:DOB|D\.O\.B\.|date of birth|born)[:\s]*"
            r"(?:\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4}|[A-Z][a-z]+ \d{1,2},? \d{4})",
            re.IGNORECASE,
        ),
        "[DOB]",
    ),
    (re.compile(r"(?:\+?1[ .-]?)?\(?\b\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b"), "[PHONE]"),
    (
        re.compile(
            r"\b\d{1,6}\s+(?:[A-Z][a-z]+\s){1,4}"
            r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl)\b\.?"
        ),
        "[ADDRESS]",
    ),
    (
        re.compile(r"\b(Mr|Mrs|Ms|Miss|Dr|Prof|Patient)\.?\s+[A-Z][a-zA-Z'-]+(?:\s+[A-Z][a-zA-Z'-]+)?"),
        r"\1 [NAME]",
    ),
]


def redact(text: str) -> str:
    """Return ``text`` with PHI replaced by bracketed placeholders."""
    if len(text) <= _SHORT:
        return _redact_short(text)
    return _redact(text)


def _redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# Audit details repeat the same short values (status, model and error codes) on every event: the
# patterns cost ~10 µs per string, a cache hit well under one.
_SHORT = 64
_redact_short = functools.lru_cache(maxsize=4096)(_redact)


def redact_value(value: Any) -> Any:
    """Redact strings inside nested dicts/lists (audit details)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value
