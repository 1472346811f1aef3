"""The retry rules both SQL pools follow (lockapi_sql.connections.Retries), as a decision table: no server
is needed, the rules do no I/O. The pools' behaviour on real servers is tested by test_lost_reply.py,
test_sqlite_busy.py and test_asyncio_faults.py."""

from __future__ import annotations

import pytest
from lockapi_sql.connections import AGAIN, FRESH, RAISE, Retries
from lockapi_sql.dialects import CONFIG, DEAD, RETRY, PostgreSQL
from sqlalchemy.engine import make_url

DIALECT = PostgreSQL(make_url("postgresql://u@h/db"), 5.0, None)
FIRST, LONGEST = DIALECT.retry_delay


def retries() -> Retries:
    return Retries(DIALECT, deadline=100.0)


@pytest.mark.parametrize("in_transaction", [False, True])
def test_a_retryable_error_is_retried_after_a_jittered_doubling_pause(in_transaction: bool) -> None:
    r = retries()
    pauses = []
    for _ in range(12):
        keep, then, pause = r.after(RETRY, 0.0, cut=False, in_transaction=in_transaction)
        assert then == AGAIN
        assert keep is not in_transaction, "a connection whose transaction failed must be dropped"
        pauses.append(pause)
    assert FIRST <= pauses[0] <= 2 * FIRST
    assert pauses[1] >= 2 * FIRST, "the pause doubles"
    assert all(LONGEST <= p <= 2 * LONGEST for p in pauses[-3:]), "and stops doubling at the longest"


def test_a_retryable_error_is_raised_when_the_pause_would_pass_the_deadline() -> None:
    r = retries()
    keep, then, _ = r.after(RETRY, 100.0 - FIRST / 2, cut=False, in_transaction=False)
    assert (keep, then) == (True, RAISE)
    assert r.after(RETRY, 100.0, cut=False, in_transaction=False)[1] == RAISE
    assert r.after(RETRY, 1.0, cut=True, in_transaction=False)[:2] == (False, RAISE), "cut: dropped, raised"


def test_a_dead_connection_is_retried_once_on_a_fresh_one() -> None:
    r = retries()
    assert r.after(DEAD, 1.0, cut=False, in_transaction=False) == (False, FRESH, 0.0)
    assert r.after(DEAD, 2.0, cut=False, in_transaction=False) == (False, RAISE, 0.0), "only once"


@pytest.mark.parametrize(("now", "cut"), [(100.0, False), (1.0, True)])
def test_a_dead_connection_is_not_retried_after_the_deadline(now: float, cut: bool) -> None:
    assert retries().after(DEAD, now, cut=cut, in_transaction=False) == (False, RAISE, 0.0)


@pytest.mark.parametrize("kind", [CONFIG, None])
def test_other_errors_are_raised_and_drop_the_connection(kind: str | None) -> None:
    assert retries().after(kind, 1.0, cut=False, in_transaction=False) == (False, RAISE, 0.0)


def test_pause_is_none_without_time_for_one() -> None:
    r = retries()
    assert r.pause(100.0 - FIRST) is None
    pause = r.pause(0.0)
    assert pause is not None and FIRST <= pause <= 2 * FIRST
