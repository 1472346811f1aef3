"""Throwaway Redis servers for tests: standalone (optionally with a password and/or TLS), a
master+replica+3 sentinels group, and a 3-master cluster, all on free loopback ports.

Every server runs without persistence (``--save '' --appendonly no``) in a temp directory and is stopped
(by its own pid) when its context manager exits.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.servers.common import ServerProcess, find_binary, free_port, free_ports, missing, temp_dir, wait_until

STARTUP_TIMEOUT = 30.0


def redis_binary() -> str:
    found = find_binary("redis-server", "/usr/bin", "/usr/sbin")
    if found is None:
        missing("redis-server", "apt-get install redis-server (tests/run does this)")
    assert found is not None
    return found


def _client(port: int, password: str | None = None, **kwargs: Any) -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=5,
                       socket_connect_timeout=5, **kwargs)


@dataclass
class TLSFiles:
    """A CA made with openssl and a server certificate it signed (for 127.0.0.1 and localhost)."""

    ca: Path
    cert: Path
    key: Path


def make_tls_files(folder: Path) -> TLSFiles:
    openssl = find_binary("openssl")
    if openssl is None:
        missing("openssl", "apt-get install openssl")
    assert openssl is not None

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=lockapi test CA",
        "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
        "-out", "server.csr")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
    return TLSFiles(ca=folder / "ca.crt", cert=folder / "server.crt", key=folder / "server.key")


@dataclass
class RedisServer:
    """One redis-server child process. ``restart()`` keeps the port and loses every key."""

    port: int
    folder: Path
    password: str | None = None
    tls: TLSFiles | None = None
    extra_args: Sequence[str] = ()
    process: ServerProcess | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> Any:
        """A plain redis-py client (TLS when the server speaks TLS) for assertions."""
        if self.tls:
            kwargs.update(ssl=True, ssl_ca_certs=str(self.tls.ca))
        return _client(self.port, self.password, **kwargs)

    def argv(self) -> list[str]:
        args = [redis_binary(), "--bind", "127.0.0.1", "--dir", str(self.folder), "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no",
                "--logfile", "", "--loglevel", "notice"]
        if self.tls:
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls.cert),
                     "--tls-key-file", str(self.tls.key), "--tls-ca-cert-file", str(self.tls.ca),
                     "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        return args + list(self.extra_args)

    def start(self) -> None:
        self.process = ServerProcess(self.argv(), log=self.folder / f"redis-{self.port}.log", cwd=self.folder)
        client = self.client()
        try:
            self.process.wait_ready(lambda: bool(client.ping()), STARTUP_TIMEOUT, f"redis-server :{self.port}")
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def restart(self) -> None:
        """Stop and start again on the same port: without persistence every key is gone."""
        self.stop()
        self.start()


@contextlib.contextmanager
def redis_server(*, password: str | None = None, tls: bool = False,
                 extra_args: Sequence[str] = ()) -> Iterator[RedisServer]:
    """A standalone redis-server on a free loopback port, stopped at exit."""
    with temp_dir("redis") as folder:
        server = RedisServer(port=free_port(), folder=folder, password=password,
                             tls=make_tls_files(folder) if tls else None, extra_args=extra_args)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@dataclass
class SentinelGroup:
    """A master, one replica and three sentinels watching the master as ``service``."""

    master: RedisServer
    replica: RedisServer
    sentinel_ports: list[int]
    service: str = "lockapi-master"
    sentinels: list[ServerProcess] = field(default_factory=list, repr=False)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.service}"


@contextlib.contextmanager
def sentinel_group() -> Iterator[SentinelGroup]:
    """Start master, replica and 3 sentinels; wait until the sentinels see the master and replica."""
    with temp_dir("redis-sentinel") as folder:
        mport, rport, *sports = free_ports(5)
        (folder / "m").mkdir()
        (folder / "r").mkdir()
        master = RedisServer(port=mport, folder=folder / "m")
        replica = RedisServer(port=rport, folder=folder / "r", extra_args=["--replicaof", "127.0.0.1", str(mport)])
        group = SentinelGroup(master=master, replica=replica, sentinel_ports=sports)
        try:
            master.start()
            replica.start()
            # "up" only once the initial sync is done: before that, WAIT counts no replica.
            wait_until(lambda: _client(rport).info("replication").get("master_link_status") == "up",
                       STARTUP_TIMEOUT, "the replica to finish its initial sync")
            for port in sports:
                conf = folder / f"sentinel-{port}.conf"
                conf.write_text(
                    f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {folder}\n"
                    f"sentinel monitor {group.service} 127.0.0.1 {mport} 2\n"
                    f"sentinel down-after-milliseconds {group.service} 2000\n"
                    f"sentinel failover-timeout {group.service} 10000\n")
                proc = ServerProcess([redis_binary(), str(conf), "--sentinel"],
                                     log=folder / f"sentinel-{port}.log", cwd=folder)
                group.sentinels.append(proc)
                proc.wait_ready(lambda port=port: bool(_client(port).ping()), STARTUP_TIMEOUT,
                                f"sentinel :{port}")
            for port in sports:
                wait_until(lambda port=port: _client(port).execute_command(
                    "SENTINEL", "REPLICAS", group.service) != [], STARTUP_TIMEOUT,
                    f"sentinel :{port} to discover the replica")
            yield group
        finally:
            for proc in group.sentinels:
                proc.stop()
            replica.stop()
            master.stop()


@dataclass
class RedisCluster:
    """A cluster of ``len(nodes)`` masters, no replicas."""

    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)


def _cluster_ok(node: RedisServer) -> bool:
    client = node.client()
    try:
        info = client.execute_command("CLUSTER INFO")
    finally:
        client.close()
    if isinstance(info, dict):
        return bool(info.get("cluster_state") == "ok")
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "cluster_state:ok" in text


@contextlib.contextmanager
def redis_cluster(masters: int = 3) -> Iterator[RedisCluster]:
    """Start ``masters`` cluster-enabled nodes and join them with ``redis-cli --cluster create``."""
    cli = find_binary("redis-cli", "/usr/bin")
    if cli is None:
        missing("redis-cli", "apt-get install redis-tools (comes with redis-server)")
    assert cli is not None
    with temp_dir("redis-cluster") as folder:
        nodes: list[RedisServer] = []
        try:
            ports = free_ports(2 * masters)  # client ports, then cluster bus ports (not port + 10000)
            for port, bus_port in zip(ports[:masters], ports[masters:], strict=True):
                node_dir = folder / str(port)
                node_dir.mkdir()
                node = RedisServer(port=port, folder=node_dir, extra_args=[
                    "--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf"),
                    "--cluster-port", str(bus_port), "--cluster-node-timeout", "5000"])
                nodes.append(node)
                node.start()
            subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
                            "--cluster-replicas", "0", "--cluster-yes"],
                           check=True, capture_output=True, timeout=60)
            for node in nodes:
                wait_until(lambda node=node: _cluster_ok(node), STARTUP_TIMEOUT,
                           f"cluster node :{node.port} to be ok")
            yield RedisCluster(nodes)
        finally:
            for node in nodes:
                node.stop()
