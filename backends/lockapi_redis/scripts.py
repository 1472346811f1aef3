"""The Lua scripts: every backend operation is one of these, run atomically in one round trip.

Each script is declared once as a :class:`ScriptSpec`: its name, the ROLES of the keys it touches (see
:data:`lockapi_redis.keys.ROLES`), the names of its arguments, and a body written against those names.
The generated prologue binds them (``local lock, fence = KEYS[1], KEYS[2]`` and
``local holder, ttl_ms = ARGV[1], ARGV[2]``), so no body indexes ``KEYS`` or ``ARGV`` itself, and the
backend builds the keys from the same declaration (:meth:`lockapi_redis.keys.Keys.of`): the order of
the keys lives in one place. A batch script (``per_name``) takes its keys once per name and binds
them name by name with ``keys_at(i)``.

Conventions shared by all scripts:

* Times come from the server (``TIME``), in milliseconds, so the backend clock decides expiry.
* A lock value is ``"<token>:<holder>"``; a semaphore permit is a zset member of the same form.
* Acquire scripts return the fencing token as a decimal string when granted, else the integer
  ``-1 - retry_after_ms``. Tokens stay strings inside the scripts (compared by length, then
  lexicographically) because Lua numbers are doubles, exact only below 2^53.
* Fencing: ``token = max(counter + 1, TIME in microseconds)``; the time floor keeps tokens increasing
  even after a restart that lost every key. The same floor lets an idle counter expire: a grant whose
  token is the TIME floor stores it with a ttl of ``FENCE_TTL_MS`` (false: forever), since any later
  TIME is greater. A counter not behind TIME (a floor set above it, a clock step back, two grants in one
  microsecond) is stored back without a ttl and counts on by INCR: it never expires while ahead, and
  the next grant that finds it behind TIME floors it and gives it the ttl again.
* Names only ever travel in KEYS and holders/values in ARGV: nothing from the application is
  formatted into a script. The only substitutions are the settings: the publish command (PUBLISH or
  SPUBLISH) and the fence counter ttl.
* Numbers passed back to Redis go through ``int()`` (``string.format('%d')``), since Lua would print
  large numbers in exponent notation. On the common path of the per-cycle scripts (ACQUIRE, RELEASE)
  every argument to ``redis.call`` is already a string: a Lua number is formatted with ``sprintf`` on
  each call, and redis-server's time per script is what a lock cycle costs on the server.
* Cost, measured as redis-server instructions (callgrind, redis 7.0): a ``redis.call`` that writes
  costs about 8k, one that reads about 3k, a Lua closure about 0.7k (a ``local function`` is built on
  every run), a round trip with a trivial script about 21k (reading, parsing, answering). So the common
  path saves calls first (SET ... GET instead of GET + SET for the counter), and the helpers it needs
  are ``_INLINE`` blocks, expanded in place, rather than local functions. An uncontended acquire +
  release costs 101k (115k before these two measures; raw ``SET NX PX`` + compare-and-delete 37k).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, fields

from .keys import suffixes

_INLINE: dict[str, tuple[tuple[str, ...], str]] = {
    # name: (parameters, Lua block). A script gets the block in place of each call, which must be a line
    # of its own, ``local x = name(args)`` or ``x = name(args)``: the block binds the parameters to the
    # arguments in a ``do ... end`` and assigns ``RESULT`` (here ``x``). Inlined rather than a local
    # function because a function is a closure built on every run of the script (see the module: cost).
    "now_ms": ((), """local t = redis.call('TIME')
