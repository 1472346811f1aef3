"""Issue 13 item 13: the server committed, the reply was lost, the backend retried on a new connection.

A retried release must not report a spurious loss; a retried acquire (plain, fair, permit) must hand the
caller a lease it really holds instead of leaving its first grant orphaned until the ttl ends. A
:class:`CutProxy` between the backend and the real server drops exactly one reply.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from lockapi_sql import SQLBackend

from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer
from tests.servers.proxy import CutProxy
from tests.sql.conftest import Factory


@pytest.fixture(params=["postgresql", "mariadb"])
def proxied(request: pytest.FixtureRequest, make_backend: Factory) -> Iterator[tuple[SQLBackend, CutProxy]]:
    """A backend whose only connection goes through a proxy that can lose a reply."""
    server: PostgresServer | MariaDBServer = request.getfixturevalue("pg" if request.param == "postgresql"
                                                                    else "maria")
    with CutProxy(server.port) as proxy:
        url = server.url.replace(f":{server.port}/", f":{proxy.port}/")
        options = {"listen": "false"} if request.param == "postgresql" else {}
        backend = make_backend(url, timeout=10.0, pool_size=1, max_overflow=0, **options)
        backend.inspect("warm-up")  # the pooled connection exists: the next reply is the one cut
        yield backend, proxy


@contextlib.contextmanager
def reply_lost(proxy: CutProxy) -> Iterator[None]:
    proxy.cut_next_reply()
    yield
    assert proxy.cut.is_set(), "the proxy dropped no reply: the test did not test anything"


def test_release_whose_reply_was_lost_reports_success(proxied: tuple[SQLBackend, CutProxy], name: str) -> None:
    backend, proxy = proxied
    token = backend.try_acquire(name, "h", 60).token
    assert token is not None
    with reply_lost(proxy):
        assert backend.release(name, "h", token) is True, "a release that happened reported a loss"
    assert backend.inspect(name) is None
    assert backend.release(name, "h", token) is True, "releasing twice stays a success"


def test_acquire_whose_reply_was_lost_is_held_by_the_caller(proxied: tuple[SQLBackend, CutProxy],
                                                           name: str) -> None:
    backend, proxy = proxied
    with reply_lost(proxy):
        token = backend.try_acquire(name, "h", 60).token
    assert token is not None, "the retry found the caller's own grant and refused it (orphaned)"
    info = backend.inspect(name)
    assert info is not None and (info.holder, info.token) == ("h", token)
    assert backend.release(name, "h", token) is True
    assert backend.try_acquire(name, "other", 60).token is not None


def test_fair_acquire_whose_reply_was_lost_is_held_by_the_caller(proxied: tuple[SQLBackend, CutProxy],
                                                                name: str) -> None:
    backend, proxy = proxied
    holder = backend.try_acquire(name, "first", 60).token
    assert holder is not None
    assert backend.try_acquire(name, "w", 60, queue_ttl=60).token is None  # queued
    assert backend.release(name, "first", holder)
    with reply_lost(proxy):
        token = backend.try_acquire(name, "w", 60, queue_ttl=60).token
    assert token is not None and backend.holds(name, "w", token)
    assert backend.release(name, "w", token)
    assert backend.try_acquire(name, "next", 60, queue_ttl=60).token is not None, "a queue entry was left"


def test_permit_whose_reply_was_lost_is_not_taken_twice(proxied: tuple[SQLBackend, CutProxy], name: str) -> None:
    backend, proxy = proxied
    with reply_lost(proxy):
        token = backend.try_acquire_permit(name, 2, "p", 60).token
    assert token is not None and backend.holds_permit(name, "p", token)
    assert backend.try_acquire_permit(name, 2, "q", 60).token is not None, "the retry took a second permit"
    assert backend.release_permit(name, "p", token)


def test_acquire_whose_reply_was_lost_on_a_fresh_connection_is_held_by_the_caller(
        proxied: tuple[SQLBackend, CutProxy], name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection that lost the reply was opened by this very call (an empty pool: the first call, a
    burst beyond the idle connections, after a restart): the call is retried on a fresh one too, instead of
    raising BackendUnavailable while the server keeps a grant nobody knows of until its ttl ends."""
    backend, proxy = proxied
    warm = backend.try_acquire(name, "warm", 60).token  # the lease row exists: the claim is what grants
    assert warm is not None and backend.release(name, "warm", warm)
    backend.connections._drain()  # no idle connection: the next call opens a fresh one
    claim, original = backend.plans.sql.claim, backend.dialect.execute

    def execute(conn: Any, statement: str, params: dict[str, Any]) -> Any:
        if statement == claim and not proxy.cut.is_set():
            proxy.cut_next_reply()  # the reply to exactly this claim is lost
        return original(conn, statement, params)

    monkeypatch.setattr(backend.dialect, "execute", execute)  # every statement of both runner paths
    token = backend.try_acquire(name, "h", 60).token
    assert proxy.cut.is_set(), "the proxy dropped no reply: the test did not test anything"
    assert token is not None, "the retry found the caller's own grant and refused it (orphaned)"
    info = backend.inspect(name)
    assert info is not None and (info.holder, info.token) == ("h", token)
    assert backend.release(name, "h", token) is True
