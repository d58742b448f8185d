"""The one Lua script a shared limiter runs in Redis (``EVALSHA``), and the keys it keeps.

Keys, for a limiter on ``key``:

* ``key``: a hash. ``r``, ``t``: the shared bucket's levels (requests, tokens); ``stamp``:
  when they were last refilled; ``paused``: until when nobody is granted; ``lim_r``,
  ``lim_t``: the lowest limits (per second) a provider stated to a fixed-rate caller;
  ``ver``, ``ctl``: the rate controller's shared state and its version; ``ok_r``, ``ok_t``:
  the answers every process reported; ``exp``: when the key's time to live runs out.
  All times are the Redis server's (``TIME``).
* ``key:members``: a sorted set of the live processes, scored by when each last said so.
* ``key:signals``: a channel: ``P <seconds>`` (a pause), ``S <version> <state>`` (a cut or
  a stated limit, for every process at once).

The script refills, pauses, grants a chunk on both dimensions at once (or says how long
until the need fits), writes the controller state only over the version its caller started
from, adds up the answers, and keeps the members; its arguments and reply are below.
"""

from __future__ import annotations

__all__ = ["LEASE_SCRIPT"]

# KEYS[1]: the hash. ARGV: rate_r, rate_t (per second; 0 = not limited), burst_r, burst_t,
# want_r, want_t (the chunk asked for), need_r, need_t (the least worth taking), pause
# (seconds, 0 = none), ttl (s), learned_r, learned_t (per second: limits the provider stated to
# a fixed-rate caller; 0 = none; the lowest are kept and bind every caller), base_ver, blob,
# urgent (the caller's rate controller state, written only over the version it started from,
# and published on KEYS[1]:signals when urgent), add_r, add_t (answers the caller had since
# its last call: everyone's add up to what the provider admitted), member, member_ttl (the
# caller's id in the sorted set of live processes).
# Grants a fraction f of (want_r, want_t), the same on both dimensions, if that covers the
# need on each; else nothing, and says how long until the need fits. Numbers come back as
# strings: Redis would truncate a Lua number to an integer.
LEASE_SCRIPT = """
local key = KEYS[1]
local rate_r, rate_t = tonumber(ARGV[1]), tonumber(ARGV[2])
local burst_r, burst_t = tonumber(ARGV[3]), tonumber(ARGV[4])
local want_r, want_t = tonumber(ARGV[5]), tonumber(ARGV[6])
local need_r, need_t = tonumber(ARGV[7]), tonumber(ARGV[8])
local pause, ttl = tonumber(ARGV[9]), tonumber(ARGV[10])
local learned_r, learned_t = tonumber(ARGV[11]) or 0, tonumber(ARGV[12]) or 0
local base_ver, blob, urgent = tonumber(ARGV[13]) or 0, ARGV[14], ARGV[15] == '1'
local add_r, add_t = tonumber(ARGV[16]) or 0, tonumber(ARGV[17]) or 0
local member, member_ttl = ARGV[18], tonumber(ARGV[19]) or 5
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local h = redis.call('HMGET', key, 'r', 't', 'stamp', 'paused', 'lim_r', 'lim_t', 'ver',
                     'ok_r', 'ok_t', 'exp')
local lim_r, lim_t = tonumber(h[5]) or 0, tonumber(h[6]) or 0
if learned_r > 0 and (lim_r == 0 or learned_r < lim_r) then lim_r = learned_r end
if learned_t > 0 and (lim_t == 0 or learned_t < lim_t) then lim_t = learned_t end
if lim_r > 0 and rate_r > lim_r then
  burst_r = burst_r * lim_r / rate_r
  rate_r = lim_r
end
if lim_t > 0 and rate_t > lim_t then
  burst_t = burst_t * lim_t / rate_t
  rate_t = lim_t
end
local stamp = tonumber(h[3]) or now
local lr = tonumber(h[1]) or 0
local lt = tonumber(h[2]) or 0
local paused = tonumber(h[4]) or 0
local news = false
-- Nothing accrues while paused: the end of a pause is not a burst.
local accrued = math.max(0, now - math.max(stamp, math.min(paused, now)))
lr = math.min(burst_r, lr + rate_r * accrued)
lt = math.min(burst_t, lt + rate_t * accrued)
if pause > 0 then
  -- A pause (a 429) says the provider's bucket is empty: so is the shared one (debts kept).
  paused = math.max(paused, now + pause)
  lr = math.min(lr, 0)
  lt = math.min(lt, 0)
  news = true
end
local gr, gt, wait = 0, 0, 0
if now < paused then
  wait = paused - now
else
  local f = 1
  if rate_r > 0 and want_r > 0 then f = math.min(f, lr / want_r) end
  if rate_t > 0 and want_t > 0 then f = math.min(f, lt / want_t) end
  if f < 0 then f = 0 end
  local target_r = need_r > 0 and need_r or want_r * 0.5
  local target_t = need_t > 0 and need_t or want_t * 0.5
  target_r = math.min(target_r, burst_r)
  target_t = math.min(target_t, burst_t)
  local short_r = rate_r > 0 and target_r > 0 and lr < target_r
  local short_t = rate_t > 0 and target_t > 0 and lt < target_t
  if (want_r > 0 or want_t > 0) and not short_r and not short_t then
    gr = math.max(f * want_r, need_r)
    gt = math.max(f * want_t, need_t)
    if rate_r > 0 then lr = lr - gr end
    if rate_t > 0 then lt = lt - gt end
  else
    if short_r then wait = (target_r - lr) / rate_r end
    if short_t then wait = math.max(wait, (target_t - lt) / rate_t) end
  end
end
-- The controller's state: written only over the version the caller started from.
local ver = tonumber(h[7]) or 0
local accepted = 0
if blob ~= '' and base_ver == ver then
  ver = ver + 1
  accepted = 1
  redis.call('HSET', key, 'ver', ver, 'ctl', blob)
end
local out_blob = ''
if accepted == 0 and ver ~= base_ver then
  out_blob = redis.call('HGET', key, 'ctl') or ''
end
local ok_r = (tonumber(h[8]) or 0) + add_r
local ok_t = (tonumber(h[9]) or 0) + add_t
redis.call('HSET', key, 'r', lr, 't', lt, 'stamp', now, 'paused', paused, 'lim_r', lim_r,
           'lim_t', lim_t, 'ok_r', ok_r, 'ok_t', ok_t)
-- The time to live is renewed when half of it is gone, not at every call.
local expires = tonumber(h[10]) or 0
if now > expires - ttl / 2 then
  redis.call('EXPIRE', key, ttl)
  redis.call('HSET', key, 'exp', now + ttl)
end
local members = key .. ':members'
local live = 0
if member ~= '' then
  redis.call('ZADD', members, now, member)
  redis.call('ZREMRANGEBYSCORE', members, '-inf', now - member_ttl)
  redis.call('EXPIRE', members, ttl)
  live = redis.call('ZCARD', members)
end
if news then
  redis.call('PUBLISH', key .. ':signals', 'P ' .. tostring(math.max(0, paused - now)))
end
if accepted == 1 and urgent then
  redis.call('PUBLISH', key .. ':signals', 'S ' .. tostring(ver) .. ' ' .. blob)
end
return {tostring(gr), tostring(gt), tostring(wait), tostring(math.max(0, paused - now)),
        tostring(lim_r), tostring(lim_t), tostring(ver), out_blob, tostring(ok_r),
        tostring(ok_t), tostring(now), tostring(live), tostring(accepted)}
"""
