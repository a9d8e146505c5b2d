"""The two Redis scripts of governance: ``ADMIT`` (sweep, rate limit, in-flight cap and quota
reservation in one atomic step, one round trip) and ``SETTLE`` (real usage replaces holds).

Keys (all under ``{MEDAI_CACHE_PREFIX}:gov:``, see store.py):

  lim             hash: the limits mirrored from the database (quotas.publish): ``_v`` (present
                  once loaded), ``o:<org>``/``l:<location>`` → "day_req,day_tok,month_req,month_tok|name"
                  (-1: no limit), ``fo:<org>`` → "1" when that organization fails open,
                  ``k:<api key>`` → "rate,burst,inflight" (a key's overrides, -1: the default)
  leases          zset: hold id → the time its lease ends
  h:<id>          a hold: "H|requests|tokens|day|counter key|..." while held; "E|day|counter key|..."
                  once its lease ended and it was released; "S" once settled (kept a day: settling
                  twice is a no-op)
  c:<scope>:<month> hash: requests and tokens used plus held, this month (``m:r``, ``m:t``) and
                  each day of it (``d20261202:r``, ``d20261202:t``): one key per scope, read with
                  one HMGET and written with one HSET
  b:<kind>:<id>   string "level,time": a token bucket
  f:<credential>  zset: in-flight request id → when its lease ends

Cost: the admission script makes about 20 calls for a request under a quota with three buckets
(TIME, the lease sweep, one HMGET of the limits, 2 per bucket, 4 for the in-flight cap, 3 per
quota scope, 2 for the hold); Redis runs it in tens of microseconds.

A process sends its requests' settles with its next admission (``SETTLE_ADMIT``: one round trip
per request under load) or, when none comes first, all that gathered in one ``SETTLE``; every
script takes one packed argument and ADMIT answers one packed string (redis-py's per-argument
encoding and per-element parsing in Python were a third of the round trip's CPU).

Time is Redis's own (``TIME``): every process agrees on it, whatever their clocks say.
"""

from __future__ import annotations

# Shared by both scripts: split a string, apply a delta to the counters that still exist, release
# the holds whose lease ended.
_COMMON = r"""
local function split(s, sep)
  local out, start = {}, 1
  while true do
    local j = string.find(s, sep, start, true)
    if not j then
      out[#out + 1] = string.sub(s, start)
      return out
    end
    out[#out + 1] = string.sub(s, start, j - 1)
    start = j + 1
  end
end
local function bump(keys, from, day, req, tok)
  for i = from, #keys do
    local k = keys[i]
    if k ~= '' and redis.call('EXISTS', k) == 1 then
      if req ~= 0 then
        redis.call('HINCRBY', k, day .. ':r', req)
        redis.call('HINCRBY', k, 'm:r', req)
      end
      if tok ~= 0 then
        redis.call('HINCRBY', k, day .. ':t', tok)
        redis.call('HINCRBY', k, 'm:t', tok)
      end
    end
  end
end
local function expire_holds(prefix, leases, now, max)
  local due = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, max)
  for _, id in ipairs(due) do
    local hk = prefix .. 'h:' .. id
    local h = redis.call('GET', hk)
    if h and string.sub(h, 1, 2) == 'H|' then
      local parts = split(h, '|')
      bump(parts, 5, parts[4], -tonumber(parts[2]), -tonumber(parts[3]))
      local rest = {}
      for i = 4, #parts do rest[#rest + 1] = parts[i] end
      redis.call('SET', hk, 'E|' .. table.concat(rest, '|'), 'EX', 172800)
    end
    redis.call('ZREM', leases, id)
  end
  return #due
end
"""

# Both scripts take their arguments as one string, the fields joined by ASCII 31 (the unit
# separator: ``store.pack``), split back here into the ARGV the rest reads. redis-py encodes every
# argument of a command one by one, in Python: for the ~30 of an admission that was a third of
# the round trip's CPU on the event loop.
_SEP = "'\\031'"  # Lua's "\031"

