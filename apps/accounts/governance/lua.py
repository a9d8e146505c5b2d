"""The two Redis scripts of governance: ``ADMIT`` (sweep, rate limit, in-flight cap and quota
reservation in one atomic step, one round trip) and ``SETTLE`` (real usage replaces holds).

Keys (all under ``{MEDAI_CACHE_PREFIX}:gov:``, see store.py):

  lim             hash: the limits mirrored from the database (quotas.publish): ``_v`` (present
                  once loaded), ``o:<org>``/``l:<location>`` → "day_req,day_tok,month_req,month_tok|name"
                  (-1: no limit), ``fo:<org>`` → "1" when that organization fails open,
                  ``k:<api key>`` → "rate,burst,inflight" (a key's overrides, -1: the default)
  leases          zset: hold id → the time its lease ends
  h:<id>          a hold: "H|requests|tokens|counter key|..." while held; "E|counter key|..." once
                  its lease ended and it was released; "S" once settled (kept a day: settling twice
                  is a no-op)
  c:<scope>:<win> hash {r, t}: requests and tokens used plus held in a window (d20261202, m202612)
  b:<kind>:<id>   hash {v, t}: a token bucket's level and when it was computed
  f:<credential>  zset: in-flight request id → when its lease ends

Time is Redis's own (``TIME``): every process agrees on it, whatever their clocks say.
"""

from __future__ import annotations

# Shared by both scripts: release a hold (lease ended) or apply a delta to counters that still exist.
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
local function bump(keys, from, req, tok)
  for i = from, #keys do
    local k = keys[i]
    if k ~= '' and redis.call('EXISTS', k) == 1 then
      if req ~= 0 then redis.call('HINCRBY', k, 'r', req) end
      if tok ~= 0 then redis.call('HINCRBY', k, 't', tok) end
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
      bump(parts, 4, -tonumber(parts[2]), -tonumber(parts[3]))
      local rest = {}
      for i = 4, #parts do rest[#rest + 1] = parts[i] end
      redis.call('SET', hk, 'E|' .. table.concat(rest, '|'), 'EX', 172800)
    end
    redis.call('ZREM', leases, id)
  end
  return #due
