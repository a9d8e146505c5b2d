"""Geometry of the dashboard's inline SVG charts, computed server-side: the templates only draw it.

No charting library and no script: a chart is an ``<svg>`` with rects and a polyline, whose sizes
are attributes (the CSP allows no inline style). Numbers are rounded to 0.1 of a viewBox unit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def _r(x: float) -> float:
    return round(x, 1)


def nice_max(value: float) -> float:
    """The smallest 1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 × 10ⁿ at least ``value`` (1 for nothing): a
    readable axis top with little headroom."""
    if value <= 0:
        return 1
    step = 10.0 ** math.floor(math.log10(value))
    for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * step >= value:
            return m * step
    return 10 * step


def columns(
    values: Sequence[float],
    labels: Sequence[str] = (),
    *,
    width: float = 480,
    height: float = 120,
    gap: float = 2,
) -> dict[str, Any]:
    """A column chart of ``values`` left to right in a ``width`` × ``height`` viewBox: each
    column's ``x, y, w, h`` (at least 1 unit tall for a value above 0, so that it shows) and
    ``label``, the axis top (``max``) and where the gridline at half of it lies."""
    top = nice_max(max(values, default=0))
    n = max(len(values), 1)
    slot = width / n
    bars = []
    for i, v in enumerate(values):
        h = 0.0 if v <= 0 else max(height * v / top, 1.0)
        label = labels[i] if i < len(labels) else ""
        x, w = _r(i * slot + gap / 2), _r(max(slot - gap, 1))
        bars.append({"x": x, "y": _r(height - h), "w": w, "h": _r(h), "value": v, "label": label})
    return {"bars": bars, "max": top, "width": width, "height": height, "mid_y": _r(height / 2)}


def spark(
    values: Sequence[float], *, width: float = 120, height: float = 28, floor: float | None = 0
) -> dict[str, Any]:
    """A sparkline: the polyline's ``points`` across a ``width`` × ``height`` viewBox (the lowest of
    ``floor`` and the values at the bottom, the highest at the top), its last point and the range."""
    if not values:
        return {"points": "", "width": width, "height": height, "last": None, "low": None, "high": None}
    low = min(values) if floor is None else min(floor, min(values))
    high = max(values)
    span = (high - low) or 1.0
    step = width / max(len(values) - 1, 1)
    pts = [(_r(i * step), _r(height - 2 - (height - 4) * (v - low) / span)) for i, v in enumerate(values)]
    if len(pts) == 1:
        pts.append((width, pts[0][1]))
    return {
        "points": " ".join(f"{x},{y}" for x, y in pts),
        "width": width,
        "height": height,
        "last_x": pts[-1][0],
        "last_y": pts[-1][1],
        "last": values[-1],
        "low": min(values),
        "high": high,
    }


def percent(share: float | None) -> float:
    """A share (0–1, None for none) as the percentage width of a bar, clamped to 0–100."""
    if share is None:
        return 0.0
    return _r(min(max(share * 100, 0.0), 100.0))
