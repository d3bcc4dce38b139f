"""A replicated cluster of three real ringmqd processes (KRaft combined mode on 127.0.0.1):
the controller quorum, replication byte for byte, ISR and high watermark, failover on
kill -9 of leaders and of the active controller, follower catch-up, controlled shutdown,
and stock clients bootstrapping from any broker."""
import hashlib
import random
import re
import subprocess
import threading
import time
from collections import defaultdict

import kafka
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from test_clients import consume_to_end


def create(bootstrap, name, partitions=3, rf=3, config=None):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=rf,
                                        config=config or {})])
    fut[name].result(20)


def logs_of(cluster, topic, partition):
    """Each live replica's segment bytes of a partition (sha256 of the concatenated logs)."""
    out = {}
    for b in cluster.live():
        d = b.dir / f"{topic}-{partition}"
        if not d.is_dir():
            continue
        h = hashlib.sha256()
        for f in sorted(d.glob("*.log")):
            h.update(f.read_bytes())
        out[b.node_id] = h.hexdigest()
    return out


def wait_in_sync(cluster, topic, partitions, replicas=3, timeout=30):
    """Every running broker's metadata shows full ISRs (a broker that was cut off may
    still answer with what it knew before, as a Kafka broker would)."""
    def full():
        for b in cluster.live():
            md = cluster.metadata(via=b, topic=topic).topics[topic]
            if not all(len(md.partitions[p].isrs) == replicas for p in range(partitions)):
                return False
        return True
    cluster.wait_for(full, timeout, f"{topic}'s ISR to hold {replicas} replicas on every broker")


class Checker:
    """An idempotent acks=all producer that records every acknowledged message."""

    def __init__(self, bootstrap, topic):
        self.acked = {}
        self.errors = []
        self.stop = threading.Event()
        self.topic = topic
        self.bootstrap = bootstrap
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        p = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "enable.idempotence": True,
                      "linger.ms": 2, "message.timeout.ms": 30000, "retry.backoff.ms": 50,
                      "topic.metadata.refresh.interval.ms": 1000})

        def report(err, m):
            if err is None:
                self.acked[(m.partition(), m.offset())] = m.value()
            else:
                self.errors.append(str(err))

        i = 0
        while not self.stop.is_set():
            try:
                p.produce(self.topic, value=f"m{i}".encode(), on_delivery=report)
                i += 1
            except BufferError:
                pass
            p.poll(0.001)
            if i % 200 == 0:
                time.sleep(0.01)
        assert p.flush(60) == 0, "producer could not deliver everything"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(90)


def check_no_loss(cluster, topic, partitions, acked):
    got = consume_to_end(cluster.bootstrap, topic, partitions)
    stored = {(g[0], g[1]): g[3] for g in got}
    lost = [k for k, v in acked.items() if stored.get(k) != v]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged messages lost or changed, e.g. {lost[:5]}"
    values = [g[3] for g in got]
    dups = len(values) - len(set(values))
    assert dups == 0, f"{dups} duplicated messages"
    # Order per partition: the producer's sequence numbers only grow.
    per = defaultdict(list)
    for partition, offset, _, value, _ in sorted(got):
        per[partition].append(int(value[1:]))
    for partition, seq in per.items():
        assert seq == sorted(seq), f"partition {partition} out of order"
    return got


