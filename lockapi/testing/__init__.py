"""The conformance suite every lockapi backend runs, including third-party ones.

Subclass :class:`LockConformance` in a pytest module and provide a ``lock_url`` fixture (and optionally
``lock_options``, a dict of extra connect options). The fixture may depend on session-scoped server
fixtures; it is function-scoped itself::

    from lockapi.testing import LockConformance

    class TestMyBackend(LockConformance):
        @pytest.fixture
        def lock_url(self, my_server):
            return my_server.url

Each test runs over both APIs (the ``api`` fixture: ``lockapi``, and ``lockapi.aio`` through a blocking
view), except the few whose work happens in child processes that speak the sync API (marked
``sync_only`` in :mod:`lockapi.testing.suite`). Tests synchronise on events, never on sleeps: a waiter
counts as blocked once core's ``Observer.waiting`` hook fired for it (``WaitingCount``).

Class attributes tune timing for slow backends (``short_ttl``, ``margin``) and where the multi-process
checks start their children (``process_context``: "spawn" by default, or a warm "forkserver"). Tests that
need a capability the backend does not declare (multi-process, fair) check that the backend refuses
cleanly instead.
"""

from lockapi.testing.suite import LockConformance

__all__ = ["LockConformance"]
