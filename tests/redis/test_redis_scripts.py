"""The script declarations (lockapi_redis.scripts) and the key table (lockapi_redis.keys.ROLES): each
script names its keys and arguments once, the Lua binds exactly those names, and the key layout stays the
one existing data was written with."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lockapi_redis import RedisBackend
from lockapi_redis.keys import ROLES, SUFFIX, Keys
from lockapi_redis.scripts import ACQUIRE_MANY, SPECS, Scripts, ScriptSpec

from lockapi.spi import BackendConfig, Options
from tests.servers.redis import RedisServer

LAYOUT = {"lock": ":lock", "fence": ":fence", "queue": ":queue", "qtime": ":qtime", "channel": ":ch",
          "sem": ":sem", "sfence": ":sfence", "schannel": ":sch", "done": ":done"}
"""The suffixes every deployed lockapi wrote its keys with: changing one orphans existing data."""


def test_the_key_layout_is_the_one_existing_data_uses() -> None:
    assert SUFFIX == LAYOUT
    keys = Keys("app")
    assert keys.of("a}b", Scripts.compile("PUBLISH", 0).release.suffixes) == [
        "app:{a\\]b}:lock", "app:{a\\]b}:ch", "app:{a\\]b}:queue", "app:{a\\]b}:qtime"]
    assert keys.done("n") == "app:{n}:done" and keys.channel("n", semaphore=True) == "app:{n}:sch"


def test_the_docs_list_every_key_role() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "backends" / "redis.md").read_text()
    for suffix in SUFFIX.values():
        assert f"`P:{{E}}{suffix}`" in doc, f"docs/backends/redis.md does not list P:{{E}}{suffix}"
    assert len(ROLES) == len(set(SUFFIX.values()))


def test_the_prologue_binds_the_declared_keys_and_arguments() -> None:
    text = Scripts.compile("PUBLISH", 0).acquire.text
    assert "local lock, fence = KEYS[1], KEYS[2]\n" in text
    assert "local holder, ttl_ms = ARGV[1], ARGV[2]\n" in text
    assert "local function keys_at(i) return KEYS[i], KEYS[i + 1], KEYS[i + 2] end" in ACQUIRE_MANY.prologue()


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_declared_name_is_used_and_nothing_else_indexes_keys_or_argv(spec: ScriptSpec) -> None:
    """A declared key or argument the body never uses means the declaration and the body disagree."""
    for name in (*spec.keys, *spec.args):
        assert re.search(rf"\b{name}\b", spec.body), f"{spec.name} declares {name!r} but never uses it"
    assert not re.search(r"\b(KEYS|ARGV)\s*\[", spec.body)


def test_a_body_that_indexes_keys_or_names_an_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="indexes KEYS/ARGV"):
        ScriptSpec("bad", keys=("lock",), args=(), body="return redis.call('GET', KEYS[1])")
    with pytest.raises(ValueError, match="unknown key roles"):
        ScriptSpec("bad", keys=("lokc",), args=(), body="return lokc")


def test_every_script_compiles_on_a_server(redis_standalone: RedisServer) -> None:
    client = redis_standalone.client()
    try:
        for publish in ("PUBLISH", "SPUBLISH"):
            compiled = Scripts.compile(publish, 1000)
            for spec in SPECS:
                script = getattr(compiled, spec.name)
                assert client.script_load(script.text) == script.sha, spec.name
    finally:
        client.close()


def test_data_written_before_the_declarations_is_still_understood(redis_standalone: RedisServer) -> None:
    """A lock and a counter stored under the historic key names are held, inspected, extended, released."""
    client = redis_standalone.client()
    be = RedisBackend(BackendConfig(url=redis_standalone.url, scheme="redis", options=Options({})))
    try:
        client.set("lockapi:{legacy}:lock", "7:old-holder", px=30_000)
        client.set("lockapi:{legacy}:fence", "7")
        info = be.inspect("legacy")
        assert info is not None and (info.holder, info.token) == ("old-holder", 7)
        assert be.holds("legacy", "old-holder", 7) and be.extend("legacy", "old-holder", 7, 30)
        assert be.try_acquire("legacy", "new", 30).token is None
        assert be.release("legacy", "old-holder", 7)
        token = be.try_acquire("legacy", "new", 30).token
        assert token is not None and token > 7
    finally:
        client.delete("lockapi:{legacy}:lock", "lockapi:{legacy}:fence")
        client.close()
        be.close()


@pytest.mark.parametrize("fence_ttl_ms", [60_000, 0])
def test_the_fence_counter_path_for_servers_without_set_get(redis_standalone: RedisServer, fence_ttl_ms: int) -> None:
    """Redis < 6.2 refuses ``SET ... GET``; next_token then reads and sets the counter in two calls. The
    tested server has the option, so the script is run with it spelt as an option no server knows, which
    fails the same way (a syntax error caught by the pcall)."""
    acquire = Scripts.compile("PUBLISH", fence_ttl_ms).acquire.text
    assert acquire.count("'GET')") == 2
    old_server = acquire.replace("'GET')", "'NO-SUCH-OPTION')")
    client = redis_standalone.client()
    lock, fence = "lockapi:{old-server}:lock", "lockapi:{old-server}:fence"
    try:
        for text in (acquire, old_server):
            client.delete(lock, fence)
            seconds, micros = client.time()
            first = int(client.eval(text, 2, lock, fence, "h", 30_000))
            assert first >= seconds * 1_000_000 + micros  # the clock floor
            assert client.get(fence) == str(first).encode()
            assert (0 < client.pttl(fence) <= fence_ttl_ms) if fence_ttl_ms else client.pttl(fence) == -1
            client.delete(lock)
            ahead = first + 3_600_000_000  # an hour ahead of the clock: counted on, kept without a ttl
            client.set(fence, str(ahead), px=60_000)
            assert int(client.eval(text, 2, lock, fence, "h", 30_000)) == ahead + 1
            assert client.get(fence) == str(ahead + 1).encode() and client.pttl(fence) == -1
            assert client.get(lock) == f"{ahead + 1}:h".encode()
    finally:
        client.delete(lock, fence)
        client.close()


def test_the_per_cycle_scripts_build_no_closure_and_pass_no_lua_number_on_the_common_path() -> None:
    """A local function is a closure built on every run, and a Lua number passed to redis.call is
    formatted with sprintf on every call: the scripts of an uncontended acquire + release have neither
    (module docstring: cost)."""
    for fence_ttl_ms in (1000, 0):
        compiled = Scripts.compile("PUBLISH", fence_ttl_ms)
        for script in (compiled.acquire, compiled.release):
            assert "function" not in script.text, script.spec.name
        assert "redis.call('LINDEX', queue, '0')" in compiled.release.text
    assert "local FENCE_TTL_MS = '1000'\n" in Scripts.compile("PUBLISH", 1000).acquire.text
    assert "local FENCE_TTL_MS = false\n" in Scripts.compile("PUBLISH", 0).acquire.text


def test_an_inlined_helper_is_called_on_a_line_of_its_own_with_a_name_its_block_does_not_use() -> None:
    ok = ScriptSpec("ok", keys=("lock", "fence"), args=(), body="local tok = next_token(fence)\nreturn tok .. lock\n")
    text = ok.source("PUBLISH", 0)
    assert "next_token(" not in text and "local tok\ndo\n  local counter = fence\n" in text
    nested = ScriptSpec("in_expression", keys=("lock", "fence"), args=(), body="return next_token(fence) .. lock\n")
    with pytest.raises(ValueError, match="call it on a line of its own"):
        nested.source("PUBLISH", 0)
    clash = ScriptSpec("clash", keys=("lock", "fence"), args=(), body="local floor = next_token(fence)\nreturn lock\n")
    with pytest.raises(ValueError, match="cannot be named 'floor'"):
        clash.source("PUBLISH", 0)
    arity = ScriptSpec("arity", keys=("lock",), args=(), body="local t = now_ms(lock)\nreturn t\n")
    with pytest.raises(ValueError, match="takes 0 arguments"):
        arity.source("PUBLISH", 0)