RESULT = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""),
    "greater": (("a", "b"), "RESULT = #a > #b or (#a == #b and a > b)\n"),
    # The next fencing token. The common case (the counter is behind the clock, or gone) is TIME + one
    # SET ... GET that stores the floor and returns the old counter in the same call (Redis >= 6.2; an
    # older server refuses the GET option and the pcall falls back to GET + SET). A counter that was not
    # behind the clock is put back without a ttl and counts on by INCR (see the module).
    "next_token": (("counter",), """local t = redis.call('TIME')
local floor = t[1] .. string.sub('00000' .. t[2], -6)
local c
if FENCE_TTL_MS then
  c = redis.pcall('SET', counter, floor, 'PX', FENCE_TTL_MS, 'GET')
else
  c = redis.pcall('SET', counter, floor, 'GET')
end
if type(c) == 'table' then  -- Redis < 6.2 has no SET ... GET; a real error is raised again below
  c = redis.call('GET', counter)
  if FENCE_TTL_MS then
    redis.call('SET', counter, floor, 'PX', FENCE_TTL_MS)
  else
    redis.call('SET', counter, floor)
  end
end
RESULT = floor
if c then
  local behind = greater(floor, c)
  if not behind then  -- not behind the clock: put back, count on
    redis.call('SET', counter, c)
    redis.call('INCR', counter)
    RESULT = redis.call('GET', counter)
  end
end
"""),
    # The fair waiter to wake when the lock is free: the first queue entry that has not expired ('' when
    # there is none: the message then wakes every watcher). The common case is one LINDEX of a missing key.
    "next_waiter": (("queue", "qtime"), """RESULT = ''
local w = redis.call('LINDEX', queue, '0')
if w then
  local now = now_ms()
  local i = 0
  while w do
    local s = redis.call('ZSCORE', qtime, w)
    if s and tonumber(s) > now then
      RESULT = w
      break
    end
    i = i + 1
    w = redis.call('LINDEX', queue, i)
  end
end
"""),
}

_HELPERS: list[tuple[str, str]] = [
    # (name, Lua source), each after the helpers it calls; a script gets only the ones it uses. For the
    # rare paths: the per-cycle scripts call only _INLINE blocks.
    ("int", "local function int(x) return string.format('%d', x) end\n"),
    # Raise a counter to ``token`` (a decimal string) if it is lower; compared as decimal strings, exact
    # beyond 2^53. SET drops any ttl: a counter moved ahead of TIME must not expire (see next_token).
    ("set_floor", """local function set_floor(counter, token)
  local c = redis.call('GET', counter)
  if c then
    local higher = greater(token, c)
    if not higher then return 0 end
  end
  redis.call('SET', counter, token)
  return 1
end
"""),
    ("expire_at_last", """local function expire_at_last(zkey)
  local last = redis.call('ZRANGE', zkey, -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIREAT', zkey, int(tonumber(last[2]) + 1)) end
end
"""),
]

_INDEXING = re.compile(r"\b(KEYS|ARGV)\s*\[")


@dataclass(frozen=True)
class ScriptSpec:
    """One script: the roles of its keys, the names of its arguments, and its body (see the module)."""

    name: str
    keys: tuple[str, ...]
    """Key roles (:data:`lockapi_redis.keys.ROLES`), bound in this order to Lua locals of the same names."""
    args: tuple[str, ...]
    """Argument names, bound in this order to ``ARGV``."""
    body: str
    per_name: bool = False
    """KEYS holds ``keys`` once per name (a batch); the body binds them with ``keys_at(i)``."""

    def __post_init__(self) -> None:
        suffixes(self.keys)  # every role is in the key table
        if _INDEXING.search(self.body):
            raise ValueError(f"script {self.name}: the body indexes KEYS/ARGV; use the declared names")

    def prologue(self) -> str:
        """The Lua lines that bind the declared keys and arguments."""
        lines = []
        if self.per_name:
            picks = ", ".join(f"KEYS[i + {n}]" if n else "KEYS[i]" for n in range(len(self.keys)))
            lines += [f"local KEYS_PER_NAME = {len(self.keys)}",
                      f"local function keys_at(i) return {picks} end"]
        elif self.keys:
            lines.append(_bind(self.keys, "KEYS"))
        if self.args:
            lines.append(_bind(self.args, "ARGV"))
        return "".join(line + "\n" for line in lines)

    def source(self, publish: str, fence_ttl_ms: int) -> str:
        """The full text: its settings (publish command, fence counter ttl), the helpers it calls (a Lua
        closure per helper is built on every run, so a script carries no others), prologue, body (with
        the ``_INLINE`` blocks in place of their calls)."""
        if publish not in ("PUBLISH", "SPUBLISH"):
            raise ValueError(publish)
        # FENCE_TTL_MS is a string (or false for none): a Lua number passed to redis.call is formatted
        # with sprintf on every call.
        ttl = f"'{int(fence_ttl_ms)}'" if int(fence_ttl_ms) > 0 else "false"
        settings = f"local PUBLISH = '{publish}'\nlocal FENCE_TTL_MS = {ttl}\n"
        body = _inline(self.body)
        return settings + _helpers_for(body) + self.prologue() + body


