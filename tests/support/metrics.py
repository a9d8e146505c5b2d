"""Reading Prometheus exposition text in tests (with prometheus_client's own parser)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, by (sample name, labels). Raises if the text does not parse."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    """The sample ``name{labels}`` (exact labels), 0.0 when absent (a counter never incremented)."""
    return samples(text).get((name, frozenset(labels.items())), 0.0)


def local(name: str, **labels: str) -> float:
    """The sample as this process's /metrics shows it now (every process's, in multiprocess mode)."""
    from medai.metrics import exposition

    return value(exposition().decode(), name, **labels)
