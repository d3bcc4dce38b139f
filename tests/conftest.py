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
RINGMQ = RINGMQD.with_name("ringmq")


# A panic in any broker thread: the panic hook's ERROR line, or the default hook's
# message should the hook not be installed yet (a panic while starting).
PANIC_LINE = re.compile(r"PANIC:|panicked at")


def _ephemeral_low():
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PORTS_TAKEN = set()


def free_port():
    """A port below the kernel's ephemeral range: a broker restarted on it later cannot
    find it taken by some client connection's local port."""
    import random
    low = _ephemeral_low()
    for _ in range(1000):
        port = random.randrange(10000, max(low, 10001))
        if port in _PORTS_TAKEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_TAKEN.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, tmp: Path, extra_args=(), properties=None, host="127.0.0.1", netns=None):
        self.dir = tmp / "data"
        self.host = host
        self.netns = netns
        self.port = free_port()
        self.http_port = free_port()
        # A test that names its listeners in `properties` gets exactly those (the first
        # is the bootstrap); otherwise one PLAINTEXT listener on a free port.
        self.own_listeners = bool(properties and "listeners" in properties)
        if self.own_listeners:
            first = properties["listeners"].split(",")[0].split("://")[-1]
            self.port = int(first.rsplit(":", 1)[1])
        self.bootstrap = f"{host}:{self.port}"
        self.extra_args = list(extra_args)
        self.log_path = tmp / "ringmqd.log"
        self.config_path = None
        if properties:
            self.config_path = tmp / "server.properties"
            self.config_path.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
        self.proc = None
        self.expected_log = []
        # A controller-only node has no Kafka listener to wait for.
        self.serves_kafka = True

    def start(self):
        listen = [] if self.own_listeners else ["--listen", self.bootstrap]
        args = [str(RINGMQD), "--data-dir", str(self.dir), *listen,
                "--http", f"{self.host}:{self.http_port}", *self.extra_args]
        if self.config_path:
            args += ["--config", str(self.config_path)]
        if self.netns:
            args = ["ip", "netns", "exec", self.netns, *args]
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "RINGMQ_LOG": os.environ.get("RINGMQ_TEST_LOG", "info")})
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ringmqd exited: {self.log_path.read_text()}")
            try:
                # The admin HTTP listener starts just after the Kafka one.
                for port in ((self.port,) if self.serves_kafka else ()) + (self.http_port,):
                    socket.create_connection((self.host, port), timeout=0.2).close()
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
        text = urllib.request.urlopen(f"http://{self.host}:{self.http_port}/metrics", timeout=5).read().decode()
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


def close_clients():
    """Destroys the Kafka clients the test left open before its brokers stop: a
    librdkafka producer or consumer nobody closed would otherwise retry the stopped
    brokers for the rest of the session, filling the output with connection errors."""
    import gc
    gc.collect()


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
    close_clients()
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
                        r"unclean leader election", r"controlled shutdown did not finish"]


