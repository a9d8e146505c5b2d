"""Health checks of the model backends, run by the monitor every ``MEDAI_HEALTH_INTERVAL``.

The results go into the shared GPU state (``shared.mark_health``), where routing skips a backend
that failed its last check, and a recovered backend's open circuit is let try a request at once
(half-open). The monitor is handed this function (apps/gpu/inventory.py): checking a backend is
knowing how each kind of server answers, which is inference's.
"""

from __future__ import annotations

import asyncio

import httpx

from apps.gpu import circuit, shared
from apps.gpu.metrics import record_health_check
from apps.inference import router
from apps.inference.router import EndpointInfo


async def _check_one(client: httpx.AsyncClient, ep: EndpointInfo) -> tuple[bool, str]:
    """llama.cpp and vLLM answer ``/health`` at the server root; others are asked ``/v1/models``."""
    headers = {"Authorization": f"Bearer {ep.api_key}"} if ep.api_key else {}
    url = ep.server_root + "/health" if ep.kind in ("llamacpp", "vllm") else ep.base_url.rstrip("/") + "/models"
    try:
        response = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__} on {url}"
    if response.status_code == 200:
        return True, "ok"
    return False, f"HTTP {response.status_code} on {url}"


async def _check_all(endpoints: list[EndpointInfo]) -> dict[int, tuple[bool, str]]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(3.0, connect=2.0)) as client:
        # One check per server: several models served by one server share its answer.
        by_target: dict[tuple[str, str], list[EndpointInfo]] = {}
        for ep in endpoints:
            target = ep.server_root if ep.kind in ("llamacpp", "vllm") else ep.base_url
            by_target.setdefault((ep.kind, target), []).append(ep)
        groups = list(by_target.values())
        results = await asyncio.gather(*(_check_one(client, group[0]) for group in groups))
    return {ep.id: result for group, result in zip(groups, results, strict=True) for ep in group}


def check_health() -> dict[int, tuple[bool, str]]:
    """Health-check every enabled model endpoint; share the results; let a recovered backend's
    open circuit try a request at once (half-open)."""
    endpoints = [ep for ep in router.snapshot().models.values() if ep.enabled]
    if not endpoints:
        return {}
    results = asyncio.run(_check_all(endpoints))
    names = {ep.id: ep.name for ep in endpoints}
    for endpoint_id, (ok, detail) in results.items():
        record_health_check(names[endpoint_id], ok)
        shared.mark_health(endpoint_id, ok, detail)
        if ok and circuit.state_of(endpoint_id)[0] == circuit.OPEN:
            circuit.half_open(endpoint_id)
    return results