# KEYS: 1 lim, 2 leases. ARGV (strings, packed):
#  1 prefix  2 units  3 request count  4 lease seconds  5 day field  6 day end  7 month end
#  8 the key's override field or ''  9 fail-open field or ''
#  10 nb (buckets) then nb × (key, rate, burst, 1 if the key's override applies else 0)
#  then in-flight: key or '', cap, member, lease
#  then ns (quota scopes) then ns × (limits field, counter key)
#  then nh (holds) then nh × (hold id, tokens)
# Returns {'ok', limit, remaining, reset_ms, fail_open, token_limited}
#      or {'rate', limit, remaining, reset_ms, retry_ms, which}
#      or {'inflight', cap, which}
#      or {'quota', name, period, kind, limit, used, window_end, fail_open}
#      or {'reload'}
ADMIT_FN = r"""
local function admit(KEYS, ARGV)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local lim, leases = KEYS[1], KEYS[2]
  local prefix, units, nreq, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local day, day_end, month_end = ARGV[5], ARGV[6], ARGV[7]
  expire_holds(prefix, leases, now, 16)
  local i = 10
  local nb = tonumber(ARGV[i])
  local fi = i + 1 + nb * 4
  local ns = tonumber(ARGV[fi + 4])
  -- every limit this request needs, in one read: loaded?, the key's overrides, fail open, each scope
  local fields = {'_v', ARGV[8] ~= '' and ARGV[8] or '_', ARGV[9] ~= '' and ARGV[9] or '_'}
  for s = 1, ns do fields[#fields + 1] = ARGV[fi + 4 + 2 * s - 1] end
  local got = redis.call('HMGET', lim, unpack(fields))
  if not got[1] then return {'reload'} end
  local ov = got[2] and split(got[2], ',') or nil
  local fail_open = got[3] == '1' and '1' or '0'
  i = i + 1
  local buckets = {}
  local best_limit, best_remaining, best_reset = -1, -1, 0
  for b = 1, nb do
    local key, rate, burst = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    if ARGV[i + 3] == '1' and ov then
      if tonumber(ov[1]) >= 0 then rate = tonumber(ov[1]) end
      if tonumber(ov[2]) >= 0 then burst = tonumber(ov[2]) end
    end
    i = i + 4
    if rate > 0 and burst > 0 then
      local state = redis.call('GET', key)
      local level = burst
      if state then
        local p = split(state, ',')
        level = math.min(burst, tonumber(p[1]) + math.max(0, now - tonumber(p[2])) * rate)
      end
      if level < units then
        local retry = (units - level) / rate
        if units > burst then retry = -1 end
        return {'rate', tostring(burst), tostring(math.floor(level)),
                tostring(math.ceil((burst - level) / rate * 1000)), tostring(math.ceil(retry * 1000)), key}
      end
      local left = level - units
      buckets[#buckets + 1] = {key, left, math.ceil(burst / rate * 1000) + 1000}
      if best_remaining < 0 or left < best_remaining then
        best_limit, best_remaining, best_reset = burst, left, math.ceil((burst - left) / rate * 1000)
      end
    end
  end
  local fkey, fcap, fmember, flease = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], tonumber(ARGV[i + 3])
  i = i + 5  -- past the in-flight arguments and ns
  if ov and tonumber(ov[3]) >= 0 then fcap = tonumber(ov[3]) end
  if fkey ~= '' and fcap > 0 then
    redis.call('ZREMRANGEBYSCORE', fkey, '-inf', now)
    if redis.call('ZCARD', fkey) >= fcap then return {'inflight', tostring(fcap), fkey} end
  else
    fkey = ''
  end
  local nh = tonumber(ARGV[i + ns * 2])
  local total = 0
  for h = 1, nh do total = total + tonumber(ARGV[i + ns * 2 + 2 * h]) end
  local counters, values = {}, {}
  local token_limited = '0'
  local dr, dt = day .. ':r', day .. ':t'
  for s = 1, ns do
    local raw = got[3 + s]
    local ckey = ARGV[i + 1]
    if raw then
      local halves = split(raw, '|')
      local l = split(halves[1], ',')
      local name = halves[2] or ARGV[i]
      local used = redis.call('HMGET', ckey, dr, dt, 'm:r', 'm:t')
      local u = {tonumber(used[1] or '0'), tonumber(used[2] or '0'), tonumber(used[3] or '0'), tonumber(used[4] or '0')}
      local counted = false
      for p = 0, 1 do
        local lr, lt = tonumber(l[1 + 2 * p]), tonumber(l[2 + 2 * p])
        local ur, ut = u[1 + 2 * p], u[2 + 2 * p]
        local period = (p == 0) and 'day' or 'month'
        local wend = (p == 0) and day_end or month_end
        if lr >= 0 and ur + nreq > lr then
          return {'quota', name, period, 'requests', tostring(lr), tostring(ur), wend, fail_open}
        end
        if lt >= 0 then
          token_limited = '1'
          if ut + total > lt then
            return {'quota', name, period, 'tokens', tostring(lt), tostring(ut), wend, fail_open}
          end
        end
        if lr >= 0 or lt >= 0 then counted = true end
      end
      if counted then
        counters[#counters + 1] = ckey
        values[#values + 1] = {u[1] + nreq, u[2] + total, u[3] + nreq, u[4] + total}
      end
    end
    i = i + 2
  end
  i = i + 1
  -- everything fits: take from every bucket, count the request in flight, hold the quota
  for _, b in ipairs(buckets) do
    redis.call('SET', b[1], b[2] .. ',' .. now, 'PX', b[3])
  end
  if fkey ~= '' then
    redis.call('ZADD', fkey, now + flease, fmember)
    redis.call('EXPIRE', fkey, math.ceil(flease) + 60)
  end
  for c = 1, #counters do
    local v = values[c]
    redis.call('HSET', counters[c], dr, v[1], dt, v[2], 'm:r', v[3], 'm:t', v[4])
    redis.call('EXPIREAT', counters[c], math.floor(tonumber(month_end)) + 86400)
  end
  if #counters > 0 then
    local keys = day .. '|' .. table.concat(counters, '|')
    local per = nreq / nh
    for h = 1, nh do
      local id, tok = ARGV[i], ARGV[i + 1]
      i = i + 2
      redis.call('SET', prefix .. 'h:' .. id, 'H|' .. per .. '|' .. tok .. '|' .. keys, 'EX', math.ceil(lease) + 172800)
      redis.call('ZADD', leases, now + lease, id)
    end
  end
  return {'ok', tostring(best_limit), tostring(math.floor(math.max(best_remaining, 0))), tostring(best_reset),
          fail_open, token_limited}
end
"""

