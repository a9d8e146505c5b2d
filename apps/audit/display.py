"""How numbers and ids read in the admin of every app and on its dashboard: units, sensible
rounding, short ids. Here because apps/audit is the lowest layer: every app may import it.

Every function takes None (no value) and answers an em dash. A number and its unit are joined by
a no-break space, so a narrow column never breaks "12 ms" over two lines.
"""

from __future__ import annotations

from typing import Any

from django.utils.html import format_html
from django.utils.safestring import SafeString

NONE = "—"
NBSP = "\u00a0"
SHORT_ID = 8


def count(value: int | float | None) -> str:
    """12345 → "12,345"."""
    return NONE if value is None else f"{round(value):,}"


def compact(value: int | float | None) -> str:
    """A count in three significant figures at most: 987, 4.3k, 12.3k, 103k, 4.56M."""
    if value is None:
        return NONE
    v = float(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= limit:
            scaled = v / limit
            digits = 2 if abs(scaled) < 10 else 1 if abs(scaled) < 100 else 0
            return f"{scaled:.{digits}f}".rstrip("0").rstrip(".") + suffix
    return f"{round(v):,}"


def ms(value: float | None) -> str:
    """A duration given in milliseconds: "0.4 ms", "12 ms", "1.25 s", "42.0 s", "3.5 min"."""
    if value is None:
        return NONE
    v = float(value)
    if v < 10:
        return f"{v:.1f}{NBSP}ms"
    if v < 1000:
        return f"{v:.0f}{NBSP}ms"
    if v < 10_000:
        return f"{v / 1000:.2f}{NBSP}s"
    if v < 60_000:
        return f"{v / 1000:.1f}{NBSP}s"
    return f"{v / 60_000:.1f}{NBSP}min"


def seconds(value: float | None) -> str:
    return NONE if value is None else ms(float(value) * 1000)


def percent(share: float | None) -> str:
    """A share (0–1) as a percentage: "0 %", "<0.1 %", "2.5 %", "42 %"."""
    if share is None:
        return NONE
    p = 100 * float(share)
    if p == 0:
        return f"0{NBSP}%"
    if p < 0.1:
        return f"<0.1{NBSP}%"
    return f"{p:.1f}{NBSP}%" if p < 10 else f"{p:.0f}{NBSP}%"


def percent_of(value: float | None) -> str:
    """A value already in percent (0–100): "7.5 %", "64 %"."""
    return NONE if value is None else percent(float(value) / 100)


def tokens_per_second(value: float | None) -> str:
    if value is None:
        return NONE
    return f"{value:.1f}{NBSP}tok/s" if value < 100 else f"{value:,.0f}{NBSP}tok/s"


def mib(value: float | None) -> str:
    """Memory given in MiB: "512 MiB", "12.3 GiB"."""
    if value is None:
        return NONE
    return f"{value:.0f}{NBSP}MiB" if value < 1024 else f"{value / 1024:.1f}{NBSP}GiB"


def celsius(value: float | None) -> str:
    return NONE if value is None else f"{value:.0f}{NBSP}°C"


def watts(value: float | None) -> str:
    return NONE if value is None else f"{value:.0f}{NBSP}W"


def short_id(value: Any) -> SafeString | str:
    """A long id (a UUID, a correlation id) as its first 8 characters, the whole id in the
    ``title`` (a tooltip) and kept whole for copy and search: lists that fit the screen."""
    if value is None or value == "":
        return NONE
    full = str(value)
    if len(full) <= SHORT_ID + 1:
        return full
    return format_html('<span class="medai-id" title="{}">{}…</span>', full, full[:SHORT_ID])


class ReadOnlyAdmin:
    """A ModelAdmin mixin (first in the bases) for records nobody edits in admin: what the system
    wrote (audit events, quality weeks, feedback) is read, filtered and exported, never added,
    changed or deleted there."""

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False
