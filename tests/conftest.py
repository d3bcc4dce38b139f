"""Fixtures for ringmq's end-to-end tests: real ringmqd processes on loopback.

Each test gets a fresh broker (its own data dir and free ports). Its log is checked at the
end: an ERROR or WARN line the test did not declare expected fails the test.
"""
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RINGMQD = Path(os.environ.get("RINGMQD", ROOT / "target" / "release" / "ringmqd"))


# A panic in any broker thread: the panic hook's ERROR line, or the default hook's
# message should the hook not be installed yet (a panic while starting).
PANIC_LINE = re.compile(r"PANIC:|panicked at")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, tmp: Path, extra_args=(), properties=None):
        self.dir = tmp / "data"
        self.port = free_port()
        self.http_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.extra_args = list(extra_args)
        self.log_path = tmp / "ringmqd.log"
        self.config_path = None
        if properties:
            self.config_path = tmp / "server.properties"
            self.config_path.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
        self.proc = None
        self.expected_log = []

    def start(self):
        args = [str(RINGMQD), "--data-dir", str(self.dir), "--listen", self.bootstrap,
                "--http", f"127.0.0.1:{self.http_port}", *self.extra_args]
        if self.config_path:
            args += ["--config", str(self.config_path)]
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "RINGMQ_LOG": "info"})
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ringmqd exited: {self.log_path.read_text()}")
            try:
                # The admin HTTP listener starts just after the Kafka one.
                for port in (self.port, self.http_port):
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("ringmqd did not start listening")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alive(self):
        return self.proc.poll() is None

    def metrics(self):
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5).read().decode()
        return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+) ([0-9.e+-]+)$", text, re.M)}

    def unexpected_log_lines(self):
        """ERROR/WARN lines the test did not expect, and every panic (never expectable)."""
        bad = []
        for line in self.log_path.read_text().splitlines():
            if PANIC_LINE.search(line):
                bad.append(line)
            elif re.search(r"\b(ERROR|WARN)\b", line) and not any(re.search(p, line) for p in self.expected_log):
                bad.append(line)
        return bad


@pytest.fixture
def make_broker(tmp_path):
    brokers = []

    def make(extra_args=(), properties=None, name="b"):
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        b = Broker(d, extra_args, properties)
        brokers.append(b)
        return b

    yield make
    for b in brokers:
        b.stop()
    for b in brokers:
        bad = b.unexpected_log_lines()
        assert not bad, "unexpected ERROR/WARN in ringmqd log:\n" + "\n".join(bad[:20])


@pytest.fixture
def broker(make_broker):
    return make_broker().start()


KAFKA_SH = ROOT / "benches" / "peer" / "kafka.sh"


@pytest.fixture(scope="session")
def kafka_peer(tmp_path_factory):
    """Apache Kafka as the reference answer: the bootstrap of a session-wide Kafka 4.x
    (benches/peer/kafka.sh: one KRaft node, 512 MB heap, jars from Maven Central) that
    tests send the same request to, beside ringmq."""
    import shutil
    if not shutil.which("java") or not shutil.which("mvn"):
        pytest.fail("Java and Maven are required for the Apache Kafka peer (the test command installs them)")
    d = tmp_path_factory.mktemp("kafka-peer")
    port = free_port()
    while port + 1 > 65535:   # the controller listens on port + 1
        port = free_port()
    subprocess.run([str(KAFKA_SH), "start", str(d), str(port), "512m"], check=True, timeout=300)
    yield f"127.0.0.1:{port}"
    subprocess.run([str(KAFKA_SH), "stop", str(d)], timeout=60)


# What a cluster member logs at WARN when peers die on purpose: Raft's view of an
# unreachable voter, fencing, ISR shrinking.
CLUSTER_EXPECTED_LOG = [r"openraft", r"broker session expired", r"shrinking the ISR",
                        r"unclean leader election"]


class Cluster:
    """N ringmqd processes on 127.0.0.1, each a broker and a controller-quorum voter
    (KRaft combined mode), with their own ports and data directories."""

    def __init__(self, tmp: Path, n: int, properties=None):
        ports = [(free_port(), free_port()) for _ in range(n)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
        self.brokers = {}
        for i, (port, cport) in enumerate(ports):
            node = i + 1
            d = tmp / f"node{node}"
            d.mkdir(exist_ok=True)
            props = {
                "process.roles": "broker,controller",
                "node.id": node,
                "controller.quorum.voters": voters,
                "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
                "controller.listener.names": "CONTROLLER",
                "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                "broker.heartbeat.interval.ms": 200,
                "broker.session.timeout.ms": 1500,
                "replica.lag.time.max.ms": 3000,
                "ringmq.shards": 1,
                **(properties or {}),
            }
            b = Broker(d, properties=props)
            b.port = port
            b.bootstrap = f"127.0.0.1:{port}"
            b.node_id = node
            b.expected_log = list(CLUSTER_EXPECTED_LOG)
            self.brokers[node] = b

    @property
    def bootstrap(self):
        return ",".join(b.bootstrap for b in self.brokers.values())

    def start(self):
        for b in self.brokers.values():
            b.start()
        self.wait_for_brokers(len(self.brokers))
        return self

    def live(self):
        return [b for b in self.brokers.values() if b.proc and b.alive()]

    def metadata(self, via=None, topic=None):
        from confluent_kafka.admin import AdminClient
        bootstrap = (via or self.live()[0]).bootstrap
        admin = AdminClient({"bootstrap.servers": bootstrap})
        return admin.list_topics(topic=topic, timeout=10)

    def wait_for_brokers(self, n, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if all(len(self.metadata(via=b).brokers) == n for b in self.live()):
                    return
            except Exception:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the cluster did not reach {n} live brokers")

    def leader(self, topic, partition):
        return self.metadata(topic=topic).topics[topic].partitions[partition].leader

    def wait_for(self, predicate, timeout=30, what="condition"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if predicate():
                    return
            except Exception:
                pass
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    def stop(self):
        for b in self.brokers.values():
            b.stop()


@pytest.fixture
def make_cluster(tmp_path):
    clusters = []

    def make(n=3, properties=None):
        c = Cluster(tmp_path, n, properties)
        clusters.append(c)
        return c

    yield make
    for c in clusters:
        c.stop()
    for c in clusters:
        for b in c.brokers.values():
            bad = b.unexpected_log_lines()
            assert not bad, f"unexpected ERROR/WARN in node {b.node_id}'s log:\n" + "\n".join(bad[:20])
