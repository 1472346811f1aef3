"""The plain asyncio ``try_acquire`` (no fair/auto_renew/on_lost/at_most, no observer installed) runs a
shorter path than the generic one (as the sync API's, tests/core/test_plain_path.py): it keeps every
guarantee of the generic path. Its one await, the guarded attempt, is covered for cancellation by
tests/aio/test_aio_api.py (a caller cancelled before the reply, and as the reply came); the settled
attempt that replaces it on a backend declaring ``settles_cancelled_attempts`` by tests/aio/test_settled.py
and, on PostgreSQL, tests/sql/test_asyncio_faults.py."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from lockapi_memory import AsyncMemoryBackend

import lockapi
import lockapi.aio
import lockapi.plugins
from lockapi.spi import Attempt, BackendUnavailable
from tests.core.recording import OutcomeRecorder

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(("name", "ttl", "error"), [
    ("", 30.0, lockapi.InvalidName),
    (b"bytes", 30.0, lockapi.InvalidNameType),
    ("x", 0.0, lockapi.InvalidArgument),
    ("x", True, lockapi.InvalidArgumentType),
    ("", True, lockapi.InvalidArgumentType),  # the ttl is checked first, as on the generic path
])
def test_bad_input_is_rejected_before_any_io(tmp_path: Path, name: object, ttl: object,
                                             error: type[Exception]) -> None:
    path = tmp_path / "locks.db"

    async def main() -> None:
        async with lockapi.aio.connect(f"sqlite:///{path}") as mgr:
            with pytest.raises(error):
                await mgr.try_acquire(name, ttl=ttl)  # type: ignore[arg-type]

    asyncio.run(main())
    assert not path.exists()  # the tables are created on the first call that reaches the database


@pytest.mark.parametrize("scheme", ["memory", "sqlite"])
def test_listeners_see_every_plain_decision_and_release(tmp_path: Path, scheme: str) -> None:
    url = f"memory://plain-{uuid.uuid4().hex}" if scheme == "memory" else f"sqlite:///{tmp_path / 'locks.db'}"

    async def main() -> None:
        async with lockapi.aio.connect(url) as mgr:
            seen: list[lockapi.Event] = []
            listen = seen.append
            mgr.add_listener(listen)
            lease = await mgr.try_acquire("plain", ttl=30)
            assert lease is not None
            assert await mgr.try_acquire("plain", ttl=30) is None
            assert await lease.release()
            assert not await lease.release()  # already released: no backend call, no event
            mgr.remove_listener(listen)
            again = await mgr.try_acquire("plain", ttl=30)
            assert again is not None and await again.release()
            assert [(e.op, e.result, e.outcome) for e in seen] == [
                ("try_acquire", "granted", True), ("try_acquire", "denied", False), ("release", "released", True)]
            assert seen[0].token == seen[2].token == lease.token
            assert seen[1].token is None and all(e.seconds >= 0 and e.error is None for e in seen)
            assert again.token > lease.token  # tokens only go up

    asyncio.run(main())


def test_an_observer_installed_on_a_manager_sees_what_the_plain_path_skips() -> None:
    async def main() -> None:
        async with lockapi.aio.connect(f"memory://plain-{uuid.uuid4().hex}") as mgr:
            before = await mgr.try_acquire("seen", ttl=30)  # granted before the observer came: no end told
            recorder = OutcomeRecorder()
            mgr.add_observer(recorder)
            lease = await mgr.try_acquire("seen:2", ttl=30)
            assert lease is not None and before is not None
            assert await lease.release() and await before.release()
            mgr.remove_observer(recorder)
            assert recorder.ops == [("try_acquire", "granted"), ("release", "released"), ("release", "released")]
            assert recorder.ends == ["released"]

    asyncio.run(main())


class Down(AsyncMemoryBackend):
    """The in-memory backend, unreachable while ``down`` is set."""

    down = True

    async def try_acquire(self, name: str, holder: str, ttl: float, *, queue_ttl: float | None = None) -> Attempt:
        if self.down:
            raise BackendUnavailable("memory store down (test)")
        return await super().try_acquire(name, holder, ttl, queue_ttl=queue_ttl)


def test_an_outage_on_the_plain_path_is_raised_and_reported_and_its_end_too() -> None:
    async def main() -> None:
        backend = Down(lockapi.plugins.backend_config(f"memory://plain-{uuid.uuid4().hex}", {}))
        mgr = lockapi.aio.AsyncLockManager(backend)
        seen: list[Any] = []
        mgr.add_listener(seen.append)
        with pytest.raises(BackendUnavailable):
            await mgr.try_acquire("outage", ttl=30)
        assert mgr._reporter.down
        backend.down = False
        mgr.remove_listener(seen.append)  # the manager still reports the way back (down was set)
        lease = await mgr.try_acquire("outage", ttl=30)
        assert lease is not None and not mgr._reporter.down
        assert [(e.op, e.result) for e in seen] == [("try_acquire", "error")]
        assert seen[0].error is not None and "down (test)" in seen[0].error
        assert await lease.release()
        await mgr.aclose()

    asyncio.run(main())
