"""A circuit breaker per backend (model endpoint), shared by every process through Redis.

CLOSED: requests flow; consecutive failures are counted. After ``MEDAI_CIRCUIT_FAILURES`` (5)
in a row the circuit OPENS: the backend gets no traffic. After ``MEDAI_CIRCUIT_RESET_SECONDS``
(30) -- or sooner, when the monitor's health check sees the server answer again -- it is
HALF_OPEN: exactly one request (elected across processes with ``SET NX``) is let through as a
trial; success closes the circuit, failure opens it again for another period.

Transitions are Lua scripts (atomic across processes); the checks on the request path read this
process's view (``shared.view()``), so a closed circuit costs no round trip.
"""

from __future__ import annotations

import time

from django.conf import settings
from redis.commands.core import Script

from apps.gpu import shared

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

_FAILURE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local state, failures, opened = 'closed', 0, 0
if raw then
  local i = 0
  for part in string.gmatch(raw, '[^,]+') do
    i = i + 1
    if i == 1 then state = part elseif i == 2 then failures = tonumber(part) else opened = tonumber(part) end
  end
end
failures = failures + 1
-- a failed trial (half-open, or open past its period) re-opens it for another period
local expired = state == 'open' and tonumber(ARGV[3]) - opened >= tonumber(ARGV[4])
if state == 'half_open' or expired or (state == 'closed' and failures >= tonumber(ARGV[2])) then
  state = 'open'
  opened = tonumber(ARGV[3])
end
local value = state .. ',' .. failures .. ',' .. opened
redis.call('HSET', KEYS[1], ARGV[1], value)
return value
"""

_HALF_OPEN = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw and string.sub(raw, 1, 5) == 'open,' then
  local value = 'half_open' .. string.sub(raw, 5)
  redis.call('HSET', KEYS[1], ARGV[1], value)
  return value
end
return raw
"""

_scripts: dict[str, Script] = {}


def _script(name: str, source: str) -> Script:
    script = _scripts.get(name)
    if script is None:
        script = _scripts[name] = shared.client().register_script(source)
    return script


def _set_local(endpoint_id: int, value: bytes | str | None) -> None:
    v = shared._view
    if v is None:
        return
    if value is None:
        v.circuits.pop(endpoint_id, None)
    else:
        v.circuits[endpoint_id] = shared._decode_circuit(value if isinstance(value, bytes) else value.encode())


def state_of(endpoint_id: int) -> tuple[str, int, float]:
    """(state, consecutive failures, opened_at) as this process sees it."""
    return shared.view().circuits.get(endpoint_id, (CLOSED, 0, 0.0))


def is_open(endpoint_id: int) -> bool:
    """True while the circuit refuses traffic (OPEN and its reset period has not passed)."""
    state, _, opened_at = state_of(endpoint_id)
    if state == CLOSED:
        return False
    if state == OPEN and time.time() - opened_at < settings.MEDAI_CIRCUIT_RESET_SECONDS:
        return True
    return False


def allow(endpoint_id: int) -> bool:
    """May a request go to this backend now? For a HALF_OPEN circuit, only the one elected trial."""
    state, _, opened_at = state_of(endpoint_id)
    if state == CLOSED:
        return True
    if state == OPEN and time.time() - opened_at < settings.MEDAI_CIRCUIT_RESET_SECONDS:
        return False
    # Half-open: one trial at a time across every process; the lease outlives a crashed trial.
    return bool(
        shared.client().set(
            shared.key(f"trial:{endpoint_id}"), "1", nx=True, ex=int(settings.MEDAI_CIRCUIT_RESET_SECONDS)
        )
    )


def record_failure(endpoint_id: int) -> str:
    """Count a failure; returns the circuit's state after it."""
    value = _script("failure", _FAILURE)(
        keys=[shared.key("circuits")],
        args=[
            str(endpoint_id),
            settings.MEDAI_CIRCUIT_FAILURES,
            f"{time.time():.3f}",
            settings.MEDAI_CIRCUIT_RESET_SECONDS,
        ],
    )
    _set_local(endpoint_id, value)
    state = value.decode().split(",")[0]
    if state == OPEN:
        shared.client().delete(shared.key(f"trial:{endpoint_id}"))
    return state


def record_success(endpoint_id: int) -> None:
    """Close the circuit. Free when it is already closed in this process's view."""
    if state_of(endpoint_id) == (CLOSED, 0, 0.0):
        return
    pipe = shared.client().pipeline(transaction=False)
    pipe.hdel(shared.key("circuits"), str(endpoint_id))
    pipe.delete(shared.key(f"trial:{endpoint_id}"))
    pipe.execute()
    _set_local(endpoint_id, None)


def end_trial(endpoint_id: int) -> None:
    """The request let through as a half-open trial ended without telling anything about the
    backend (the request's own fault): let the next request be the trial. Free when closed."""
    if state_of(endpoint_id)[0] == CLOSED:
        return
    shared.client().delete(shared.key(f"trial:{endpoint_id}"))


def half_open(endpoint_id: int) -> None:
    """The monitor saw the server healthy again: let a trial request through now."""
    value = _script("half_open", _HALF_OPEN)(keys=[shared.key("circuits")], args=[str(endpoint_id)])
    if value:
        _set_local(endpoint_id, value)


def reset(endpoint_id: int) -> None:
    """Close the circuit (admin action)."""
    shared.client().hdel(shared.key("circuits"), str(endpoint_id))
    shared.client().delete(shared.key(f"trial:{endpoint_id}"))
    _set_local(endpoint_id, None)