# KEYS: 1 leases. ARGV (packed): 1 prefix, 2 n, then n × (hold id, requests, tokens, in-flight key or '',
# in-flight member, day field, nkeys, fallback counter key × nkeys). Returns how many it settled.
SETTLE_FN = r"""
local function settle(KEYS, ARGV)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local leases, prefix = KEYS[1], ARGV[1]
  expire_holds(prefix, leases, now, 16)
  local n = tonumber(ARGV[2])
  local i = 3
  local settled = 0
  for e = 1, n do
    local id, req, tok, fkey, fmember, day, nk = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], tonumber(ARGV[i + 6])
    local fallback = {}
    for k = 1, nk do fallback[k] = ARGV[i + 6 + k] end
    i = i + 7 + nk
    if fkey ~= '' then redis.call('ZREM', fkey, fmember) end
    if id ~= '' then
      local hk = prefix .. 'h:' .. id
      local h = redis.call('GET', hk)
      if h ~= 'S' then
        if h and string.sub(h, 1, 2) == 'H|' then
          local parts = split(h, '|')
          bump(parts, 5, parts[4], req - tonumber(parts[2]), tok - tonumber(parts[3]))
          redis.call('ZREM', leases, id)
          redis.call('SET', hk, 'S', 'EX', 86400)
        elseif h then
          local parts = split(h, '|')
          bump(parts, 3, parts[2], req, tok)
          redis.call('SET', hk, 'S', 'EX', 86400)
        else
          bump(fallback, 1, day, req, tok)  -- never held (no quota applied) or lost with Redis
        end
        settled = settled + 1
      end
    end
  end
  return settled
end
"""

# ADMIT's answer goes back as one string, its fields joined as the arguments are (one bulk reply
# for redis-py to parse, not an array of them).
ADMIT = _COMMON + ADMIT_FN + f"return table.concat(admit(KEYS, split(ARGV[1], {_SEP})), {_SEP})\n"
SETTLE = _COMMON + SETTLE_FN + f"return settle(KEYS, split(ARGV[1], {_SEP}))\n"

# The settles waiting in a process (requests answered since its last script) ride on its next
# admission: SETTLE's work first, then ADMIT's, in one atomic script and one round trip.
# KEYS: ADMIT's (1 lim, 2 leases). ARGV: 1 SETTLE's packed ARGV, 2 ADMIT's. Answers as ADMIT.
SETTLE_ADMIT = (
    _COMMON
    + SETTLE_FN
    + ADMIT_FN
    + f"settle({{KEYS[2]}}, split(ARGV[1], {_SEP}))\n"
    + f"return table.concat(admit(KEYS, split(ARGV[2], {_SEP})), {_SEP})\n"
)
