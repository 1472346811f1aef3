"""Real Hazelcast members (``java -cp hazelcast-<v>.jar HazelcastMemberStarter``) for the tests.

A cluster is N members on free loopback ports, started in parallel, joined by a tcp-ip member list
(multicast and auto-detection off), each with its own YAML config in a temporary folder. The jar comes
from ``$LOCKAPI_CACHE/jars/hazelcast-<version>.jar`` (``tests/run`` fetches 5.7.0 and 5.4.0 there).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers.common import ServerProcess, free_ports, missing, temp_dir, wait_until

MAP_VERSION = "5.7.0"
"""Community edition without the CP subsystem: map mode."""
CP_VERSION = "5.4.0"
"""The last community edition with the CP subsystem: cp mode."""

START_TIMEOUT = 120.0
"""Seconds for a cluster to form: JVM start on a busy 2-core machine is slow."""

EXPIRATION_TASK_PERIOD = 1
"""Seconds between the members' sweeps of expired map entries (default 5): expiry events sooner."""


def jar_path(version: str) -> Path:
    cache = Path(os.environ.get("LOCKAPI_CACHE", Path.home() / ".cache" / "lockapi"))
    return cache / "jars" / f"hazelcast-{version}.jar"


def require_java_and_jar(version: str) -> Path:
    """The member jar for ``version``; ``missing()`` (fails in CI) when it or java is absent."""
    jar = jar_path(version)
    if not jar.is_file() or jar.stat().st_size == 0:
        missing(f"hazelcast-{version}.jar", f"run tests/run, which fetches it into {jar.parent} with mvn")
    if not any((Path(d) / "java").is_file() for d in os.environ.get("PATH", "").split(os.pathsep)):
        missing("java", "apt-get install openjdk-17-jre-headless")
    return jar


@dataclass
class HazelcastCluster:
    """A running cluster: its members (index = position in ``ports``) and connection URL."""

    version: str
    cluster_name: str
    ports: list[int]
    members: list[ServerProcess] = field(default_factory=list)

    @property
    def addresses(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def url(self, mode: str = "map") -> str:
        """``hazelcast://`` (map mode) or ``hazelcast+cp://`` (cp mode) for this cluster."""
        scheme = "hazelcast" if mode == "map" else f"hazelcast+{mode}"
        return f"{scheme}://{self.addresses}?cluster_name={self.cluster_name}"

    def kill(self, index: int) -> None:
        """SIGKILL one member (a crash: no graceful migration of its partitions)."""
        self.members[index].kill()

    def stop(self) -> None:
        for member in self.members:
            member.stop()


def _member_yaml(cluster_name: str, port: int, ports: list[int], cp_members: int) -> str:
    # JSON is YAML: no YAML library needed, and names cannot break the syntax.
    config: dict[str, object] = {
        "cluster-name": cluster_name,
        "network": {
            "port": {"auto-increment": False, "port": port},
            "join": {
                "auto-detection": {"enabled": False},
                "multicast": {"enabled": False},
                "tcp-ip": {"enabled": True, "member-list": [f"127.0.0.1:{p}" for p in ports]},
            },
        },
        "properties": {
            "hazelcast.internal.map.expiration.task.period.seconds": EXPIRATION_TASK_PERIOD,
            "hazelcast.logging.type": "jdk",
            # A killed member is declared dead within seconds (default: 60 s without heartbeats).
            "hazelcast.heartbeat.interval.seconds": 1,
            "hazelcast.max.no.heartbeat.seconds": 8,
        },
    }
    if cp_members:
        config["cp-subsystem"] = {
            "cp-member-count": cp_members,
            "group-size": cp_members,
            # Short sessions so a crashed client's CP locks are freed within seconds, not a minute.
            "session-time-to-live-seconds": 10,
            "session-heartbeat-interval-seconds": 2,
        }
    return json.dumps({"hazelcast": config}, indent=2)


def _members_joined(member: ServerProcess, size: int) -> bool:
    text = member.log.read_text(errors="replace") if member.log.exists() else ""
    return bool(re.search(rf"Members \{{size:{size}, ver:", text)) and " is STARTED" in text


@contextlib.contextmanager
def hazelcast_cluster(version: str, size: int, *, cp: bool = False) -> Iterator[HazelcastCluster]:
    """Start ``size`` members of ``version`` in parallel; stop them (by pid) on exit.

    With ``cp``, the CP subsystem runs on all members (needs a version that has it, e.g. 5.4.0).
    """
    jar = require_java_and_jar(version)
    ports = free_ports(size)
    cluster = HazelcastCluster(version, f"lockapi-{uuid.uuid4().hex[:12]}", ports)
    with temp_dir(f"hazelcast-{version}") as folder:
        try:
            for index, port in enumerate(ports):
                config = folder / f"member-{index}.yaml"
                config.write_text(_member_yaml(cluster.cluster_name, port, ports, size if cp else 0))
                cluster.members.append(ServerProcess(
                    ["java", "-Xms64m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                     "-Djava.net.preferIPv4Stack=true", "-Dhazelcast.phone.home.enabled=false",
                     "-Dhazelcast.local.localAddress=127.0.0.1", f"-Dhazelcast.config={config}",
                     "-cp", str(jar), "com.hazelcast.core.server.HazelcastMemberStarter"],
                    log=folder / f"member-{index}.log", cwd=folder,
                ))
            for member in cluster.members:
                member.wait_ready(lambda m=member: _members_joined(m, size), START_TIMEOUT,
                                  f"hazelcast {version} member (cluster of {size})")
            if cp:
                wait_until(lambda: all("CP Subsystem is initialized" in m.log.read_text(errors="replace")
                                       or "CP Group Members" in m.log.read_text(errors="replace")
                                       for m in cluster.members),
                           START_TIMEOUT, "the CP subsystem to form")
            yield cluster
        finally:
            cluster.stop()
