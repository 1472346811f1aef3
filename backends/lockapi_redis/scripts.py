"""The Lua scripts: every backend operation is one of these, run atomically in one round trip.

Conventions shared by all scripts:

* Times come from the server (``TIME``), in milliseconds, so the backend clock decides expiry.
* A lock value is ``"<token>:<holder>"``; a semaphore permit is a zset member of the same form.
* Acquire scripts return the fencing token as a decimal string when granted, else the integer
  ``-1 - retry_after_ms``. Tokens stay strings inside the scripts (compared by length, then
  lexicographically) because Lua numbers are doubles, exact only below 2^53.
* Fencing: ``token = max(counter + 1, TIME in microseconds)``; the time floor keeps tokens increasing
  even after a restart that lost every key. The same floor lets an idle counter expire: a grant whose
  token is the TIME floor stores it with a ttl of ``FENCE_TTL_MS`` (0: forever), since any later TIME
  is greater. A counter ahead of TIME (a floor set above it) counts on by INCR and never expires.
* Names only ever travel in KEYS and holders/values in ARGV: nothing from the application is
  formatted into a script. The only substitution is the publish command, PUBLISH or SPUBLISH.
* Numbers passed back to Redis go through ``int()`` (``string.format('%d')``), since Lua would print
  large numbers in exponent notation.
"""

from __future__ import annotations

import re

