"""``Backend.run_calls`` on Redis: one pipeline for a batch of independent calls (the migration shadow's
replay sends its waves this way), with the same results, in the same order, as one call after the other."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from lockapi_redis import RedisBackend

from lockapi.spi import Attempt, BackendConfig, BackendUnavailable, LockError, Options
from tests.servers.common import free_port
from tests.servers.redis import RedisServer


def backend(url: str, timeout: float = 5.0) -> RedisBackend:
    return RedisBackend(BackendConfig(url=url, scheme="redis", options=Options({}), timeout=timeout))


@pytest.fixture
def b(redis_standalone: RedisServer) -> Iterator[RedisBackend]:
    be = backend(redis_standalone.url)
    yield be
    be.close()


def names(n: int) -> list[str]:
    prefix = uuid.uuid4().hex
    return [f"rc:{prefix}:{i}" for i in range(n)]


def test_a_batch_runs_in_order_with_each_calls_result(b: RedisBackend) -> None:
    a, c, d = names(3)
    first = b.run_calls([("try_acquire", (a, "h1", 30.0), {}), ("try_acquire", (c, "h1", 30.0), {}),
                         ("set_fence_floor", (d, 1000), {}), ("mark_done", (d, 60.0), {})])
    assert isinstance(first[0], Attempt) and first[0].token is not None
    assert isinstance(first[1], Attempt) and first[1].token is not None
    assert first[2:] == [None, None]
    assert b.done([d]) == {d}
    # a release and the next acquire of the same name in one batch: the server runs them in this order
    second = b.run_calls([("release", (a, "h1", first[0].token), {}), ("try_acquire", (a, "h2", 30.0), {}),
                          ("try_acquire", (c, "h2", 30.0), {}), ("try_acquire", (d, "h2", 30.0), {}),
                          ("release", (c, "h2", 1), {})])
    assert second[0] is True
    assert isinstance(second[1], Attempt) and second[1].token is not None and second[1].token > first[0].token
    assert isinstance(second[2], Attempt) and second[2].token is None and second[2].retry_after is not None
    assert isinstance(second[3], Attempt) and second[3].token is not None and second[3].token > 1000
    assert second[4] is False
    assert b.inspect(a) is not None and b.inspect(a).holder == "h2"  # type: ignore[union-attr]


def test_semaphore_calls_and_extend(b: RedisBackend) -> None:
    s, n = names(2)
    got = b.run_calls([("try_acquire_permit", (s, 2, "h1", 30.0), {}), ("try_acquire_permit", (s, 2, "h2", 30.0), {}),
                       ("try_acquire_permit", (s, 2, "h3", 30.0), {}), ("try_acquire", (n, "h", 30.0), {})])
    assert [a.token is not None for a in got] == [True, True, False, True]
    again = b.run_calls([("extend_permit", (s, "h1", got[0].token, 60.0), {}),
                         ("release_permit", (s, "h2", got[1].token), {}),
                         ("extend", (n, "h", got[3].token, 60.0), {}),
                         ("set_fence_floor", (s, 500), {"semaphore": True})])
    assert again == [True, True, True, None]
    assert b.try_acquire_permit(s, 2, "h4", 30.0).token > 500  # type: ignore[operator]


def test_a_flushed_script_cache_fails_only_the_calls_that_did_not_run(b: RedisBackend,
                                                                     redis_standalone: RedisServer) -> None:
    a, c, warm = names(3)
    b.run_calls([("try_acquire", (warm, "h", 30.0), {}), ("release", (warm, "h", 1), {})])  # scripts known now
    client = redis_standalone.client()
    try:
        client.script_flush()
    finally:
        client.close()
    got = b.run_calls([("try_acquire", (a, "h", 30.0), {}), ("mark_done", (c, 60.0), {})])
    assert isinstance(got[0], BackendUnavailable) and "did not run" in str(got[0])
    assert got[1] is None and b.done([c]) == {c}  # a plain command is not a script: it ran
    assert b.inspect(a) is None  # the acquire did not run
    again = b.run_calls([("try_acquire", (a, "h", 30.0), {}), ("try_acquire", (c, "h", 30.0), {})])
    assert all(isinstance(x, Attempt) and x.token is not None for x in again)  # sent in full: loaded again


def test_an_unknown_method_is_refused_before_any_io() -> None:
    be = backend(f"redis://127.0.0.1:{free_port()}/0", timeout=1.0)
    try:
        with pytest.raises(ValueError, match="force_release"):
            be.run_calls([("try_acquire", ("x", "h", 1.0), {}), ("force_release", ("x",), {})])
    finally:
        be.close()


@pytest.mark.parametrize("size", [1, 3])
def test_a_server_that_is_down_fails_every_call_of_the_batch(size: int) -> None:
    be = backend(f"redis://127.0.0.1:{free_port()}/0", timeout=1.0)
    try:
        calls: list[Any] = [("try_acquire", (f"x{i}", "h", 1.0), {}) for i in range(size)]
        got = be.run_calls(calls)
        assert len(got) == size and all(isinstance(x, BackendUnavailable) for x in got)
    finally:
        be.close()


def test_the_default_runs_the_calls_one_by_one_and_returns_errors() -> None:
    import lockapi

    be = lockapi.open_backend("memory://")
    try:
        got = be.run_calls([("try_acquire", ("m", "h", 30.0), {}), ("try_acquire", ("m", "h2", 30.0), {}),
                            ("done", (["m"],), {})])
        assert got[0].token is not None and got[1].token is None and got[2] == set()
        assert isinstance(got[0], Attempt) and not isinstance(got[0], LockError)
    finally:
        be.close()


def test_a_closed_backend_fails_every_call(redis_standalone: RedisServer) -> None:
    be = backend(redis_standalone.url)
    be.close()
    got = be.run_calls([("try_acquire", ("c1", "h", 1.0), {}), ("try_acquire", ("c2", "h", 1.0), {})])
    assert len(got) == 2 and all(isinstance(x, BackendUnavailable) for x in got)