def _bind(names: tuple[str, ...], table: str) -> str:
    return f"local {', '.join(names)} = {', '.join(f'{table}[{i}]' for i in range(1, len(names) + 1))}"


def _helpers_for(body: str) -> str:
    """The helpers ``body`` calls, directly or through another helper, in definition order (each with
    its ``_INLINE`` calls expanded)."""
    used: list[str] = []
    calls = body
    for name, code in reversed(_HELPERS):
        if re.search(rf"\b{name}\(", calls):
            code = _inline(code)
            used.append(code)
            calls += code
    return "".join(reversed(used))


_INLINE_CALL = re.compile(
    r"^(?P<indent>[ \t]*)(?P<local>local )?(?P<var>\w+) = (?P<name>\w+)\((?P<args>[^()]*)\)[ \t]*$", re.M)
_LOCALS = re.compile(r"\blocal\s+(?:function\s+)?(\w+(?:\s*,\s*\w+)*)")


def _inline(code: str) -> str:
    """``code`` with every call of an ``_INLINE`` block replaced by the block (recursively); ValueError
    for a call in any other form, or a result variable the block declares itself."""

    def expand(m: re.Match[str]) -> str:
        name, var, indent = m["name"], m["var"], m["indent"]
        if name not in _INLINE:
            return m[0]
        params, block = _INLINE[name]
        args = [a.strip() for a in m["args"].split(",")] if m["args"].strip() else []
        if len(args) != len(params):
            raise ValueError(f"{name} takes {len(params)} arguments, called with {m['args']!r}")
        block = _inline(block)
        inner = {n.strip() for names in _LOCALS.findall(block) for n in names.split(",")} | set(params)
        if var in inner:
            raise ValueError(f"the result of {name} cannot be named {var!r}: the block declares that name")
        lines = [f"local {var}"] if m["local"] else []
        lines.append("do")
        bound = [(p, a) for p, a in zip(params, args, strict=True) if p != a]  # same name: already bound
        if bound:
            lines.append(f"  local {', '.join(p for p, _ in bound)} = {', '.join(a for _, a in bound)}")
        lines += [f"  {line}" if line else line for line in re.sub(r"\bRESULT\b", var, block).splitlines()]
        lines.append("end")
        return "\n".join(indent + line if line else line for line in lines)

    out = _INLINE_CALL.sub(expand, code)
    for name in _INLINE:
        if re.search(rf"\b{name}\(", out):
            raise ValueError(f"{name} is inlined: call it on a line of its own, `local x = {name}(...)`")
    return out


# -- the scripts -------------------------------------------------------------------------------------
ACQUIRE = ScriptSpec("acquire", keys=("lock", "fence"), args=("holder", "ttl_ms"), body="""
local pttl = redis.call('PTTL', lock)
if pttl ~= -2 then return -1 - math.max(pttl, 0) end
local tok = next_token(fence)
redis.call('SET', lock, tok .. ':' .. holder, 'PX', ttl_ms)
return tok
""")

