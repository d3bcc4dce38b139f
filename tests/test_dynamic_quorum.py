"""Dynamic controller quorums (KIP-853): nodes given controller.quorum.bootstrap.servers
instead of controller.quorum.voters, as Apache Kafka 4.x's own server.properties does.
The first voters are found by asking the bootstrap servers; later the voter set changes
only through AddRaftVoter / RemoveRaftVoter, driven here by Kafka's own
kafka-metadata-quorum tool."""

import re
import subprocess
import time

from confluent_kafka import Consumer, Producer

from conftest import KAFKA_SH, Broker, free_port
from test_cluster import create


def quorum_tool(*args, ok=True):
    r = subprocess.run([str(KAFKA_SH), "tool", "org.apache.kafka.tools.MetadataQuorumCommand", *args],
                       capture_output=True, text=True, timeout=120)
    if ok:
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r


def status(bootstrap):
    out = quorum_tool("--bootstrap-server", bootstrap, "describe", "--status").stdout
    voters = re.search(r"CurrentVoters:\s*(\[.*\])", out).group(1)
    observers = re.search(r"CurrentObservers:\s*(\[.*\])", out).group(1)
    return ({int(i) for i in re.findall(r'"id": (\d+)', voters)},
            {int(i) for i in re.findall(r'"id": (\d+)', observers)}, out)


def directory_id(data_dir):
    text = (data_dir / "meta.properties").read_text()
    return re.search(r"^directory\.id=(\S+)$", text, re.M).group(1)


def test_kafka_4_quickstart_server_properties_starts_a_quorum_of_one(tmp_path):
    """Apache Kafka 4.x's config/server.properties (ports changed, every key kept) starts
    ringmq unchanged: its controller.quorum.bootstrap.servers names only this node, so
    it is a quorum of one (Kafka's `format --standalone`). Kafka-only keys are ignored
    with one WARN line naming them; the quorum and the data survive a restart."""
    port, cport = free_port(), free_port()
    props = {
        "process.roles": "broker,controller",
        "node.id": 1,
        "controller.quorum.bootstrap.servers": f"localhost:{cport}",
        "listeners": f"PLAINTEXT://:{port},CONTROLLER://:{cport}",
        "inter.broker.listener.name": "PLAINTEXT",
        "advertised.listeners": f"PLAINTEXT://localhost:{port},CONTROLLER://localhost:{cport}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map":
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
        "num.network.threads": 3,
        "num.io.threads": 8,
        "socket.send.buffer.bytes": 102400,
        "socket.receive.buffer.bytes": 102400,
        "socket.request.max.bytes": 104857600,
        "log.dirs": tmp_path / "kraft-combined-logs",
        "num.partitions": 1,
        "num.recovery.threads.per.data.dir": 1,
        "offsets.topic.replication.factor": 1,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "log.retention.hours": 168,
        "log.segment.bytes": 1073741824,
        "log.retention.check.interval.ms": 300000,
    }
    b = Broker(tmp_path, properties=props)
    b.expected_log = [r"Kafka broker settings ringmq does not use were ignored"]
    b.start()
    try:
        p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all"})
        for i in range(100):
            p.produce("quickstart-events", value=b"event %d" % i)
        assert p.flush(30) == 0
        voters, observers, _ = status(b.bootstrap)
        assert voters == {1} and observers == set()
        log = b.log_path.read_text()
        assert "num.network.threads" in log and "share.coordinator.state.topic.min.isr" in log
        assert directory_id(b.dir)  # meta.properties, as kafka-storage format writes it
        b.stop()
        b.start()
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "qs", "auto.offset.reset": "earliest"})
        c.subscribe(["quickstart-events"])
        got = []
        deadline = time.time() + 30
        while len(got) < 100 and time.time() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m.value())
        c.close()
        assert got == [b"event %d" % i for i in range(100)]
        assert status(b.bootstrap)[0] == {1}
    finally:
        b.stop()