def test_three_brokers_form_one_cluster_and_replicate_byte_for_byte(make_cluster):
    c = make_cluster(3).start()
    for b in c.brokers.values():
        md = c.metadata(via=b)
        assert sorted(md.brokers) == [1, 2, 3]
        assert md.controller_id in (1, 2, 3)
    create(c.brokers[2].bootstrap, "rep", partitions=3, rf=3)
    md = c.metadata(topic="rep").topics["rep"]
    leaders = sorted(md.partitions[p].leader for p in range(3))
    assert leaders == [1, 2, 3], f"leaders not spread: {leaders}"
    for p in range(3):
        assert sorted(md.partitions[p].replicas) == [1, 2, 3]
    p = Producer({"bootstrap.servers": c.brokers[3].bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(3000):
        p.produce("rep", value=f"v{i}".encode() * 10, partition=i % 3)
    assert p.flush(30) == 0
    wait_in_sync(c, "rep", 3)
    for part in range(3):
        c.wait_for(lambda: len(set(logs_of(c, "rep", part).values())) == 1, 10,
                   f"partition {part}'s replicas to hold the same bytes")
    # Every client family bootstraps from any one broker.
    for b in c.brokers.values():
        got = consume_to_end(b.bootstrap, "rep", 3)
        assert len(got) == 3000
        kc = kafka.KafkaConsumer("rep", bootstrap_servers=b.bootstrap, auto_offset_reset="earliest",
                                 consumer_timeout_ms=2000, group_id=None)
        assert sum(1 for _ in kc) == 3000
        kc.close()
        out = subprocess.run(["kcat", "-b", b.bootstrap, "-C", "-t", "rep", "-e", "-q"],
                             capture_output=True, check=True, timeout=60).stdout
        assert len(out.splitlines()) == 3000


def test_acks_all_needs_min_insync_replicas(make_cluster):
    c = make_cluster(3).start()
    create(c.bootstrap, "minisr", partitions=1, rf=3, config={"min.insync.replicas": "3"})
    leader = c.leader("minisr", 0)
    follower = next(n for n in (1, 2, 3) if n != leader)
    c.brokers[follower].kill9()
    c.wait_for(lambda: len(c.metadata(topic="minisr").topics["minisr"].partitions[0].isrs) == 2,
               20, "the ISR to shrink")
    errors = []
    p = Producer({"bootstrap.servers": c.brokers[leader].bootstrap, "acks": "all",
                  "message.timeout.ms": 3000, "retries": 0})
    p.produce("minisr", value=b"x", on_delivery=lambda err, m: errors.append(err))
    p.flush(10)
    assert errors and errors[0] is not None and errors[0].name() == "NOT_ENOUGH_REPLICAS", errors
    ok = []
    p1 = Producer({"bootstrap.servers": c.brokers[leader].bootstrap, "acks": "1"})
    p1.produce("minisr", value=b"y", on_delivery=lambda err, m: ok.append(err))
    p1.flush(10)
    assert ok == [None]


class GroupReader:
    """A consumer-group member that keeps consuming (auto-commit) until stopped."""

    def __init__(self, bootstrap, topic, group):
        self.values = set()
        self.stop = threading.Event()
        self.conf = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                     "auto.commit.interval.ms": 200, "topic.metadata.refresh.interval.ms": 1000}
        self.topic = topic
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        cons = Consumer(self.conf)
        cons.subscribe([self.topic])
        while not self.stop.is_set():
            m = cons.poll(0.2)
            if m is not None and not m.error():
                self.values.add(m.value())
        cons.close()


def test_kill9_of_leaders_in_a_loop_loses_no_acknowledged_message(make_cluster):
    c = make_cluster(3).start()
    create(c.bootstrap, "failover", partitions=3, rf=3, config={"min.insync.replicas": "2"})
    rng = random.Random(11)
    rounds = 5
    reader = GroupReader(c.bootstrap, "failover", "failover-readers")
    reader.thread.start()
    with Checker(c.bootstrap, "failover") as chk:
        for rnd in range(rounds):
            time.sleep(0.5 + rng.random())
            victim = c.leader("failover", rnd % 3)
            before = len(chk.acked)
            t0 = time.time()
            c.brokers[victim].kill9()
            c.wait_for(lambda: len(chk.acked) > before + 50, 30, "acknowledgements after the failover")
            failover_s = time.time() - t0
            c.brokers[victim].start()
            wait_in_sync(c, "failover", 3, timeout=60)
            print(f"round {rnd}: killed broker {victim}, acks resumed in {failover_s:.2f}s")
    assert len(chk.acked) > 1000, f"only {len(chk.acked)} acknowledgements"
    check_no_loss(c, "failover", 3, chk.acked)
    # The consumer group kept consuming through every failover (at least once).
    wanted = set(chk.acked.values())
    c.wait_for(lambda: wanted <= reader.values, 60, "the group to consume every acknowledged message")
    reader.stop.set()
    reader.thread.join(20)
    for part in range(3):
        c.wait_for(lambda: len(set(logs_of(c, "failover", part).values())) == 1, 20,
                   f"partition {part}'s replicas to converge byte for byte")


def test_killing_the_active_controller_keeps_the_cluster_working(make_cluster):
    c = make_cluster(3).start()
    create(c.bootstrap, "ctl", partitions=3, rf=3, config={"min.insync.replicas": "2"})
    with Checker(c.bootstrap, "ctl") as chk:
        time.sleep(1)
        controller = c.metadata().controller_id
        c.brokers[controller].kill9()
        c.wait_for(lambda: c.metadata().controller_id not in (-1, controller), 30, "a new controller")
        before = len(chk.acked)
        c.wait_for(lambda: len(chk.acked) > before + 100, 30, "acknowledgements under the new controller")
        # The new controller still changes metadata.
        create(c.live()[0].bootstrap, "after", partitions=2, rf=2)
        time.sleep(2)   # the survivors retry the dead voter meanwhile
        c.brokers[controller].start()
        wait_in_sync(c, "ctl", 3, timeout=60)
    check_no_loss(c, "ctl", 3, chk.acked)
    # An unreachable quorum peer is an expected condition: WARN, rate-limited, never ERROR.
    lines = [l for i, b in c.brokers.items() if i != controller for l in b.log_path.read_text().splitlines()]
    assert not [l for l in lines if "ERROR" in l and "Unreachable" in l], \
        [l for l in lines if "ERROR" in l and "Unreachable" in l][:3]
    unreachable = [l for l in lines if "WARN" in l and "quorum peer is unreachable" in l]
    assert unreachable and len(unreachable) <= 6, unreachable[:8]


def test_restarted_follower_catches_up_and_rejoins_the_isr(make_cluster):
    c = make_cluster(3).start()
    create(c.bootstrap, "catchup", partitions=1, rf=3)
    leader = c.leader("catchup", 0)
    follower = next(n for n in (1, 2, 3) if n != leader)
    c.brokers[follower].kill9()
    p = Producer({"bootstrap.servers": c.brokers[leader].bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(20000):
        p.produce("catchup", value=b"z" * 200)
        if i % 5000 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    c.wait_for(lambda: follower not in c.metadata(topic="catchup").topics["catchup"].partitions[0].isrs,
               20, "the dead follower to leave the ISR")
    c.brokers[follower].start()
    wait_in_sync(c, "catchup", 1, timeout=60)
    c.wait_for(lambda: len(set(logs_of(c, "catchup", 0).values())) == 1, 20, "identical replicas")


def test_replicas_of_topics_deleted_while_a_broker_was_down_are_removed_when_it_returns(make_cluster):
    """Broker 3 is down while topic `gone` is deleted and `again` is deleted and created
    anew under the same name. When it returns it removes both stray replicas (their
    directories are gone once it has caught up) and never serves the old `again`'s
    records as the new topic's: its replica of the new `again` equals the leader's byte
    for byte and holds none of the old records."""
    c = make_cluster(3).start()
    for topic in ("gone", "again"):
        create(c.bootstrap, topic, partitions=1, rf=3)
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(3000):
        p.produce("gone", value=b"old gone %d" % i)
        p.produce("again", value=b"old again %d" % i + b"o" * 100)
    assert p.flush(30) == 0
    c.brokers[3].stop()
    admin = AdminClient({"bootstrap.servers": c.brokers[1].bootstrap})
    for topic, fut in admin.delete_topics(["gone", "again"]).items():
        fut.result(20)
    c.wait_for(lambda: "again" not in c.metadata().topics, 20, "the deletion")
    # Explicitly on all three: broker 3 is registered (fenced) while it is down.
    admin.create_topics([NewTopic("again", num_partitions=1, replica_assignment=[[1, 2, 3]])])["again"].result(20)
    for i in range(100):
        p.produce("again", value=b"new %d" % i)
    assert p.flush(30) == 0
    c.brokers[3].start()
    c.wait_for_brokers(3)
    wait_in_sync(c, "again", 1, timeout=60)
    c.wait_for(lambda: not (c.brokers[3].dir / "gone-0").exists(), 20, "the stray replica of `gone` to go")
    c.wait_for(lambda: len(set(logs_of(c, "again", 0).values())) == 1 and len(logs_of(c, "again", 0)) == 3,
               30, "identical replicas of the new `again`")
    data = b"".join(f.read_bytes() for f in (c.brokers[3].dir / "again-0").glob("*.log"))
    assert b"old again" not in data and b"new 99" in data
    c.brokers[3].expected_log.append(r"removing a stray replica")


def test_sigterm_moves_leadership_before_exiting(make_cluster):
    c = make_cluster(3).start()
    create(c.bootstrap, "rolling", partitions=3, rf=3, config={"min.insync.replicas": "2"})
    with Checker(c.bootstrap, "rolling") as chk:
        for node in (1, 2, 3):
            time.sleep(0.7)
            b = c.brokers[node]
            b.stop()
            md = c.metadata(topic="rolling").topics["rolling"]
            assert all(md.partitions[p].leader != node for p in range(3)), "leadership stayed on a stopped broker"
            b.start()
            wait_in_sync(c, "rolling", 3, timeout=60)
    assert not [e for e in chk.errors], chk.errors[:5]
    check_no_loss(c, "rolling", 3, chk.acked)
    for b in c.brokers.values():
        assert "controlled shutdown did not finish" not in b.log_path.read_text()
    # Each move is logged by the controller that made it: partition, leader, epoch, why.
    moves = [l for b in c.brokers.values() for l in b.log_path.read_text().splitlines()
             if "partition leader changed" in l and "topic=\"rolling\"" in l]
    assert moves and all(re.search(r"leader=-?\d+ previous=-?\d+ leader_epoch=\d+ reason=", l) for l in moves), moves[:3]
    assert any("shutting down" in l for l in moves), moves[:5]


def test_sigterm_of_the_only_in_sync_replica_stops_at_once_and_it_leads_again_on_return(make_cluster):
    """A broker that is the only in-sync replica of a partition (here RF=1) cannot hand its
    leadership to anyone: the controller takes the partition offline (leader -1, ISR kept)
    and lets the broker stop at once, as Kafka's does, instead of it waiting out the
    30 s controlled-shutdown limit. Back, it leads the partition again with its data."""
    c = make_cluster(3).start()
    create(c.bootstrap, "solo", partitions=3, rf=1)
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all"})
    for i in range(300):
        p.produce("solo", value=b"%d" % i, partition=i % 3)
    assert p.flush(30) == 0
    md = c.metadata(topic="solo").topics["solo"]
    part, node = next((i, md.partitions[i].leader) for i in range(3) if md.partitions[i].leader != c.metadata().controller_id)
    b = c.brokers[node]
    t0 = time.monotonic()
    b.proc.terminate()
    b.proc.wait(timeout=20)
    assert time.monotonic() - t0 < 10, f"SIGTERM took {time.monotonic() - t0:.1f} s"
    log = b.log_path.read_text()
    assert "controlled shutdown did not finish" not in log and "shutdown complete" in log
    after = c.metadata(topic="solo").topics["solo"].partitions[part]
    assert (after.leader, after.isrs) == (-1, [node]), (after.leader, after.isrs)
    b.start()
    c.wait_for(lambda: c.leader("solo", part) == node, 30, f"broker {node} leading solo-{part} again")
    consumer = Consumer({"bootstrap.servers": c.bootstrap, "group.id": "solo-check", "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition("solo", part, 0)])
    got = []
    deadline = time.time() + 30
    while len(got) < 100 and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            got.append(int(m.value()))
    consumer.close()
    assert got == [i for i in range(300) if i % 3 == part], got[:10]


def test_consumer_group_survives_the_coordinator_dying(make_cluster):
    c = make_cluster(3).start()
    create(c.bootstrap, "grp", partitions=3, rf=3)
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all"})
    for i in range(300):
        p.produce("grp", value=f"{i}".encode(), partition=i % 3)
    assert p.flush(30) == 0
    conf = {"bootstrap.servers": c.bootstrap, "group.id": "g1", "auto.offset.reset": "earliest",
            "enable.auto.commit": False}
    cons = Consumer(conf)
    cons.subscribe(["grp"])
    seen = 0
    deadline = time.time() + 30
    while seen < 300 and time.time() < deadline:
        m = cons.poll(0.5)
        if m is not None and not m.error():
            seen += 1
    cons.commit(asynchronous=False)
    cons.close()
    assert seen == 300
    # Kill the group's coordinator: the committed offsets live on in the replicas.
    from confluent_kafka.admin import AdminClient as _A
    coordinator = None
    admin = _A({"bootstrap.servers": c.bootstrap})
    for g in admin.describe_consumer_groups(["g1"]).values():
        coordinator = g.result(10).coordinator.id
    c.brokers[coordinator].kill9()
    c.wait_for(lambda: len(c.metadata().brokers) == 2, 20, "the coordinator to be fenced")
    for i in range(300, 330):
        p.produce("grp", value=f"{i}".encode(), partition=i % 3)
    assert p.flush(30) == 0
    cons = Consumer(conf)
    cons.subscribe(["grp"])
    got = []
    deadline = time.time() + 40
    while len(got) < 30 and time.time() < deadline:
        m = cons.poll(0.5)
        if m is not None and not m.error():
            got.append(int(m.value()))
    cons.close()
    assert sorted(got) == list(range(300, 330)), f"resumed at the wrong place: {sorted(got)[:5]}..."
    # The old coordinator returns as a follower of the group's partition: only the new
    # coordinator lists and describes the group (ListGroups goes to every broker).
    from kafka.protocol.admin import ListGroupsRequest
    from kafka_api import build, call
    c.brokers[coordinator].start()
    c.wait_for(lambda: len(c.metadata().brokers) == 3, 30, "the old coordinator to return")

    def listed():
        return {i: [g.group_id for g in call(b.bootstrap, build(ListGroupsRequest, 4, states_filter=[])).groups]
                for i, b in c.brokers.items()}
    # Leadership may move back to the returning broker meanwhile; at no time do two
    # brokers answer for the group.
    deadline = time.time() + 8
    while time.time() < deadline:
        lists = listed()
        assert sum(ids.count("g1") for ids in lists.values()) <= 1, lists
        time.sleep(0.5)
    c.wait_for(lambda: sum(ids.count("g1") for ids in listed().values()) == 1, 20, "the group listed once")

    def described_empty():
        # A new client: librdkafka keeps a group's coordinator for the client's life.
        fresh = _A({"bootstrap.servers": c.bootstrap})
        try:
            return fresh.describe_consumer_groups(["g1"])["g1"].result(10).state.name == "EMPTY"
        except Exception:  # NOT_COORDINATOR while leadership moves
            return False
    c.wait_for(described_empty, 30, "the group described Empty by its coordinator")


def test_kafka_tools_describe_the_quorum_and_the_replicas(make_cluster):
    from conftest import KAFKA_SH
    c = make_cluster(3).start()
    create(c.bootstrap, "tools", partitions=2, rf=3)

    def tool(cls, *args):
        r = subprocess.run([str(KAFKA_SH), "tool", cls, *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout

    status = tool("org.apache.kafka.tools.MetadataQuorumCommand",
                  "--bootstrap-server", c.brokers[2].bootstrap, "describe", "--status")
    controller = c.metadata().controller_id
    assert f"LeaderId:               {controller}" in status, status
    assert "CurrentVoters:" in status and all(f"\"id\": {n}" in status or f"{n}" in status for n in (1, 2, 3))
    desc = tool("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", c.brokers[3].bootstrap,
                "--describe", "--topic", "tools")
    lines = [line for line in desc.splitlines() if "Partition:" in line]
    assert len(lines) == 2, desc
    for line in lines:
        assert "Replicas: " in line and "Isr: " in line
        replicas = line.split("Replicas: ")[1].split()[0].split(",")
        assert sorted(replicas) == ["1", "2", "3"], line
    under = tool("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", c.bootstrap,
                 "--describe", "--under-replicated-partitions")
    assert "tools" not in under


def test_ringmq_cluster_start_runs_a_local_cluster(tmp_path):
    import os
    import signal
    from conftest import ROOT, free_port
    ringmq = ROOT / "target" / "release" / "ringmq"
    base = free_port()
    while any(not _free(p) for p in (base, base + 1, base + 2, base + 100, base + 101, base + 102)):
        base = free_port()
    proc = subprocess.Popen([str(ringmq), "cluster", "start", "--brokers", "3", "--dir", str(tmp_path / "c"),
                             "--base-port", str(base)], stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.time() + 60
        while time.time() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("bootstrap.servers="):
                break
        bootstrap = lines[-1].strip().split("=", 1)[1]
        assert bootstrap == ",".join(f"127.0.0.1:{base + i}" for i in range(3))
        out = subprocess.run([str(ringmq), "-b", bootstrap, "cluster", "describe"], capture_output=True,
                             text=True, timeout=60, check=True).stdout
        assert "(active controller)" in out and "under-replicated: 0" in out, out
        assert "voters [1,2,3], observers []" in out, out
        for n in (1, 2, 3):
            assert f"127.0.0.1:{base + n - 1}" in out
        subprocess.run([str(ringmq), "-b", bootstrap, "topic", "create", "t", "-p", "3", "-r", "3"],
                       check=True, timeout=60)
        subprocess.run([str(ringmq), "-b", bootstrap, "produce", "t"], input="a\nb\nc\n", text=True,
                       check=True, timeout=60)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    for n in (1, 2, 3):
        log = (tmp_path / "c" / f"node{n}" / "ringmqd.log").read_text()
        assert "shutdown complete" in log
        assert "PANIC" not in log
        # Replication factor 3 on 3 brokers: every node holds every partition.
        assert all(os.path.isdir(tmp_path / "c" / f"node{n}" / "data" / f"t-{p}") for p in range(3))


def _free(port):
    import socket
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


ISOLATED_PRODUCER = r'''
import json, sys
from confluent_kafka import Producer
bootstrap, topic = sys.argv[1], sys.argv[2]
out = {}
for acks in ("all", "1"):
    acked = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": acks, "message.timeout.ms": 4000,
                  "enable.idempotence": False, "linger.ms": 0})
    for i in range(20):
        p.produce(topic, value=f"iso-{acks}-{i}".encode(), partition=0,
                  on_delivery=lambda err, m: acked.append(err is None))
    p.flush(15)
    out[acks] = sum(acked)
print(json.dumps(out))
'''


def test_a_cut_off_leader_acknowledges_nothing_and_its_divergent_records_are_truncated(make_cluster, tmp_path):
    import json
    import sys

    import pytest
    from conftest import Netns, netns_available
    if not netns_available():
        pytest.skip("network namespaces need root and iproute2")
    net = Netns(3)
    c = make_cluster(3, network=net, properties={"unclean.leader.election.enable": "false"}).start()
    create(c.bootstrap, "split", partitions=1, rf=3, config={"min.insync.replicas": "2"})
    base = {}
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "enable.idempotence": True})
    for i in range(100):
        p.produce("split", value=f"m{i}".encode(), partition=0,
                  on_delivery=lambda err, m: err is None and base.__setitem__((m.partition(), m.offset()), m.value()))
    assert p.flush(20) == 0
    wait_in_sync(c, "split", 1)
    leader = c.leader("split", 0)
    others = [b for n, b in c.brokers.items() if n != leader]
    net.cut(leader)
    # A producer on the cut-off side still reaches the old leader, which cannot replicate.
    script = tmp_path / "isolated.py"
    script.write_text(ISOLATED_PRODUCER)
    r = subprocess.run(["ip", "netns", "exec", net.name(leader), sys.executable, str(script),
                        c.brokers[leader].bootstrap, "split"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    isolated = json.loads(r.stdout.strip().splitlines()[-1])
    assert isolated["all"] == 0, f"the cut-off leader acknowledged acks=all writes: {isolated}"
    # The majority elects a new leader and goes on acknowledging acks=all writes.
    c.wait_for(lambda: c.metadata(via=others[0], topic="split").topics["split"].partitions[0].leader not in (leader, -1),
               30, "a new leader on the majority side")
    majority = ",".join(b.bootstrap for b in others)
    with Checker(majority, "split") as chk:
        c.wait_for(lambda: len(chk.acked) > 300, 30, "acknowledgements on the majority side")
    net.heal(leader)
    wait_in_sync(c, "split", 1, timeout=60)
    acked = {**base, **chk.acked}
    got = consume_to_end(c.bootstrap, "split", 1)
    stored = {(g[0], g[1]): g[3] for g in got}
    lost = [k for k, v in acked.items() if stored.get(k) != v]
    assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {lost[:5]}"
    assert not [g for g in got if g[3].startswith(b"iso-")], "records only the cut-off leader had survived"
    c.wait_for(lambda: len(set(logs_of(c, "split", 0).values())) == 1, 30,
               "the old leader's log to equal the new leader's byte for byte")
    print(f"cut-off leader acked {isolated['1']} acks=1 writes that were truncated after healing")


def test_unclean_leader_election_off_keeps_the_partition_offline_until_an_in_sync_replica_returns(make_cluster):
    c = make_cluster(3, properties={"unclean.leader.election.enable": "false"}).start()
    leader, follower, before, after = _leave_only_the_leader_in_sync(c, "clean")
    c.brokers[leader].kill9()
    c.brokers[follower].start()
    c.wait_for(lambda: sorted(c.metadata().brokers) == sorted(n for n in (1, 2, 3) if n != leader), 30,
               "the old leader fenced and the out-of-sync follower back")
    time.sleep(2)
    part = c.metadata(topic="clean").topics["clean"].partitions[0]
    assert part.leader == -1, "an out-of-sync replica became leader with unclean election off"
    c.brokers[leader].start()
    c.wait_for(lambda: c.leader("clean", 0) == leader, 30, "the in-sync replica to lead again")
    got = consume_to_end(c.brokers[leader].bootstrap, "clean", 1)
    assert len(got) == before + after, "records were lost with unclean election off"


def test_unclean_leader_election_on_trades_records_for_availability(make_cluster):
    c = make_cluster(3, properties={"unclean.leader.election.enable": "true"}).start()
    leader, follower, before, after = _leave_only_the_leader_in_sync(c, "unclean")
    c.brokers[leader].kill9()
    c.brokers[follower].start()
    c.wait_for(lambda: c.leader("unclean", 0) == follower, 30, "the out-of-sync replica to take over")
    got = consume_to_end(c.brokers[follower].bootstrap, "unclean", 1)
    # The trade-off: available again, minus what only the old ISR had.
    assert len(got) == before, f"expected the {before} records the revived replica had, got {len(got)}"
    # The old leader comes back as a follower and drops its divergent records.
    c.brokers[leader].start()
    c.wait_for(lambda: len(c.metadata(topic="unclean").topics["unclean"].partitions[0].isrs) == 2, 30,
               "the old leader to rejoin the ISR")
    c.wait_for(lambda: len(set(logs_of(c, "unclean", 0).values())) == 1, 30,
               "the old leader to truncate to the new leader's log")


def _leave_only_the_leader_in_sync(c, topic):
    """A two-replica partition (the third broker keeps the controller quorum alive):
    `before` records on both replicas, then the follower killed and `after` more records
    on the leader alone (min.insync.replicas=1)."""
    create(c.bootstrap, topic, partitions=1, rf=2, config={"min.insync.replicas": "1"})
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all"})
    for i in range(100):
        p.produce(topic, value=f"before-{i}".encode())
    assert p.flush(20) == 0
    wait_in_sync(c, topic, 1, replicas=2)
    part = c.metadata(topic=topic).topics[topic].partitions[0]
    leader = part.leader
    follower = next(r for r in part.replicas if r != leader)
    c.brokers[follower].kill9()
    c.wait_for(lambda: c.metadata(topic=topic).topics[topic].partitions[0].isrs == [leader], 20,
               "the ISR to shrink to the leader")
    for i in range(50):
        p.produce(topic, value=f"after-{i}".encode())
    assert p.flush(20) == 0
    return leader, follower, 100, 50


def test_synchronous_replication_waits_for_every_replica(make_cluster):
    from confluent_kafka import KafkaException
    import pytest
    c = make_cluster(3).start()
    with pytest.raises(KafkaException, match="INVALID_CONFIG|needs 2 or more replicas"):
        create(c.bootstrap, "sync1", partitions=1, rf=1, config={"ringmq.sync.replication": "true"})
    create(c.bootstrap, "sync3", partitions=1, rf=3, config={"ringmq.sync.replication": "true"})
    ok = []
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all"})
    p.produce("sync3", value=b"a", on_delivery=lambda err, m: ok.append(err))
    p.flush(10)
    assert ok == [None]
    leader = c.leader("sync3", 0)
    c.brokers[next(n for n in (1, 2, 3) if n != leader)].kill9()
    c.wait_for(lambda: len(c.metadata(topic="sync3").topics["sync3"].partitions[0].isrs) == 2, 20,
               "the ISR to shrink")
    errs = []
    p2 = Producer({"bootstrap.servers": c.brokers[leader].bootstrap, "acks": "all", "retries": 0,
                   "message.timeout.ms": 3000})
    p2.produce("sync3", value=b"b", on_delivery=lambda err, m: errs.append(err))
    p2.flush(10)
    assert errs and errs[0] is not None and errs[0].name() == "NOT_ENOUGH_REPLICAS", errs


def test_a_broker_that_is_not_the_leader_names_the_leader_in_produce_and_fetch_errors(make_cluster):
    """KIP-951: NOT_LEADER_OR_FOLLOWER carries the current leader and epoch (Produce v10+,
    Fetch v12+) and the leader's endpoint (Produce v10+, Fetch v16+)."""
    from kafka.protocol.consumer import FetchRequest
    from kafka.protocol.metadata import MetadataRequest
    from kafka.protocol.producer import ProduceRequest
    from kafka.record.default_records import DefaultRecordBatchBuilder

    from kafka_api import build, call

    c = make_cluster(3).start()
    create(c.bootstrap, "hint", partitions=1, rf=2)
    wait_in_sync(c, "hint", 1, replicas=2)  # every broker knows the topic
    md = call(c.brokers[1].bootstrap, build(MetadataRequest, 12, topics=[{"name": "hint"}],
                                 allow_auto_topic_creation=False))
    part = md.topics[0].partitions[0]
    leader, epoch, topic_id = part.leader_id, part.leader_epoch, md.topics[0].topic_id
    other = next(b for n, b in c.brokers.items() if n != leader)
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                  producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    b.append(0, timestamp=None, key=None, value=b"v", headers=[])
    produce = call(other.bootstrap, build(
        ProduceRequest, 11, acks=-1, timeout_ms=5000, transactional_id=None,
        topic_data=[{"name": "hint", "partition_data": [{"index": 0, "records": bytes(b.build())}]}]))
    pr = produce.responses[0].partition_responses[0]
    assert pr.error_code == 6, pr  # NOT_LEADER_OR_FOLLOWER
    assert (pr.current_leader.leader_id, pr.current_leader.leader_epoch) == (leader, epoch)
    ends = {e.node_id: (e.host, e.port) for e in produce.node_endpoints}
    assert ends == {leader: ("127.0.0.1", c.brokers[leader].port)}

    def fetch(version, **topic):
        return call(other.bootstrap, build(
            FetchRequest, version, replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=1 << 20,
            isolation_level=0, session_id=0, session_epoch=-1,
            topics=[{**topic, "partitions": [{"partition": 0, "current_leader_epoch": -1, "fetch_offset": 0,
                                             "last_fetched_epoch": -1, "log_start_offset": -1,
                                             "partition_max_bytes": 1 << 20}]}],
            forgotten_topics_data=[], rack_id=""))
    old = fetch(12, topic="hint").responses[0].partitions[0]
    assert old.error_code == 6
    assert (old.current_leader.leader_id, old.current_leader.leader_epoch) == (leader, epoch)
    new = fetch(16, topic_id=topic_id)
    assert new.responses[0].partitions[0].current_leader.leader_id == leader
    assert {e.node_id: e.port for e in new.node_endpoints} == {leader: c.brokers[leader].port}
    # The leader itself answers without hints (once it has opened the partition: as in
    # Kafka, its metadata may name it leader a moment before, and until then it answers
    # NOT_LEADER_OR_FOLLOWER, which clients retry).
    def produce_to_leader():
        return call(c.brokers[leader].bootstrap, build(
            ProduceRequest, 11, acks=-1, timeout_ms=5000, transactional_id=None,
            topic_data=[{"name": "hint", "partition_data": [{"index": 0, "records": bytes(b.build())}]}]))
    deadline = time.time() + 10
    while (ok := produce_to_leader()).responses[0].partition_responses[0].error_code == 6 \
            and time.time() < deadline:
        time.sleep(0.1)
    assert ok.responses[0].partition_responses[0].error_code == 0
    assert ok.node_endpoints == []


def test_broker_only_nodes_follow_a_quorum_of_controller_only_nodes(make_cluster):
    """KRaft's isolated mode: three process.roles=controller nodes hold the quorum, three
    process.roles=broker nodes serve clients. Only brokers appear in Metadata; the
    controller id clients see is a broker (which forwards, KIP-590); the brokers keep
    working through the loss of the active controller and of a partition leader."""
    c = make_cluster(3, controllers=3).start()
    md = c.metadata()
    assert sorted(md.brokers) == [1, 2, 3]
    assert md.controller_id in (1, 2, 3)
    create(c.bootstrap, "iso", partitions=3, config={"min.insync.replicas": "2"})
    wait_in_sync(c, "iso", 3)
    with Checker(c.bootstrap, "iso") as chk:
        c.wait_for(lambda: len(chk.acked) > 200, 30, "acknowledgements")
        # The active controller dies: a new one is elected among the other two; the
        # brokers find it and metadata changes go on.
        active = max(c.controllers.values(), key=lambda n: n.metrics().get("ringmq_active_controller", 0))
        assert active.metrics()["ringmq_active_controller"] == 1
        active.kill9()
        create(c.bootstrap, "iso-after", partitions=1)
        assert "iso-after" in c.metadata(topic="iso-after").topics
        # A partition leader dies: the (new) controller moves leadership.
        leader = c.leader("iso", 0)
        c.brokers[leader].kill9()
        before = len(chk.acked)
        c.wait_for(lambda: len(chk.acked) > before + 200, 60, "acknowledgements after the failovers")
    assert not chk.errors, chk.errors[:5]
    got = consume_to_end(",".join(b.bootstrap for b in c.live()), "iso", 3)
    stored = {(g[0], g[1]): g[3] for g in got}
    lost = [k for k, v in chk.acked.items() if stored.get(k) != v]
    assert not lost, f"{len(lost)} acknowledged messages lost"


def _preferred_led(c, topic, partitions):
    """How many partitions are led by their preferred (first assigned) replica."""
    md = c.metadata(topic=topic).topics[topic]
    return sum(1 for p in range(partitions) if md.partitions[p].leader == md.partitions[p].replicas[0])


def _restart_broker_1(c, topic, partitions):
    c.brokers[1].stop()
    c.brokers[1].start()
    wait_in_sync(c, topic, partitions)


def test_kafka_leader_election_moves_leadership_back_to_preferred_replicas(make_cluster):
    from conftest import KAFKA_SH
    c = make_cluster(3, properties={"auto.leader.rebalance.enable": "false"}).start()
    create(c.bootstrap, "pref", partitions=6, rf=3)
    wait_in_sync(c, "pref", 6)
    assert _preferred_led(c, "pref", 6) == 6
    # A rolling restart of broker 1 (controlled shutdown) moves its leaderships away.
    _restart_broker_1(c, "pref", 6)
    assert _preferred_led(c, "pref", 6) < 6
    c.wait_for(lambda: c.brokers[2].metrics()["ringmq_preferred_leader_imbalance"] >= 6 - _preferred_led(c, "pref", 6),
               10, "broker 2 to count the partitions off their preferred leader")
    r = subprocess.run([str(KAFKA_SH), "tool", "org.apache.kafka.tools.LeaderElectionCommand",
                        "--bootstrap-server", c.brokers[2].bootstrap, "--election-type", "PREFERRED",
                        "--all-topic-partitions"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "Successfully completed leader election (PREFERRED)" in r.stdout, r.stdout
    c.wait_for(lambda: _preferred_led(c, "pref", 6) == 6, 15, "every partition led by its preferred replica")
    # Nothing left to do: Kafka's tool reports it and exits 0.
    again = subprocess.run([str(KAFKA_SH), "tool", "org.apache.kafka.tools.LeaderElectionCommand",
                            "--bootstrap-server", c.brokers[3].bootstrap, "--election-type", "PREFERRED",
                            "--topic", "pref", "--partition", "0"], capture_output=True, text=True, timeout=120)
    assert "Valid replica already elected" in again.stdout + again.stderr, again.stdout + again.stderr
    # An unclean election where a leader is alive is not needed.
    from kafka.protocol.admin import ElectLeadersRequest

    from kafka_api import build, call
    resp = call(c.brokers[1].bootstrap, build(ElectLeadersRequest, 2, election_type=1, timeout_ms=5000,
                                              topic_partitions=[{"topic": "pref", "partitions": [1]}]))
    assert resp.replica_election_results[0].partition_result[0].error_code == 84  # ELECTION_NOT_NEEDED
    # The same with ringmq's CLI after another rolling restart.
    from conftest import RINGMQ
    _restart_broker_1(c, "pref", 6)
    assert _preferred_led(c, "pref", 6) < 6
    r = subprocess.run([str(RINGMQ), "-b", c.brokers[3].bootstrap, "leader", "elect", "--topic", "pref"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "elected" in r.stdout and "0 failed" in r.stdout, r.stdout
    c.wait_for(lambda: _preferred_led(c, "pref", 6) == 6, 15, "ringmq leader elect to restore preferred leaders")
    r = subprocess.run([str(RINGMQ), "-b", c.brokers[3].bootstrap, "leader", "elect", "--type", "unclean",
                        "--topic", "pref", "--partition", "0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "pref-0: no election needed" in r.stdout, r.stdout + r.stderr


def test_the_controller_rebalances_leadership_when_a_broker_leads_too_little(make_cluster):
    c = make_cluster(3, properties={"leader.imbalance.check.interval.seconds": "2"}).start()
    create(c.bootstrap, "auto", partitions=6, rf=3)
    wait_in_sync(c, "auto", 6)
    _restart_broker_1(c, "auto", 6)
    c.wait_for(lambda: _preferred_led(c, "auto", 6) == 6, 20, "the controller to rebalance leadership")
    # It was the controller's check that moved them (nobody asked).
    assert any("leader imbalance: moving leadership back" in b.log_path.read_text() for b in c.brokers.values())


def _reassign_tool(broker, *args):
    """Kafka's kafka-reassign-partitions against `broker`."""
    from conftest import KAFKA_SH
    return subprocess.run([str(KAFKA_SH), "tool", "org.apache.kafka.tools.reassign.ReassignPartitionsCommand",
                           "--bootstrap-server", broker.bootstrap, *args],
                          capture_output=True, text=True, timeout=120)


def test_kafka_reassign_partitions_moves_a_topic_to_other_brokers_under_load(make_cluster, tmp_path):
    """KIP-455 with Kafka's own tool: a topic on brokers {1,2,3} moves to {2,3,4} while an
    idempotent acks=all producer runs; nothing acknowledged is lost, the new replicas
    hold the same bytes, and broker 1 deletes its copies."""
    import json

    c = make_cluster(4).start()
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    admin.create_topics([NewTopic("move", num_partitions=2, replica_assignment=[[1, 2, 3], [2, 3, 1]],
                                  config={"min.insync.replicas": "2"})])["move"].result(20)
    wait_in_sync(c, "move", 2)

    def tool(*args):
        return _reassign_tool(c.brokers[2], *args)

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": "move", "partition": 0, "replicas": [2, 3, 4]},
        {"topic": "move", "partition": 1, "replicas": [4, 2, 3]}]}))
    with Checker(c.bootstrap, "move") as chk:
        c.wait_for(lambda: len(chk.acked) > 2000, 30, "acknowledgements before the move")
        r = tool("--reassignment-json-file", str(plan), "--execute")
        assert r.returncode == 0, r.stdout + r.stderr[-2000:]
        assert "Successfully started partition reassignment" in r.stdout, r.stdout

        last = {}

        def done():
            v = tool("--reassignment-json-file", str(plan), "--verify")
            last["out"] = v.stdout + v.stderr[-2000:]
            return v.returncode == 0 and v.stdout.count("is completed") == 2
        try:
            c.wait_for(done, 60, "the reassignment to complete")
        except AssertionError:
            raise AssertionError(f"kafka-reassign-partitions --verify said: {last.get('out')}")
        before = len(chk.acked)
        c.wait_for(lambda: len(chk.acked) > before + 1000, 30, "acknowledgements after the move")
    assert not chk.errors, chk.errors[:5]
    md = c.metadata(topic="move").topics["move"]
    assert sorted(md.partitions[0].replicas) == [2, 3, 4] and sorted(md.partitions[1].replicas) == [2, 3, 4]
    assert md.partitions[1].replicas[0] == 4
    check_no_loss(c, "move", 2, chk.acked)
    c.wait_for(lambda: not list(c.brokers[1].dir.glob("move-*")), 30, "broker 1 to delete its replicas")
    for p in (0, 1):
        c.wait_for(lambda: len(set(logs_of(c, "move", p).values())) == 1 and len(logs_of(c, "move", p)) == 3,
                   30, f"move-{p}'s replicas to hold the same bytes")


def _describe_broker_configs(c, broker_id):
    """Broker `broker_id`'s dynamic configs (DescribeConfigs on its BROKER resource)."""
    from confluent_kafka.admin import ConfigResource, ConfigSource
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    res = ConfigResource("BROKER", str(broker_id))
    entries = admin.describe_configs([res])[res].result(20)
    dynamic = (ConfigSource.DYNAMIC_BROKER_CONFIG.value, ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value)
    return {k: e.value for k, e in entries.items() if e.source in dynamic}


def test_a_throttled_reassignment_holds_its_rate_and_keeps_producers_and_consumers_whole(make_cluster, tmp_path):
    """`kafka-reassign-partitions --throttle` moves two partitions of ~12 MB each from
    {1,2,3} to {2,3,4} while an acks=all producer and a consumer group run. Broker 4
    fetches the moving replicas at the throttle (measured over the move, within 20 %),
    the producer keeps being acknowledged throughout (in-sync followers are not held
    back), nothing is lost or duplicated, broker 1 deletes its copies, and --verify
    clears the throttles it set."""
    import json
    import os

    rate = 4_000_000
    c = make_cluster(4).start()
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    admin.create_topics([NewTopic("slow", num_partitions=2, replica_assignment=[[1, 2, 3], [2, 3, 1]],
                                  config={"min.insync.replicas": "2"})])["slow"].result(20)
    wait_in_sync(c, "slow", 2)
    pre = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "linger.ms": 20,
                    "compression.type": "none"})
    blob = os.urandom(1000)
    preloaded = []
    for i in range(24_000):
        pre.produce("slow", value=b"p%d:" % i + blob, partition=i % 2,
                    on_delivery=lambda err, m: preloaded.append(err))
        if i % 1000 == 0:
            pre.poll(0)
    assert pre.flush(60) == 0 and preloaded.count(None) == 24_000

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": "slow", "partition": 0, "replicas": [2, 3, 4]},
        {"topic": "slow", "partition": 1, "replicas": [3, 4, 2]}]}))
    reader = GroupReader(c.bootstrap, "slow", "slow-readers")
    reader.thread.start()
    fetched = lambda: c.brokers[4].metrics()["ringmq_follower_throttled_bytes_total"]
    with Checker(c.bootstrap, "slow") as chk:
        c.wait_for(lambda: len(chk.acked) > 1000, 30, "acknowledgements before the move")
        r = _reassign_tool(c.brokers[2], "--reassignment-json-file", str(plan), "--execute",
                           "--throttle", str(rate))
        assert r.returncode == 0, r.stdout + r.stderr[-2000:]
        assert f"The inter-broker throttle limit was set to {rate} B/s" in r.stdout, r.stdout
        assert _describe_broker_configs(c, 4) == {"leader.replication.throttled.rate": str(rate),
                                                  "follower.replication.throttled.rate": str(rate)}
        samples = []  # (time, bytes broker 4 fetched for throttled replicas, acks so far)
        while True:
            samples.append((time.monotonic(), fetched(), len(chk.acked)))
            if c.brokers[4].metrics()["ringmq_reassigning_partitions"] == 0 and samples[-1][1] > 0:
                break
            assert samples[-1][0] - samples[0][0] < 60, f"the move did not finish: {samples[-3:]}"
            time.sleep(0.25)
        moving = [s for s in samples if s[1] > 0]
        (t0, b0, _), (t1, b1, _) = moving[0], moving[-1]
        measured = (b1 - b0) / (t1 - t0)
        print(f"throttled move: {b1 - b0} bytes in {t1 - t0:.2f} s = {measured:.0f} B/s (throttle {rate})")
        assert b1 >= 24_000_000, f"broker 4 fetched only {b1} bytes"
        assert abs(measured - rate) <= 0.2 * rate, f"moved at {measured:.0f} B/s under a {rate} B/s throttle"
        # acks=all kept flowing during the move: every second of it saw new acknowledgements.
        for (ta, _, aa), (tb, _, ab) in zip(moving, moving[4:]):
            assert ab > aa, f"no acknowledgement between {ta - t0:.1f}s and {tb - t0:.1f}s of the move"
        assert c.brokers[4].metrics()["ringmq_follower_throttle_held_back_total"] > 0
        v = _reassign_tool(c.brokers[2], "--reassignment-json-file", str(plan), "--verify")
        assert v.stdout.count("is completed") == 2, v.stdout + v.stderr[-2000:]
        assert "Clearing broker-level throttles" in v.stdout, v.stdout
        before = len(chk.acked)
        c.wait_for(lambda: len(chk.acked) > before + 500, 30, "acknowledgements after the move")
    assert not chk.errors, chk.errors[:5]
    assert _describe_broker_configs(c, 4) == {}
    from confluent_kafka.admin import ConfigResource
    topic_res = ConfigResource("TOPIC", "slow")
    topic_cfg = admin.describe_configs([topic_res])[topic_res].result(20)
    assert topic_cfg["leader.replication.throttled.replicas"].value == ""
    c.wait_for(lambda: c.brokers[4].metrics()["ringmq_follower_replication_throttled_rate"] == 0, 10,
               "broker 4 to drop its throttle")
    md = c.metadata(topic="slow").topics["slow"]
    assert sorted(md.partitions[0].replicas) == [2, 3, 4] and sorted(md.partitions[1].replicas) == [2, 3, 4]
    got = consume_to_end(c.bootstrap, "slow", 2)
    stored = {(g[0], g[1]): g[3] for g in got}
    lost = [k for k, v in chk.acked.items() if stored.get(k) != v]
    assert not lost, f"{len(lost)} of {len(chk.acked)} acknowledged messages lost, e.g. {lost[:5]}"
    values = [g[3] for g in got]
    assert len(values) == len(set(values)), "duplicated messages"
    assert sum(1 for v in values if v.startswith(b"p")) == 24_000
    wanted = set(chk.acked.values())
    c.wait_for(lambda: wanted <= reader.values, 30, "the consumer group to read every acknowledged message")
    reader.stop.set()
    reader.thread.join(10)
    c.wait_for(lambda: not list(c.brokers[1].dir.glob("slow-*")), 30, "broker 1 to delete its replicas")
    for p in (0, 1):
        c.wait_for(lambda: len(set(logs_of(c, "slow", p).values())) == 1 and len(logs_of(c, "slow", p)) == 3,
                   30, f"slow-{p}'s replicas to hold the same bytes")


def test_a_reassignment_that_cannot_finish_is_cancelled_and_listed_until_then(make_cluster, tmp_path):
    """The new replica's broker is down, so the move cannot complete: it is listed as in
    progress (adding/removing), then `kafka-reassign-partitions --cancel` puts the
    partition back on its original replicas."""
    import json

    c = make_cluster(4).start()
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    admin.create_topics([NewTopic("stay", num_partitions=1, replica_assignment=[[1, 2, 3]])])["stay"].result(20)
    wait_in_sync(c, "stay", 1)
    c.brokers[4].kill9()
    c.wait_for(lambda: 4 not in c.metadata().brokers, 30, "broker 4 to be fenced")

    def tool(*args):
        return _reassign_tool(c.brokers[1], *args)

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": "stay", "partition": 0, "replicas": [2, 3, 4]}]}))
    # Kafka's tool refuses a plan naming a broker that is down, the API does not.
    from kafka.protocol.admin import AlterPartitionReassignmentsRequest

    from kafka_api import build, call
    resp = call(c.brokers[1].bootstrap, build(AlterPartitionReassignmentsRequest, 0, timeout_ms=10000, topics=[
        {"name": "stay", "partitions": [{"partition_index": 0, "replicas": [2, 3, 4]}]}]))
    assert resp.responses[0].partitions[0].error_code == 0, resp
    # Broker 2 learns of the move when it applies the committed record, a moment after the answer.
    c.wait_for(lambda: c.brokers[2].metrics()["ringmq_reassigning_partitions"] == 1, 10,
               "broker 2 to count the reassignment")
    listed = tool("--list")
    assert "stay-0" in listed.stdout and "adding" in listed.stdout.lower(), listed.stdout + listed.stderr
    v = tool("--reassignment-json-file", str(plan), "--verify")
    assert "is still in progress" in v.stdout, v.stdout + v.stderr
    # The tool then clears throttles on every broker and times out on the one that is
    # down (it would against Kafka too): the cancellation itself is what counts.
    quick = tmp_path / "admin.properties"
    quick.write_text("default.api.timeout.ms=5000\nrequest.timeout.ms=3000\n")
    r = tool("--reassignment-json-file", str(plan), "--cancel", "--command-config", str(quick))
    assert "Successfully cancelled partition reassignment for: stay-0" in r.stdout, r.stdout + r.stderr
    c.wait_for(lambda: sorted(c.metadata(topic="stay").topics["stay"].partitions[0].replicas) == [1, 2, 3],
               30, "the original replicas back")
    assert "stay-0" not in tool("--list").stdout
    c.wait_for(lambda: c.brokers[2].metrics()["ringmq_reassigning_partitions"] == 0, 10, "the metric to drop")


def _ringmq(c, *args, via=1, timeout=120):
    from conftest import RINGMQ
    return subprocess.run([str(RINGMQ), "-b", c.brokers[via].bootstrap, *args],
                          capture_output=True, text=True, timeout=timeout)


def _replicas(c, topic):
    md = c.metadata(topic=topic).topics[topic]
    return {p: list(md.partitions[p].replicas) for p in md.partitions}


def test_a_fourth_broker_joins_and_ringmq_reassign_spreads_a_topic_onto_it_rack_aware(make_cluster):
    """R5, R4, T8 with the ringmq CLI: a cluster of three brokers (racks a, a, b) grows a
    fourth (rack b). A topic created afterwards uses it at once; an older topic moves
    onto it with `ringmq reassign execute --topics --brokers` (automatic mode, leaders
    even, every partition on both racks), throttled, followed by `reassign status` until
    it clears the throttles. A second move throttled to a trickle shows its progress
    (bytes left, rate, ETA) and is cancelled midway with `ringmq reassign cancel`."""
    racks = {1: "a", 2: "a", 3: "b", 4: "b"}
    c = make_cluster(4, racks=[racks[i] for i in (1, 2, 3, 4)]).start(brokers=[1, 2, 3])
    create(c.bootstrap, "grow", partitions=4, rf=2)
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "linger.ms": 5})
    acked = {}
    for i in range(8000):
        p.produce("grow", value=b"g%d" % i + b"x" * 2000, partition=i % 4,
                  on_delivery=lambda err, m: err is None and acked.__setitem__((m.partition(), m.offset()), m.value()))
        if i % 500 == 0:
            p.poll(0)
    assert p.flush(30) == 0 and len(acked) == 8000
    assert all(4 not in r for r in _replicas(c, "grow").values())

    c.brokers[4].start()
    c.wait_for_brokers(4)
    create(c.bootstrap, "fresh", partitions=4, rf=3)
    assert sum(4 in r for r in _replicas(c, "fresh").values()) == 3, "a new topic uses the new broker"

    plan = _ringmq(c, "reassign", "plan", "--topics", "grow", "--brokers", "1,2,3,4")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    import json
    parts = json.loads(plan.stdout)["partitions"]
    assert sorted(q["replicas"][0] for q in parts) == [1, 2, 3, 4], parts
    assert all({racks[b] for b in q["replicas"]} == {"a", "b"} for q in parts), parts
    r = _ringmq(c, "reassign", "execute", "--topics", "grow", "--brokers", "1,2,3,4", "--throttle", "50")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Replication throttle set to 50 MB/s" in r.stdout, r.stdout

    def finished():
        s = _ringmq(c, "reassign", "status", "--interval", "0.2")
        assert s.returncode == 0, s.stdout + s.stderr
        return "No reassignment in progress." in s.stdout and "Cleared the replication throttles" in s.stdout
    c.wait_for(finished, 60, "the move to finish")
    assert _replicas(c, "grow") == {q["partition"]: q["replicas"] for q in parts}
    assert _describe_broker_configs(c, 4) == {}
    got = consume_to_end(c.bootstrap, "grow", 4)
    assert {(g[0], g[1]): g[3] for g in got} == acked

    admin = f"{c.brokers[2].host}:{c.brokers[2].http_port}"
    tasks = _ringmq(c, "task", "list", "--admin", admin)
    assert tasks.returncode == 0, tasks.stdout + tasks.stderr
    assert re.search(r"^1\s+reassignment\s+Succeeded\s+0/4 .*reassign 4 partition\(s\) of grow", tasks.stdout, re.M), tasks.stdout

    # Two trickles (1 kB/s) cannot finish: after their first fetch (one
    # replica.fetch.max.bytes, 1 MiB, as Kafka allows) status shows the ~3 MB left of each.
    # One is cancelled as a task, the other with `reassign cancel`.
    before = _replicas(c, "grow")
    targets = {}
    for p in (0, 1):
        new = [b for b in (1, 2, 3, 4) if b not in before[p]][0]
        targets[p] = [new, before[p][0]]
        r = _ringmq(c, "reassign", "execute", "--replicas", f"grow:{p}={new},{before[p][0]}", "--throttle", "0.001")
        assert r.returncode == 0, r.stdout + r.stderr
    time.sleep(1)
    s = _ringmq(c, "reassign", "status", "--interval", "1")
    for p in (0, 1):
        row = [line for line in s.stdout.splitlines() if line.startswith(f"grow-{p} ")]
        assert row, s.stdout + s.stderr
        assert " MB" in row[0] and "kB/s" in row[0], row[0]
        left_mb = float(row[0].split()[-5])
        assert 2 < left_mb < 4, row[0]
    assert c.brokers[3].metrics()["ringmq_tasks_running"] == 2
    d = _ringmq(c, "task", "describe", "2", "--admin", admin)
    assert "State: Running" in d.stdout and "Partitions still moving: 1 of 1" in d.stdout, d.stdout + d.stderr
    assert f"grow-0 -> {targets[0]}" in d.stdout, d.stdout
    t = _ringmq(c, "task", "cancel", "2", "--admin", admin)
    assert t.returncode == 0 and "grow-0: cancelled" in t.stdout, t.stdout + t.stderr
    assert "Kept the replication throttles: 1 other move(s) in progress" in t.stdout, t.stdout
    c.wait_for(lambda: _replicas(c, "grow")[0] == before[0], 20, "grow-0 back on its replicas")
    c.wait_for(lambda: "State: Cancelled" in _ringmq(c, "task", "describe", "2", "--admin", admin).stdout, 10,
               "task 2 to be cancelled")
    assert "State: Running" in _ringmq(c, "task", "describe", "3", "--admin", admin).stdout
    cancel = _ringmq(c, "reassign", "cancel", "--topic", "grow")
    assert cancel.returncode == 0 and "grow-1: cancelled" in cancel.stdout, cancel.stdout + cancel.stderr
    c.wait_for(lambda: _replicas(c, "grow")[1] == before[1], 20, "grow-1 back on its replicas")
    c.wait_for(lambda: c.brokers[3].metrics()["ringmq_tasks_running"] == 0, 10, "no task left running")
    assert "No reassignment in progress." in _ringmq(c, "reassign", "status", "--keep-throttles").stdout
    got = consume_to_end(c.bootstrap, "grow", 4)
    assert {(g[0], g[1]): g[3] for g in got} == acked, "the cancelled moves lost or added records"


def test_a_broker_is_drained_under_load_and_unregistered(make_cluster):
    """R5 with the ringmq CLI and Kafka's kafka-cluster tool: `ringmq cluster drain 4
    --wait` moves every replica (internal topics too) off broker 4 while an acks=all
    producer runs; no partition is left under-replicated; unregistering is refused while
    broker 4 runs, and `kafka-cluster unregister` removes it once it is stopped. Started
    again, it registers and `ringmq cluster add-broker 4` moves its share (3 of the 12
    replicas) back onto it. Nothing acknowledged is lost."""
    from conftest import KAFKA_SH
    c = make_cluster(4).start()
    create(c.bootstrap, "drainme", partitions=4, rf=3, config={"min.insync.replicas": "2"})
    wait_in_sync(c, "drainme", 4)
    assert sum(4 in r for r in _replicas(c, "drainme").values()) == 3
    with Checker(c.brokers[1].bootstrap, "drainme") as chk:
        c.wait_for(lambda: len(chk.acked) > 1000, 30, "acknowledgements before the drain")
        r = _ringmq(c, "cluster", "drain", "4", "--wait", "--throttle", "100")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Broker 4 is drained" in r.stdout, r.stdout
        before = len(chk.acked)
        c.wait_for(lambda: len(chk.acked) > before + 500, 30, "acknowledgements after the drain")
    assert not chk.errors, chk.errors[:5]
    md = c.metadata()
    held = [(t, p) for t, tm in md.topics.items() for p, pm in tm.partitions.items() if 4 in pm.replicas]
    assert not held, f"broker 4 still holds {held[:5]}"
    for b in (1, 2, 3):
        c.wait_for(lambda: c.brokers[b].metrics()["ringmq_under_replicated_partitions"] == 0, 30,
                   f"broker {b} to lead no under-replicated partition")
    refused = _ringmq(c, "cluster", "remove-broker", "4")
    assert refused.returncode != 0 and "stop it before unregistering" in refused.stderr, refused.stdout + refused.stderr
    c.brokers[4].stop()
    c.wait_for(lambda: 4 not in c.metadata().brokers, 30, "broker 4 to be fenced")
    r = subprocess.run([str(KAFKA_SH), "tool", "org.apache.kafka.tools.ClusterTool", "unregister",
                        "--bootstrap-server", c.brokers[1].bootstrap, "--id", "4"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    again = _ringmq(c, "cluster", "remove-broker", "4")
    assert again.returncode != 0 and "not registered" in again.stderr, again.stdout + again.stderr
    # The VM comes back: broker 4 registers again and takes its share back.
    c.brokers[4].start()
    c.wait_for_brokers(4)
    r = _ringmq(c, "cluster", "add-broker", "4", "--topics", "drainme", "--throttle", "100", "--wait")
    assert r.returncode == 0 and "Reassignment done" in r.stdout, r.stdout + r.stderr
    assert sum(4 in r for r in _replicas(c, "drainme").values()) == 3, _replicas(c, "drainme")
    wait_in_sync(c, "drainme", 4)
    check_no_loss(c, "drainme", 4, chk.acked)


def test_replication_refused_by_the_authorizer_is_an_error_on_both_sides_and_at_start(make_cluster):
    """With an authorizer, replica fetches need CLUSTER_ACTION for the inter-broker
    principal (ANONYMOUS on a PLAINTEXT inter-broker listener). Once an ACL on the cluster
    leaves it out, the leaders log that they refuse the fetches and the followers that
    they are refused (ERROR, rate-limited), and a broker starting so says it at once."""
    from conftest import RINGMQ
    c = make_cluster(3, properties={
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "true"}).start()
    refusal = [r"refusing replica fetches", r"the leader refuses this broker's replica fetches",
               r"inter-broker principal lacks CLUSTER_ACTION",
               r"allow.everyone.if.no.acl.found=true opens every resource"]
    for b in c.brokers.values():
        b.expected_log += refusal
        # The unsafe open model is named at start-up, with the safe one to use instead.
        assert "use ringmq.open.resources=topic,group" in b.log_path.read_text()
    create(c.bootstrap, "guarded", partitions=1, rf=3)
    # An ACL on the cluster for someone else: ANONYMOUS no longer may act on it.
    subprocess.run([str(RINGMQ), "-b", c.bootstrap, "acl", "add", "--resource", "cluster",
                    "--principal", "User:admin", "--operation", "all"], check=True, timeout=60)
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "1"})
    for i in range(20):
        p.produce("guarded", value=f"{i}".encode())
    assert p.flush(30) == 0

    def logged(pattern):
        return any(re.search(pattern, b.log_path.read_text()) for b in c.brokers.values())
    c.wait_for(lambda: logged(refusal[0]) and logged(refusal[1]), 30, "both sides to report the refusal")
    leader = c.leader("guarded", 0)
    follower = next(i for i in c.brokers if i != leader)
    c.brokers[follower].stop()
    c.brokers[follower].start()
    c.wait_for(lambda: refusal[2] in c.brokers[follower].log_path.read_text() or
               re.search(refusal[2], c.brokers[follower].log_path.read_text()), 30, "the start-up check")


def test_a_voter_cut_off_and_back_does_not_depose_the_controller(make_cluster):
    """Pre-vote and leader stickiness (KRaft's KIP-996): a voter cut off from the others
    cannot win a pre-vote, so it does not stand for election and its term stays; when it
    returns, the active controller and the quorum epoch are the ones from before (without
    pre-vote, each cut raised the epoch, 1 -> 12 -> 18 -> 27, and each heal left the
    cluster without a controller for seconds). Metadata changes commit right after each
    heal."""
    import pytest
    from conftest import Netns, netns_available
    from test_dynamic_quorum import quorum_tool
    if not netns_available():
        pytest.skip("network namespaces need root and iproute2")
    net = Netns(3)
    c = make_cluster(3, network=net).start()

    def leader_and_epoch(via):
        out = quorum_tool("--bootstrap-server", via.bootstrap, "describe", "--status").stdout
        return (int(re.search(r"LeaderId:\s+(\d+)", out).group(1)),
                int(re.search(r"LeaderEpoch:\s+(\d+)", out).group(1)))

    before = leader_and_epoch(c.brokers[1])
    cut = next(n for n in c.brokers if n != before[0])
    watcher = c.brokers[before[0]]
    c.brokers[cut].expected_log += [r"cannot|unreachable|timed out|did not answer|fell behind"]
    for round in range(3):
        net.cut(cut)
        time.sleep(5)  # several election timeouts (1-2 s)
        assert leader_and_epoch(watcher) == before, f"round {round}: the quorum moved while {cut} was away"
        net.heal(cut)
        time.sleep(3)
        assert leader_and_epoch(watcher) == before, f"round {round}: node {cut}'s return deposed the leader"
        started = time.time()
        create(watcher.bootstrap, f"after-heal-{round}", partitions=1, rf=3)
        assert time.time() - started < 5
    c.wait_for(lambda: leader_and_epoch(c.brokers[cut]) == before, 20, "the returned voter to follow the leader")
