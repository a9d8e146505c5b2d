"""Template filters for readable numbers and short ids (``{% load medai_format %}``): the
formats of ``apps/audit/display.py``, which the admin lists use too."""

from __future__ import annotations

from django import template

from apps.audit import display

register = template.Library()

for _name in ("count", "compact", "ms", "seconds", "percent", "percent_of", "mib", "celsius", "watts", "short_id"):
    register.filter(_name, getattr(display, _name))
register.filter("tps", display.tokens_per_second)