# Drops expired waiters, grants only to the head of the queue (or to anyone if the queue is empty),
# else joins or refreshes the caller's queue entry. When dropping waiters leaves a free lock to a new
# head, the head is woken (message = its holder id).
FAIR_ACQUIRE = ScriptSpec("fair_acquire", keys=("lock", "fence", "channel", "queue", "qtime"),
                          args=("holder", "ttl_ms", "queue_ttl_ms"), body="""
local now = now_ms()
local stale = redis.call('ZRANGEBYSCORE', qtime, '-inf', now)
for i = 1, #stale do
  redis.call('LREM', queue, 1, stale[i])
  redis.call('ZREM', qtime, stale[i])
end
local pttl = redis.call('PTTL', lock)
local head = redis.call('LINDEX', queue, 0)
if pttl == -2 and (not head or head == holder) then
  if head then
    redis.call('LPOP', queue)
    redis.call('ZREM', qtime, holder)
  end
  local tok = next_token(fence)
  redis.call('SET', lock, tok .. ':' .. holder, 'PX', ttl_ms)
  return tok
end
if redis.call('ZADD', qtime, int(now + tonumber(queue_ttl_ms)), holder) == 1 then
  redis.call('RPUSH', queue, holder)
end
local last = redis.call('ZRANGE', qtime, -1, -1, 'WITHSCORES')
local until_ms = int(tonumber(last[2]) + 1)
redis.call('PEXPIREAT', qtime, until_ms)
redis.call('PEXPIREAT', queue, until_ms)
head = redis.call('LINDEX', queue, 0)
if pttl >= 0 then return -1 - pttl end
if #stale > 0 then redis.call(PUBLISH, channel, head) end
return -1 - math.max(tonumber(redis.call('ZSCORE', qtime, head)) - now, 0)
""")

# Publishes the next fair waiter's id (or "", which wakes every watcher).
RELEASE = ScriptSpec("release", keys=("lock", "channel", "queue", "qtime"), args=("value",), body="""
if redis.call('GET', lock) == value then
  redis.call('DEL', lock)
  local waiter = next_waiter(queue, qtime)
  redis.call(PUBLISH, channel, waiter)
  return 1
end
return 0
""")

EXTEND = ScriptSpec("extend", keys=("lock",), args=("value", "ttl_ms"), body="""
if redis.call('GET', lock) == value then
  redis.call('PEXPIRE', lock, ttl_ms)
  return 1
end
return 0
""")

# Returns false, or {value, pttl_ms}.
INSPECT = ScriptSpec("inspect", keys=("lock",), args=(), body="""
local v = redis.call('GET', lock)
if not v then return false end
return {v, redis.call('PTTL', lock)}
""")

# Leaves the queue; wakes the next head if the caller was the head of a free lock.
CANCEL_WAIT = ScriptSpec("cancel_wait", keys=("lock", "channel", "queue", "qtime"), args=("holder",), body="""
local head = redis.call('LINDEX', queue, 0)
local removed = redis.call('ZREM', qtime, holder)
if removed == 1 then redis.call('LREM', queue, 1, holder) end
if head == holder and redis.call('EXISTS', lock) == 0 then
  local nxt = next_waiter(queue, qtime)
  if nxt ~= '' then redis.call(PUBLISH, channel, nxt) end
end
return removed
""")

FORCE_RELEASE = ScriptSpec("force_release", keys=("lock", "channel", "queue", "qtime"), args=(), body="""
if redis.call('DEL', lock) == 1 then
  local waiter = next_waiter(queue, qtime)
  redis.call(PUBLISH, channel, waiter)
  return 1
end
return 0
""")

SET_FENCE_FLOOR = ScriptSpec("set_fence_floor", keys=("fence",), args=("token",), body="""
return set_floor(fence, token)
""")

SET_SEM_FENCE_FLOOR = ScriptSpec("set_sem_fence_floor", keys=("sfence",), args=("token",), body="""
return set_floor(sfence, token)
""")

