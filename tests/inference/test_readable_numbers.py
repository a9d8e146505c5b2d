"""Numbers read as an IT lead expects them, in the admin lists and on the dashboard: units, sensible
rounding, no break between a number and its unit, short ids with the whole id in a tooltip; and
the dashboard's chart geometry."""

from __future__ import annotations

import uuid

import pytest

from apps.audit import display
from apps.inference.dashboard import charts

NB = "\u00a0"


def test_durations_counts_shares_and_units():
    assert [display.ms(v) for v in (None, 0.42, 12.4, 999.6, 1250, 42_040, 210_000)] == [
        "—",
        f"0.4{NB}ms",
        f"12{NB}ms",
        f"1000{NB}ms",
        f"1.25{NB}s",
        f"42.0{NB}s",
        f"3.5{NB}min",
    ]
    assert display.seconds(1.5) == f"1.50{NB}s"
    assert [display.percent(v) for v in (None, 0, 0.0004, 0.025, 0.4237, 1)] == [
        "—",
        f"0{NB}%",
        f"<0.1{NB}%",
        f"2.5{NB}%",
        f"42{NB}%",
        f"100{NB}%",
    ]
    assert display.percent_of(37.46) == f"37{NB}%"
    assert [display.count(v) for v in (None, 7, 12_345)] == ["—", "7", "12,345"]
    assert [display.compact(v) for v in (987, 4300, 12_340, 103_300, 4_560_000)] == [
        "987",
        "4.3k",
        "12.3k",
        "103k",
        "4.56M",
    ]
    assert (
        display.tokens_per_second(45.25) == f"45.2{NB}tok/s" and display.tokens_per_second(1234.5) == f"1,234{NB}tok/s"
    )
    assert display.mib(512) == f"512{NB}MiB" and display.mib(30000) == f"29.3{NB}GiB"
    assert display.celsius(64.4) == f"64{NB}°C" and display.watts(None) == "—"


def test_a_uuid_shows_its_first_8_characters_and_keeps_the_whole_in_its_title():
    value = uuid.UUID("3f2b8c1e-9d4a-4c7e-8b1a-2e6f0a9c5d71")
    html = display.short_id(value)
    assert html == f'<span class="medai-id" title="{value}">3f2b8c1e…</span>'
    assert display.short_id("abc") == "abc" and display.short_id(None) == "—"
    assert "&lt;" in display.short_id("<script>alert(1)</script>")  # escaped


def test_chart_geometry():
    assert [charts.nice_max(v) for v in (0, 0.3, 6, 7, 22, 130, 9_999)] == [
        1,
        pytest.approx(0.3),
        6,
        8,
        25,
        150,
        10_000,
    ]
    chart = charts.columns([0, 5, 10], ["a", "b", "c"], width=300, height=100, gap=0)
    assert [(b["x"], b["y"], b["w"], b["h"], b["label"]) for b in chart["bars"]] == [
        (0.0, 100.0, 100.0, 0.0, "a"),
        (100.0, 50.0, 100.0, 50.0, "b"),
        (200.0, 0.0, 100.0, 100.0, "c"),
    ]
    assert charts.columns([1, 1000], height=100)["bars"][0]["h"] == 1.0  # a small value still shows
    line = charts.spark([0, 50, 100], width=100, height=24)
    assert line["points"] == "0.0,22.0 50.0,12.0 100.0,2.0" and line["last"] == 100
    assert charts.spark([])["points"] == "" and charts.percent(1.7) == 100.0 and charts.percent(None) == 0.0