_HELPERS: list[tuple[str, str]] = [
    # (name, Lua source), each after the helpers it calls; a script gets only the ones it uses.
    ("int", "local function int(x) return string.format('%d', x) end\n"),
    ("now_ms", """local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""),
    ("greater", "local function greater(a, b) return #a > #b or (#a == #b and a > b) end\n"),
    # The next fencing token; the common case (the counter is behind the clock) is GET + TIME + SET.
    ("next_token", """local function next_token(fence)
  local c = redis.call('GET', fence)
  local t = redis.call('TIME')
  local floor = t[1] .. string.format('%06d', tonumber(t[2]))
  if c and not greater(floor, c) then  -- not behind the clock: count on (the counter keeps its ttl)
    redis.call('INCR', fence)
    return redis.call('GET', fence)
  end
  if FENCE_TTL_MS > 0 then
    redis.call('SET', fence, floor, 'PX', FENCE_TTL_MS)
  else
    redis.call('SET', fence, floor)
  end
  return floor
end
"""),
    # The fair waiter to wake when the lock is free: the first queue entry that has not expired ('' when
    # there is none: the message then wakes every watcher).
    ("next_waiter", """local function next_waiter(queue, qtime)
  local i, now = 0, nil
  while true do
    local w = redis.call('LINDEX', queue, i)
    if not w then return '' end
    now = now or now_ms()
    local s = redis.call('ZSCORE', qtime, w)
    if s and tonumber(s) > now then return w end
    i = i + 1
  end
end
"""),
    ("expire_at_last", """local function expire_at_last(zkey)
  local last = redis.call('ZRANGE', zkey, -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIREAT', zkey, int(tonumber(last[2]) + 1)) end
end
"""),
]

# KEYS: lock, fence. ARGV: holder, ttl_ms.
ACQUIRE = """
local pttl = redis.call('PTTL', KEYS[1])
if pttl ~= -2 then return -1 - math.max(pttl, 0) end
local tok = next_token(KEYS[2])
redis.call('SET', KEYS[1], tok .. ':' .. ARGV[1], 'PX', ARGV[2])
return tok
"""

# KEYS: lock, fence, channel, queue, qtime. ARGV: holder, ttl_ms, queue_ttl_ms.
# Drops expired waiters, grants only to the head of the queue (or to anyone if the queue is empty),
# else joins or refreshes the caller's queue entry. When dropping waiters leaves a free lock to a new
# head, the head is woken (message = its holder id).
FAIR_ACQUIRE = """
local now = now_ms()
local stale = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now)
for i = 1, #stale do
  redis.call('LREM', KEYS[4], 1, stale[i])
  redis.call('ZREM', KEYS[5], stale[i])
end
local pttl = redis.call('PTTL', KEYS[1])
local head = redis.call('LINDEX', KEYS[4], 0)
if pttl == -2 and (not head or head == ARGV[1]) then
  if head then
    redis.call('LPOP', KEYS[4])
    redis.call('ZREM', KEYS[5], ARGV[1])
  end
  local tok = next_token(KEYS[2])
  redis.call('SET', KEYS[1], tok .. ':' .. ARGV[1], 'PX', ARGV[2])
  return tok
end
if redis.call('ZADD', KEYS[5], int(now + tonumber(ARGV[3])), ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[4], ARGV[1])
end
local last = redis.call('ZRANGE', KEYS[5], -1, -1, 'WITHSCORES')
local until_ms = int(tonumber(last[2]) + 1)
redis.call('PEXPIREAT', KEYS[5], until_ms)
redis.call('PEXPIREAT', KEYS[4], until_ms)
head = redis.call('LINDEX', KEYS[4], 0)
if pttl >= 0 then return -1 - pttl end
if #stale > 0 then redis.call(PUBLISH, KEYS[3], head) end
return -1 - math.max(tonumber(redis.call('ZSCORE', KEYS[5], head)) - now, 0)
"""

# KEYS: lock, channel, queue, qtime. ARGV: "<token>:<holder>". Publishes the next fair waiter's id
# (or "", which wakes every watcher).
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call(PUBLISH, KEYS[2], next_waiter(KEYS[3], KEYS[4]))
  return 1
end
return 0
"""

# KEYS: lock. ARGV: "<token>:<holder>", ttl_ms.
EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: lock. Returns false, or {value, pttl_ms}.
INSPECT = """
local v = redis.call('GET', KEYS[1])
if not v then return false end
return {v, redis.call('PTTL', KEYS[1])}
"""

# KEYS: lock, channel, queue, qtime. ARGV: holder. Leaves the queue; wakes the next head if the
# caller was the head of a free lock.
CANCEL_WAIT = """
local head = redis.call('LINDEX', KEYS[3], 0)
local removed = redis.call('ZREM', KEYS[4], ARGV[1])
if removed == 1 then redis.call('LREM', KEYS[3], 1, ARGV[1]) end
if head == ARGV[1] and redis.call('EXISTS', KEYS[1]) == 0 then
  local nxt = next_waiter(KEYS[3], KEYS[4])
  if nxt ~= '' then redis.call(PUBLISH, KEYS[2], nxt) end
end
return removed
"""

# KEYS: lock, channel, queue, qtime.
FORCE_RELEASE = """
if redis.call('DEL', KEYS[1]) == 1 then
  redis.call(PUBLISH, KEYS[2], next_waiter(KEYS[3], KEYS[4]))
  return 1
end
return 0
"""

# KEYS: fence. ARGV: token (decimal string). Compared as decimal strings: exact beyond 2^53.
# SET drops any ttl: a counter moved ahead of TIME must not expire (see next_token).
SET_FENCE_FLOOR = """
local c = redis.call('GET', KEYS[1])
if c and not greater(ARGV[1], c) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""

# KEYS: for each name: lock, fence, done. ARGV: holder, ttl_ms, skip_done ("1"/"0").
# Returns one entry per name: the token (string), or 0 where not granted.
ACQUIRE_MANY = """
local out = {}
for i = 1, #KEYS, 3 do
  local tok = 0
  if redis.call('EXISTS', KEYS[i]) == 0 and (ARGV[3] == '0' or redis.call('EXISTS', KEYS[i + 2]) == 0) then
    tok = next_token(KEYS[i + 1])
    redis.call('SET', KEYS[i], tok .. ':' .. ARGV[1], 'PX', ARGV[2])
  end
  out[#out + 1] = tok
end
return out
"""

# KEYS: sem, sfence. ARGV: holder, permits, ttl_ms.
SEM_ACQUIRE = """
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  local tok = next_token(KEYS[2])
  redis.call('ZADD', KEYS[1], int(now + tonumber(ARGV[3])), tok .. ':' .. ARGV[1])
  expire_at_last(KEYS[1])
  return tok
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return -1 - math.max(tonumber(first[2]) - now, 0)
"""

# KEYS: sem, schannel. ARGV: "<token>:<holder>". Removes the member; 1 if it was live.
SEM_RELEASE = """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
if tonumber(s) > now_ms() then
  redis.call(PUBLISH, KEYS[2], '')
  return 1
end
return 0
"""

# KEYS: sem. ARGV: "<token>:<holder>", ttl_ms.
SEM_EXTEND = """
local now = now_ms()
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) <= now then return 0 end
redis.call('ZADD', KEYS[1], 'XX', int(now + tonumber(ARGV[2])), ARGV[1])
expire_at_last(KEYS[1])
return 1
"""

# KEYS: sem. ARGV: "<token>:<holder>".
SEM_HOLDS = """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) > now_ms() then return 1 end
return 0
"""


def _helpers_for(body: str) -> str:
    """The helpers ``body`` calls, directly or through another helper, in definition order."""
    used: list[str] = []
    calls = body
    for name, code in reversed(_HELPERS):
        if re.search(rf"\b{name}\(", calls):
            used.append(code)
            calls += code
    return "".join(reversed(used))


def source(body: str, publish: str, fence_ttl_ms: int) -> str:
    """The full text of a script: its settings (publish command, fence counter ttl), the helpers it
    calls (a Lua closure per helper is built on every run, so a script carries no others), ``body``."""
    if publish not in ("PUBLISH", "SPUBLISH"):
        raise ValueError(publish)
    settings = f"local PUBLISH = '{publish}'\nlocal FENCE_TTL_MS = {int(fence_ttl_ms)}\n"
    return settings + _helpers_for(body) + body