class Cluster:
    """N ringmqd processes on 127.0.0.1, each a broker and a controller-quorum voter
    (KRaft combined mode), with their own ports and data directories; or, with
    `controllers=K`, N broker-only nodes (ids 1..N) following K controller-only nodes
    (ids 101..), KRaft's isolated mode."""

    def __init__(self, tmp: Path, n: int, properties=None, network=None, controllers=0, racks=None,
                 dynamic=0, secure=None):
        """With `network` (a Netns), node N runs in its own network namespace at
        network.ip(N), so a test can cut it off. `racks[i]` is broker i+1's broker.rack.
        With `dynamic=K` the quorum is dynamic (KIP-853): every node is given
        controller.quorum.bootstrap.servers naming the controllers of nodes 1..K (or the
        first K controller-only nodes) instead of controller.quorum.voters.

        `secure=True` (or RINGMQ_TEST_CLUSTER_SECURITY=1 in the environment, which runs
        any cluster test this way unchanged): the brokers replicate over an INTERNAL
        SASL_SSL listener (SCRAM-SHA-512 as User:broker) and the quorum runs over an SSL
        controller listener with mutual TLS; clients keep the PLAINTEXT listener."""
        if secure is None:
            secure = os.environ.get("RINGMQ_TEST_CLUSTER_SECURITY") == "1"
        self.secure = secure
        self.internal_ports = {}
        ports = [(free_port(), free_port()) for _ in range(n)]
        hosts = [network.ip(i + 1) if network else "127.0.0.1" for i in range(n)]
        cports = [free_port() for _ in range(controllers)]
        if controllers:
            voters = ",".join(f"{101 + i}@127.0.0.1:{c}" for i, c in enumerate(cports))
        else:
            voters = ",".join(f"{i + 1}@{hosts[i]}:{c}" for i, (_, c) in enumerate(ports))
        self.brokers = {}
        self.controllers = {}
        self.network = network
        quorum = {"controller.quorum.voters": voters}
        if dynamic and controllers:
            quorum = {"controller.quorum.bootstrap.servers":
                      ",".join(f"127.0.0.1:{c}" for c in cports[:dynamic])}
        elif dynamic:
            quorum = {"controller.quorum.bootstrap.servers":
                      ",".join(f"{hosts[i]}:{c}" for i, (_, c) in enumerate(ports[:dynamic]))}
        self.controller_ports = {i + 1: c for i, (_, c) in enumerate(ports)}
        common = {
            **quorum,
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "broker.heartbeat.interval.ms": 200,
            "broker.session.timeout.ms": 1500,
            "replica.lag.time.max.ms": 3000,
            "ringmq.shards": 1,
        }
        if secure:
            from certs import Certs
            certs = Certs(tmp / "cluster-certs")
            self.certs = certs
            node_keystore = certs.server_keystore("node-keystore.pem", "localhost", client=True)
            common.update({
                "listener.security.protocol.map": "CONTROLLER:SSL,PLAINTEXT:PLAINTEXT,INTERNAL:SASL_SSL",
                "inter.broker.listener.name": "INTERNAL",
                "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
                "listener.name.internal.sasl.enabled.mechanisms": "SCRAM-SHA-512",
                "listener.name.internal.scram-sha-512.sasl.jaas.config":
                    'org.apache.kafka.common.security.scram.ScramLoginModule required '
                    'username="broker" password="broker-secret";',
                "ringmq.sasl.initial.user": "broker",
                "ringmq.sasl.initial.user.password": "broker-secret",
                "ssl.keystore.location": node_keystore,
                "ssl.key.password": certs.KEY_PASSWORD,
                "ssl.truststore.location": certs.ca,
                "listener.name.controller.ssl.client.auth": "required",
            })
        for i, (port, cport) in enumerate(ports):
            node = i + 1
            host = hosts[i]
            d = tmp / f"node{node}"
            d.mkdir(exist_ok=True)
            if controllers:
                roles, listeners = "broker", f"PLAINTEXT://{host}:{port}"
            else:
                roles, listeners = "broker,controller", f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}"
            if secure:
                self.internal_ports[node] = free_port()
                listeners += f",INTERNAL://{host}:{self.internal_ports[node]}"
            props = {"process.roles": roles, "node.id": node, "listeners": listeners,
                     **common, **(properties or {})}
            if racks:
                props["broker.rack"] = racks[i]
            b = Broker(d, properties=props, host=host, netns=network.name(node) if network else None)
            b.port = port
            b.bootstrap = f"{host}:{port}"
            b.node_id = node
            b.controller_port = None if controllers else cport
            b.expected_log = list(CLUSTER_EXPECTED_LOG)
            self.brokers[node] = b
        for i, cport in enumerate(cports):
            node = 101 + i
            d = tmp / f"controller{node}"
            d.mkdir(exist_ok=True)
            props = {"process.roles": "controller", "node.id": node,
                     "listeners": f"CONTROLLER://127.0.0.1:{cport}", **common, **(properties or {})}
            props.pop("inter.broker.listener.name", None)
            c = Broker(d, properties=props)
            c.serves_kafka = False
            c.node_id = node
            c.controller_port = cport
            c.expected_log = list(CLUSTER_EXPECTED_LOG)
            self.controllers[node] = c

    @property
    def bootstrap(self):
        return ",".join(b.bootstrap for b in self.brokers.values())

    def start(self, brokers=None):
        """Starts the controllers and `brokers` (ids; default all), and waits for them."""
        for c in self.controllers.values():
            c.start()
        ids = brokers or list(self.brokers)
        for i in ids:
            self.brokers[i].start()
        self.wait_for_brokers(len(ids))
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
        # All brokers at once: each asks for a controlled shutdown; those left without a
        # quorum give up on it after one failed heartbeat. Controller-only nodes last, so
        # the brokers' controlled shutdowns find a controller.
        for group in (list(self.brokers.values()), list(self.controllers.values())):
            for b in group:
                if b.proc and b.proc.poll() is None:
                    b.proc.terminate()
            for b in group:
                b.stop()


class Netns:
    """One network namespace per node, joined by a bridge in the root namespace (where
    the tests' clients run): `cut(n)` takes node n off the network, `heal(n)` puts it
    back. Needs root (the test command runs as root on the CI machines)."""

    def __init__(self, nodes: int):
        import random
        self.tag = f"rq{os.getpid() % 1000}{random.randrange(100)}"
        self.subnet = f"10.{random.randrange(100, 250)}.{random.randrange(1, 250)}"
        self.nodes = nodes
        self.bridge = f"{self.tag}br"
        self._run("ip", "link", "add", self.bridge, "type", "bridge")
        self._run("ip", "addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
        self._run("ip", "link", "set", self.bridge, "up")
        for n in range(1, nodes + 1):
            ns, veth = self.name(n), self.veth(n)
            self._run("ip", "netns", "add", ns)
            self._run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self._run("ip", "link", "set", veth, "master", self.bridge, "up")
            self._run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{self.ip(n)}/24", "dev", "eth0")
            self._run("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
            self._run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")

    @staticmethod
    def _run(*args):
        subprocess.run(args, check=True, capture_output=True, timeout=30)

    def name(self, n):
        return f"{self.tag}n{n}"

    def veth(self, n):
        return f"{self.tag}v{n}"

    def ip(self, n):
        return f"{self.subnet}.{n}"

    def cut(self, n):
        self._run("ip", "link", "set", self.veth(n), "down")

    def heal(self, n):
        self._run("ip", "link", "set", self.veth(n), "up")

    def close(self):
        for n in range(1, self.nodes + 1):
            subprocess.run(["ip", "netns", "del", self.name(n)], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


def netns_available():
    try:
        Netns(1).close()
        return True
    except (subprocess.CalledProcessError, FileNotFoundError):
        return False


@pytest.fixture
def make_cluster(tmp_path):
    clusters = []

    def make(n=3, properties=None, network=None, controllers=0, racks=None, dynamic=0, secure=None):
        c = Cluster(tmp_path, n, properties, network, controllers, racks, dynamic, secure)
        clusters.append(c)
        return c

    yield make
    close_clients()
    for c in clusters:
        c.stop()
        if c.network:
            c.network.close()
    for c in clusters:
        for b in [*c.brokers.values(), *c.controllers.values()]:
            bad = b.unexpected_log_lines()
            assert not bad, f"unexpected ERROR/WARN in node {b.node_id}'s log:\n" + "\n".join(bad[:20])