end
"""

# KEYS: 1 lim, 2 leases. ARGV (strings):
#  1 prefix  2 units  3 request count  4 lease seconds
#  5 nb (buckets) then nb × (key, rate, burst, override field or '')
#  then in-flight: key or '', cap, member, lease, override field or ''
#  then ns (quota scopes) then ns × (field, day counter key, day end, month counter key, month end)
#  then nh (holds) then nh × (hold id, tokens)
#  then fail-open field or ''
# Returns {'ok', limit, remaining, reset_ms, fail_open, token_limited}
#      or {'rate', limit, remaining, reset_ms, retry_ms, which}
#      or {'inflight', cap, which}
#      or {'quota', name, period, kind, limit, used, window_end, fail_open}
#      or {'reload'}
ADMIT = (
    _COMMON
    + r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lim, leases = KEYS[1], KEYS[2]
local prefix = ARGV[1]
expire_holds(prefix, leases, now, 16)
if redis.call('HEXISTS', lim, '_v') == 0 then return {'reload'} end
local units = tonumber(ARGV[2])
local nreq = tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
local i = 5
local nb = tonumber(ARGV[i]); i = i + 1
local buckets = {}
local best_limit, best_remaining, best_reset = -1, -1, 0
for b = 1, nb do
  local key, rate, burst, ov = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3]
  i = i + 4
  if ov ~= '' then
    local o = redis.call('HGET', lim, ov)
    if o then
      local p = split(o, ',')
      if tonumber(p[1]) >= 0 then rate = tonumber(p[1]) end
      if tonumber(p[2]) >= 0 then burst = tonumber(p[2]) end
    end
  end
  if rate > 0 and burst > 0 then
    local state = redis.call('HMGET', key, 'v', 't')
    local level = burst
    if state[1] then
      level = math.min(burst, tonumber(state[1]) + math.max(0, now - tonumber(state[2])) * rate)
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
local fkey, fcap, fmember, flease, fov = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], tonumber(ARGV[i + 3]), ARGV[i + 4]
i = i + 5
if fkey ~= '' then
  if fov ~= '' then
    local o = redis.call('HGET', lim, fov)
    if o then
      local p = split(o, ',')
      if tonumber(p[3]) >= 0 then fcap = tonumber(p[3]) end
    end
  end
  if fcap > 0 then
    redis.call('ZREMRANGEBYSCORE', fkey, '-inf', now)
    if redis.call('ZCARD', fkey) >= fcap then return {'inflight', tostring(fcap), fkey} end
  else
    fkey = ''
  end
end
local ns = tonumber(ARGV[i]); i = i + 1
local nh = tonumber(ARGV[i + ns * 5])
local total = 0
for h = 1, nh do total = total + tonumber(ARGV[i + ns * 5 + 2 * h]) end
local fo_field = ARGV[i + ns * 5 + 1 + 2 * nh]
local fail_open = '0'
if fo_field ~= '' and redis.call('HGET', lim, fo_field) == '1' then fail_open = '1' end
local counters, ends = {}, {}
local token_limited = '0'
for s = 1, ns do
  local field = ARGV[i]
  local raw = redis.call('HGET', lim, field)
  if raw then
    local halves = split(raw, '|')
    local l = split(halves[1], ',')
    local name = halves[2] or field
    for p = 0, 1 do
      local ckey, wend = ARGV[i + 1 + 2 * p], ARGV[i + 2 + 2 * p]
      local lr, lt = tonumber(l[1 + 2 * p]), tonumber(l[2 + 2 * p])
      if lr >= 0 or lt >= 0 then
        local used = redis.call('HMGET', ckey, 'r', 't')
        local ur, ut = tonumber(used[1] or '0'), tonumber(used[2] or '0')
        local period = (p == 0) and 'day' or 'month'
        if lr >= 0 and ur + nreq > lr then
          return {'quota', name, period, 'requests', tostring(lr), tostring(ur), wend, fail_open}
        end
        if lt >= 0 then
          token_limited = '1'
          if ut + total > lt then
            return {'quota', name, period, 'tokens', tostring(lt), tostring(ut), wend, fail_open}
          end
        end
        counters[#counters + 1] = ckey
        ends[#ends + 1] = wend
      end
    end
  end
  i = i + 5
end
i = i + 1
-- everything fits: take from every bucket, count the request in flight, hold the quota
for _, b in ipairs(buckets) do
  redis.call('HSET', b[1], 'v', b[2], 't', now)
  redis.call('PEXPIRE', b[1], b[3])
end
if fkey ~= '' then
  redis.call('ZADD', fkey, now + flease, fmember)
  redis.call('EXPIRE', fkey, math.ceil(flease) + 60)
end
for c = 1, #counters do
  redis.call('HINCRBY', counters[c], 'r', nreq)
  redis.call('HINCRBY', counters[c], 't', total)
  redis.call('EXPIREAT', counters[c], math.floor(tonumber(ends[c])) + 86400)
end
if #counters > 0 then
  local keys = table.concat(counters, '|')
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
"""
)

# KEYS: 1 leases. ARGV: 1 prefix, 2 n, then n × (hold id, requests, tokens, in-flight key or '',
# in-flight member, nkeys, fallback counter key × nkeys). Returns how many holds it settled.
SETTLE = (
    _COMMON
    + r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local leases, prefix = KEYS[1], ARGV[1]
expire_holds(prefix, leases, now, 16)
local n = tonumber(ARGV[2])
local i = 3
local settled = 0
for e = 1, n do
  local id, req, tok, fkey, fmember, nk = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3], ARGV[i + 4], tonumber(ARGV[i + 5])
  local fallback = {}
  for k = 1, nk do fallback[k] = ARGV[i + 5 + k] end
  i = i + 6 + nk
  if fkey ~= '' then redis.call('ZREM', fkey, fmember) end
  if id ~= '' then
    local hk = prefix .. 'h:' .. id
    local h = redis.call('GET', hk)
    if h ~= 'S' then
      if h and string.sub(h, 1, 2) == 'H|' then
        local parts = split(h, '|')
        bump(parts, 4, req - tonumber(parts[2]), tok - tonumber(parts[3]))
        redis.call('ZREM', leases, id)
        redis.call('SET', hk, 'S', 'EX', 86400)
      elseif h then
        bump(split(h, '|'), 2, req, tok)
        redis.call('SET', hk, 'S', 'EX', 86400)
      else
        bump(fallback, 1, req, tok)  -- never held (no quota applied) or lost with Redis
      end
      settled = settled + 1
    end
  end
end
return settled
"""
)