def test_a_dynamic_quorum_forms_from_its_bootstrap_servers_and_kafkas_tool_changes_its_voters(make_cluster, tmp_path):
    """Three nodes whose controller.quorum.bootstrap.servers names all three form a quorum
    of three. A fourth node (not among the bootstrap servers) joins as an observer and
    serves clients as a broker; `kafka-metadata-quorum add-controller` makes it a voter
    and `remove-controller` (with node 1's directory id, from its meta.properties) takes
    node 1 out. With voters {2, 3, 4}, node 1 and then node 2 are killed: the quorum of
    3 and 4 still elects a controller and commits metadata changes. A wrong directory id
    and a static quorum are refused with Kafka's errors."""
    c = make_cluster(4, dynamic=3).start(brokers=[1, 2, 3])
    voters, observers, out = status(c.brokers[2].bootstrap)
    assert voters == {1, 2, 3} and observers == set(), out

    c.brokers[4].start()
    c.wait_for_brokers(4)
    voters, observers, out = status(c.brokers[4].bootstrap)
    assert voters == {1, 2, 3} and observers == {4}, out
    from conftest import RINGMQ
    described = subprocess.run([str(RINGMQ), "-b", c.brokers[4].bootstrap, "cluster", "describe"],
                               capture_output=True, text=True, timeout=60, check=True).stdout
    assert "voters [1,2,3], observers [4]" in described, described
    create(c.brokers[4].bootstrap, "dyn", partitions=4, rf=3)

    node4 = tmp_path / "node4-controller.properties"
    node4.write_text(
        "process.roles=broker,controller\nnode.id=4\n"
        f"log.dirs={c.brokers[4].dir}\n"
        f"listeners=PLAINTEXT://127.0.0.1:{c.brokers[4].port},CONTROLLER://127.0.0.1:{c.controller_ports[4]}\n"
        "controller.listener.names=CONTROLLER\n")
    out = quorum_tool("--bootstrap-server", c.brokers[1].bootstrap, "--command-config", str(node4),
                      "add-controller").stdout
    assert "Added controller 4" in out, out
    voters, observers, out = status(c.brokers[3].bootstrap)
    assert voters == {1, 2, 3, 4} and observers == set(), out

    wrong = quorum_tool("--bootstrap-server", c.brokers[1].bootstrap, "remove-controller",
                        "--controller-id", "1", "--controller-directory-id", directory_id(c.brokers[2].dir),
                        ok=False)
    assert wrong.returncode != 0 and "VoterNotFound" in wrong.stderr + wrong.stdout, wrong.stderr[-2000:]
    # Through a controller's own listener this time (--bootstrap-controller, KIP-919).
    out = quorum_tool("--bootstrap-controller", f"127.0.0.1:{c.controller_ports[3]}", "remove-controller",
                      "--controller-id", "1", "--controller-directory-id", directory_id(c.brokers[1].dir)).stdout
    assert "Removed" in out and "controller 1" in out, out
    # Node 1, if it led, steps down once the new voter set is committed (Kafka's tool
    # needs the leader among the voters); it stays an observer while it runs.
    c.wait_for(lambda: status(c.brokers[4].bootstrap)[:2] == ({2, 3, 4}, {1}), 30,
               "voters {2, 3, 4} and observer 1")
    for _ in range(5):
        voters, observers, out = status(c.brokers[2].bootstrap)
        assert (voters, observers) == ({2, 3, 4}, {1}), out
        time.sleep(0.5)
    assert directory_id(c.brokers[4].dir) in out

    c.brokers[1].kill9()
    c.brokers[2].kill9()
    # Voters 3 and 4 are a majority of {2, 3, 4}: a controller is elected among them and
    # metadata changes still commit.
    c.wait_for(lambda: status(c.brokers[3].bootstrap)[2].count("LeaderId") > 0
               and re.search(r"LeaderId:\s+([34])\b", status(c.brokers[3].bootstrap)[2]), 30,
               "a controller among nodes 3 and 4")
    create(c.brokers[3].bootstrap, "after", partitions=1, rf=2)
    assert "after" in c.metadata(via=c.brokers[4], topic="after").topics


def test_broker_only_nodes_find_a_dynamic_quorum_of_controller_only_nodes(make_cluster):
    """KRaft's isolated mode with a dynamic quorum: three process.roles=controller nodes
    found through their bootstrap servers, two process.roles=broker nodes that know only
    those addresses. The brokers register, serve clients and keep working when the
    active controller dies."""
    c = make_cluster(2, controllers=3, dynamic=3).start()
    assert sorted(c.metadata().brokers) == [1, 2]
    voters, observers, out = status(c.brokers[1].bootstrap)
    assert voters == {101, 102, 103} and observers == {1, 2}, out
    # A controller-only node answers Kafka's tool on its controller listener.
    out = quorum_tool("--bootstrap-controller", f"127.0.0.1:{c.controllers[102].controller_port}",
                      "describe", "--status").stdout
    assert re.search(r"LeaderId:\s+10[123]\b", out) and out.count('"id": 10') >= 3, out
    active = max(c.controllers.values(), key=lambda n: n.metrics().get("ringmq_active_controller", 0))
    active.kill9()
    create(c.bootstrap, "iso-dyn", partitions=2, rf=2)
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all"})
    for i in range(100):
        p.produce("iso-dyn", value=b"%d" % i)
    assert p.flush(30) == 0