# Returns one entry per name: the token (string), or 0 where not granted.
ACQUIRE_MANY = ScriptSpec("acquire_many", keys=("lock", "fence", "done"), args=("holder", "ttl_ms", "skip_done"),
                          per_name=True, body="""
local out = {}
for i = 1, #KEYS, KEYS_PER_NAME do
  local lock, fence, done = keys_at(i)
  local tok = 0
  if redis.call('EXISTS', lock) == 0 and (skip_done == '0' or redis.call('EXISTS', done) == 0) then
    tok = next_token(fence)
    redis.call('SET', lock, tok .. ':' .. holder, 'PX', ttl_ms)
  end
  out[#out + 1] = tok
end
return out
""")

SEM_ACQUIRE = ScriptSpec("sem_acquire", keys=("sem", "sfence"), args=("holder", "permits", "ttl_ms"), body="""
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', sem, '-inf', now)
if redis.call('ZCARD', sem) < tonumber(permits) then
  local tok = next_token(sfence)
  redis.call('ZADD', sem, int(now + tonumber(ttl_ms)), tok .. ':' .. holder)
  expire_at_last(sem)
  return tok
end
local first = redis.call('ZRANGE', sem, 0, 0, 'WITHSCORES')
return -1 - math.max(tonumber(first[2]) - now, 0)
""")

# Removes the member; 1 if it was live.
SEM_RELEASE = ScriptSpec("sem_release", keys=("sem", "schannel"), args=("value",), body="""
local s = redis.call('ZSCORE', sem, value)
if not s then return 0 end
redis.call('ZREM', sem, value)
local now = now_ms()
if tonumber(s) > now then
  redis.call(PUBLISH, schannel, '')
  return 1
end
return 0
""")

SEM_EXTEND = ScriptSpec("sem_extend", keys=("sem",), args=("value", "ttl_ms"), body="""
local now = now_ms()
local s = redis.call('ZSCORE', sem, value)
if not s or tonumber(s) <= now then return 0 end
redis.call('ZADD', sem, 'XX', int(now + tonumber(ttl_ms)), value)
expire_at_last(sem)
return 1
""")

SEM_HOLDS = ScriptSpec("sem_holds", keys=("sem",), args=("value",), body="""
local s = redis.call('ZSCORE', sem, value)
if not s then return 0 end
local now = now_ms()
if tonumber(s) > now then return 1 end
return 0
""")

SPECS: tuple[ScriptSpec, ...] = (
    ACQUIRE, FAIR_ACQUIRE, RELEASE, EXTEND, INSPECT, CANCEL_WAIT, FORCE_RELEASE, SET_FENCE_FLOOR,
    SET_SEM_FENCE_FLOOR, ACQUIRE_MANY, SEM_ACQUIRE, SEM_RELEASE, SEM_EXTEND, SEM_HOLDS,
)


# -- compiled scripts -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Script:
    """A script ready to run: its full text and SHA1 (EVALSHA, EVAL on NOSCRIPT), and the key suffixes of
    its declared roles (:meth:`lockapi_redis.keys.Keys.of`)."""

    spec: ScriptSpec
    text: str
    sha: str = field(init=False)
    suffixes: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.text.encode()).hexdigest())
        object.__setattr__(self, "suffixes", suffixes(self.spec.keys))


@dataclass(frozen=True)
class Scripts:
    """Every script of :data:`SPECS`, compiled for one backend's settings; attribute = spec name."""

    acquire: Script
    fair_acquire: Script
    release: Script
    extend: Script
    inspect: Script
    cancel_wait: Script
    force_release: Script
    set_fence_floor: Script
    set_sem_fence_floor: Script
    acquire_many: Script
    sem_acquire: Script
    sem_release: Script
    sem_extend: Script
    sem_holds: Script

    @classmethod
    def compile(cls, publish: str, fence_ttl_ms: int) -> Scripts:
        by_name = {spec.name: Script(spec, spec.source(publish, fence_ttl_ms)) for spec in SPECS}
        if set(by_name) != {f.name for f in fields(cls)}:
            raise ValueError("Scripts and SPECS disagree")
        return cls(**by_name)
