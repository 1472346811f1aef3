"""lockapi errors from the Hazelcast backend: one line saying what failed and what to do, never the
member's Java stack trace; the client's exception chained as the cause (issue #13 item 7)."""

from __future__ import annotations

import uuid

import hazelcast
import pytest
from hazelcast.errors import HazelcastError, IllegalMonitorStateError

import lockapi
from lockapi.errors import BackendUnavailable, UnsupportedFeature
from tests.servers.hazelcast import HazelcastCluster


def _server_exception(cluster: HazelcastCluster) -> HazelcastError:
    """A real exception from a member, Java stack trace and all: unlocking a key nobody locked."""
    client = hazelcast.HazelcastClient(cluster_name=cluster.cluster_name,
                                       cluster_members=cluster.addresses.split(","), cluster_connect_timeout=30)
    try:
        with pytest.raises(IllegalMonitorStateError) as caught:
            client.get_map("errors-probe").blocking().unlock(uuid.uuid4().hex)
    finally:
        client.shutdown()
    assert "\tat com.hazelcast" in str(caught.value), "the member's message has no stack trace to hide"
    return caught.value


def test_a_member_exception_becomes_one_line_with_the_cause_chained(hazelcast_member: HazelcastCluster) -> None:
    exc = _server_exception(hazelcast_member)
    with lockapi.connect(hazelcast_member.url("map")) as mgr:
        translate = mgr.backend._holder.translate  # type: ignore[attr-defined]
        with pytest.raises(BackendUnavailable) as caught, translate("release"):
            raise exc
    message = str(caught.value)
    assert "\n" not in message and "\tat " not in message, message
    assert "release failed" in message and "IllegalMonitorStateException" in message, message
    assert "check that the cluster" in message, message
    assert len(message) < 400, message
    assert caught.value.__cause__ is exc


def test_cp_mode_on_a_cluster_without_cp_says_what_to_do(hazelcast_member: HazelcastCluster) -> None:
    with lockapi.connect(hazelcast_member.url("cp")) as mgr, pytest.raises(UnsupportedFeature) as caught:
        mgr.try_acquire("needs-cp")
    message = str(caught.value)
    assert "\n" not in message and "hazelcast://" in message, message
    assert isinstance(caught.value.__cause__, HazelcastError)