def test_a_static_quorum_refuses_voter_changes(make_cluster, tmp_path):
    c = make_cluster(1).start()
    props = tmp_path / "n2.properties"
    (tmp_path / "n2").mkdir()
    props.write_text(f"process.roles=controller\nnode.id=2\nlog.dirs={tmp_path / 'n2'}\n"
                     "listeners=CONTROLLER://127.0.0.1:1\ncontroller.listener.names=CONTROLLER\n")
    (tmp_path / "n2" / "meta.properties").write_text(
        "version=1\ncluster.id=x\nnode.id=2\ndirectory.id=pJ7AvVz0QfeE4nTxcRjLsg\n")
    r = quorum_tool("--bootstrap-server", c.bootstrap, "--command-config", str(props), "add-controller", ok=False)
    assert r.returncode != 0 and "UnsupportedVersion" in r.stderr + r.stdout, r.stderr[-2000:]


def update_raft_voter(addr, voter_id, directory, host, port, listener="CONTROLLER"):
    """UpdateRaftVoter v0 (key 82), hand-encoded (no Python client has it); returns the
    response's error code."""
    import struct
    import uuid
    import kafka_wire as kw

    def compact(s):
        b = s.encode()
        return bytes([len(b) + 1]) + b
    body = (b"\x00"                                    # ClusterId: null
            + struct.pack(">ii", -1, voter_id)         # CurrentLeaderEpoch, VoterId
            + uuid_bytes(directory)
            + bytes([2]) + compact(listener) + compact(host) + struct.pack(">H", port) + b"\x00"
            + struct.pack(">hh", 0, 1) + b"\x00"        # KRaftVersionFeature
            + b"\x00")
    header = struct.pack(">hhih", 82, 0, 7, 5) + b"tests" + b"\x00"
    s = kw.connect(addr)
    try:
        s.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
        resp = kw.read_frame(s)
    finally:
        s.close()
    correlation, = struct.unpack(">i", resp[:4])
    assert correlation == 7
    _throttle, error = struct.unpack(">ih", resp[5:11])
    return error


def uuid_bytes(kafka_id):
    """A Kafka uuid (url-safe base64 of 16 bytes) as its 16 bytes."""
    import base64
    return base64.urlsafe_b64decode(kafka_id + "==")


def test_a_voter_restarted_on_another_controller_port_updates_its_endpoint(make_cluster):
    """UpdateRaftVoter (KIP-853): node 3 of a dynamic quorum restarts with its controller
    listener on another port and has its endpoint updated in the quorum (as Kafka's
    controllers do), so with node 1 killed, nodes 2 and 3 are still a majority that
    commits metadata. The API itself answers VOTER_NOT_FOUND for a node that is not a
    voter or gives another directory id, and accepts the voter's own endpoint."""
    c = make_cluster(3, dynamic=3).start()
    voters, _, out = status(c.brokers[2].bootstrap)
    assert voters == {1, 2, 3}, out
    b3 = c.brokers[3]
    old, new = c.controller_ports[3], free_port()
    b3.stop()
    b3.config_path.write_text(b3.config_path.read_text().replace(f":{old}", f":{new}"))
    c.controller_ports[3] = new
    b3.start()
    c.wait_for(lambda: f":{new}" in status(c.brokers[1].bootstrap)[2], 30, "node 3's new endpoint")
    assert "this controller's endpoint is updated in the quorum" in b3.log_path.read_text()

    addr = c.brokers[2].bootstrap
    assert update_raft_voter(addr, 9, directory_id(b3.dir), "127.0.0.1", new) == 127  # VOTER_NOT_FOUND
    assert update_raft_voter(addr, 3, directory_id(c.brokers[1].dir), "127.0.0.1", new) == 127
    assert update_raft_voter(addr, 3, directory_id(b3.dir), "127.0.0.1", new) == 0

    c.brokers[1].kill9()
    c.wait_for(lambda: re.search(r"LeaderId:\s+([23])\b", status(c.brokers[2].bootstrap)[2]), 30,
               "a controller among nodes 2 and 3")
    create(c.brokers[2].bootstrap, "after-move", partitions=1, rf=2)
    assert "after-move" in c.metadata(via=c.brokers[3], topic="after-move").topics
