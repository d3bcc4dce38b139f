"""A cluster whose brokers replicate over SASL_SSL and whose quorum runs over mutual TLS
(issue 26): the traffic between nodes carries no plaintext record, the brokers
authenticate as their own principal, a broker that cannot log in says so, and the
cluster's kill -9 and rolling-restart tests pass unchanged on it."""
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from test_clients import consume_to_end
from test_cluster import wait_in_sync

ETH_P_ALL = 0x0003


class LoopbackCapture:
    """Every TCP payload on the loopback interface, by port (root's AF_PACKET socket:
    what tcpdump -i lo sees)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.payloads = []  # (src port, dst port, bytes)
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                frame = self.sock.recv(1 << 17)
            except socket.timeout:
                continue
            if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00":
                continue
            ip = frame[14:]
            ihl = (ip[0] & 0x0F) * 4
            if ip[9] != 6:  # TCP
                continue
            total = struct.unpack("!H", ip[2:4])[0]
            tcp = ip[ihl:total]
            if len(tcp) < 20:
                continue
            sport, dport = struct.unpack("!HH", tcp[:4])
            data = tcp[(tcp[12] >> 4) * 4:]
            if data:
                self.payloads.append((sport, dport, bytes(data)))

    def stop(self):
        self.running = False
        self.thread.join()
        self.sock.close()

    def stream(self, ports):
        """The payload bytes of every packet to or from one of `ports`, concatenated."""
        return b"".join(d for s, p, d in self.payloads if s in ports or p in ports)


def test_replication_and_the_quorum_carry_no_plaintext_between_brokers(make_cluster):
    c = make_cluster(3, secure=True).start()
    topic = "secret-orders"
    marker = b"PLAINTEXT-RECORD-MARKER-7f3a"
    capture = LoopbackCapture()
    try:
        admin = AdminClient({"bootstrap.servers": c.bootstrap})
        admin.create_topics([NewTopic(topic, 3, 3, config={"min.insync.replicas": "2"})])[topic].result(30)
        p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "linger.ms": 5})
        n = 3000
        for i in range(n):
            p.produce(topic, marker + b"-%06d" % i, key=b"k%d" % i)
            if i % 500 == 0:
                p.poll(0)
        assert p.flush(60) == 0
        # Every replica caught up: the followers fetched all of it through INTERNAL.
        wait_in_sync(c, topic, 3, timeout=60)
        records = consume_to_end(c.bootstrap, topic, 3)
        assert len(records) == n
    finally:
        capture.stop()

    internal = set(c.internal_ports.values())
    controller = set(c.controller_ports.values())
    clients = {b.port for b in c.brokers.values()}
    client_bytes = capture.stream(clients)
    internal_bytes = capture.stream(internal)
    controller_bytes = capture.stream(controller)
    # The capture works: the clients' own PLAINTEXT listener shows the records in clear.
    assert marker in client_bytes
    # Replication moved at least the records' volume twice (two followers), all of it
    # as TLS records (content type 23, version 3.3) with no record in clear.
    assert len(internal_bytes) > 2 * n * len(marker), len(internal_bytes)
    assert b"\x17\x03\x03" in internal_bytes
    assert marker not in internal_bytes
    assert topic.encode() not in internal_bytes
    # The quorum's metadata (the topic's name in its records) is encrypted too.
    assert b"\x17\x03\x03" in controller_bytes
    assert topic.encode() not in controller_bytes
    assert b"RegisterBroker" not in controller_bytes and b"Append" not in controller_bytes


def test_a_broker_with_a_wrong_inter_broker_password_says_why_and_does_not_replicate(make_cluster):
    c = make_cluster(3, secure=True)
    b3 = c.brokers[3]
    lines = [l for l in b3.config_path.read_text().splitlines()
             # Broker 3 does not create the broker user with its password: the others do.
             if not l.startswith(("listener.name.internal.scram-sha-512.sasl.jaas.config=",
                                  "ringmq.sasl.initial.user"))]
    lines.append("listener.name.internal.scram-sha-512.sasl.jaas.config="
                 "org.apache.kafka.common.security.scram.ScramLoginModule required "
                 'username="broker" password="not-the-password";')
    b3.config_path.write_text("\n".join(lines) + "\n")
    b3.expected_log += [r"cannot connect to another broker's inter-broker listener",
                        r"authentication failed|SASL authentication"]
    for b in c.brokers.values():
        b.expected_log += [r"authentication failed|SASL authentication"]
    c.start()
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    topic = "needs-three"
    # Leaders on brokers 1 and 2 only: broker 3 follows and cannot fetch.
    admin.create_topics([NewTopic(topic, num_partitions=2, replica_assignment=[[1, 3], [2, 3]])])[topic].result(30)
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "1"})
    for i in range(100):
        p.produce(topic, b"v%d" % i)
    assert p.flush(30) == 0

    def said_why():
        return any("cannot connect to another broker's inter-broker listener" in l
                   and "SASL login as User:broker" in l for l in b3.log_path.read_text().splitlines())

    c.wait_for(said_why, timeout=30, what="broker 3's ERROR about its refused login")
    time.sleep(4)  # past replica.lag.time.max.ms: broker 3 fell out of every ISR
    md = c.metadata(topic=topic).topics[topic]
    assert all(3 not in part.isrs for part in md.partitions.values()), \
        {i: part.isrs for i, part in md.partitions.items()}


def test_the_cluster_kill9_and_rolling_restart_tests_pass_unchanged_over_sasl_ssl_and_mtls(tmp_path):
    """Runs test_cluster.py's kill -9, controller-kill and rolling-restart tests with
    RINGMQ_TEST_CLUSTER_SECURITY=1: every cluster they make replicates over SASL_SSL and
    runs its quorum over mutual TLS."""
    tests = Path(__file__).resolve().parent
    selected = ["test_kill9_of_leaders_in_a_loop_loses_no_acknowledged_message",
                "test_killing_the_active_controller_keeps_the_cluster_working",
                "test_sigterm_moves_leadership_before_exiting",
                "test_restarted_follower_catches_up_and_rejoins_the_isr"]
    env = {**os.environ, "RINGMQ_TEST_CLUSTER_SECURITY": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "inner"),
         str(tests / "test_cluster.py"), "-k", " or ".join(selected)],
        env=env, cwd=tests.parent, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert f"{len(selected)} passed" in run.stdout, run.stdout[-2000:]
