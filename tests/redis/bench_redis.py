"""Side-by-side rate check (not a test): uncontended acquire+release cycles per second.

    .venv/bin/python tests/redis/bench_redis.py [redis://127.0.0.1:6379] [seconds]

Without a URL it starts its own redis-server. It prints, for the same server:
  * raw redis-py: SET NX PX + Lua compare-and-delete (EVALSHA), on one client;
  * lockapi RedisBackend.try_acquire + release (the SPI hot path: two EVALSHA);
  * lockapi manager: try_acquire(...) + lease.release() (core included).
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import redis
from lockapi_redis import RedisBackend

import lockapi
from lockapi.spi import BackendConfig, Options

CAD = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def rate(cycle: Callable[[], None], seconds: float) -> float:
    for _ in range(200):
        cycle()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            cycle()
        n += 100
    return n / elapsed


def main(url: str, seconds: float) -> None:
    raw = redis.Redis.from_url(url)
    cad = raw.register_script(CAD)

    def raw_cycle() -> None:
        token = uuid.uuid4().hex
        assert raw.set("bench:raw", token, nx=True, px=30000)
        assert cad(keys=["bench:raw"], args=[token]) == 1

    be = RedisBackend(BackendConfig(url=url, scheme=url.split("://")[0], options=Options({}), timeout=5))

    def spi_cycle() -> None:
        holder = uuid.uuid4().hex
        token = be.try_acquire("bench:spi", holder, 30.0).token
        assert token is not None and be.release("bench:spi", holder, token)

    mgr = lockapi.connect(url)

    def manager_cycle() -> None:
        lease = mgr.try_acquire("bench:mgr", ttl=30)
        assert lease is not None and lease.release()

    for label, cycle in (("raw redis-py SET NX PX + Lua CAD", raw_cycle),
                         ("lockapi RedisBackend (SPI)      ", spi_cycle),
                         ("lockapi manager try_acquire     ", manager_cycle),
                         ("raw redis-py again              ", raw_cycle)):
        print(f"{label}: {rate(cycle, seconds):8.0f} cycles/s", flush=True)
    mgr.close()
    be.close()
    raw.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    seconds = float(args[1]) if len(args) > 1 else 3.0
    if args:
        main(args[0], seconds)
    else:
        from tests.servers.redis import redis_server

        with contextlib.ExitStack() as stack:
            server = stack.enter_context(redis_server())
            main(server.url, seconds)
