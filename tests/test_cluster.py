"""A replicated cluster of three real ringmqd processes (KRaft combined mode on 127.0.0.1):
the controller quorum, replication byte for byte, ISR and high watermark, failover on
kill -9 of leaders and of the active controller, follower catch-up, controlled shutdown,
and stock clients bootstrapping from any broker."""
import hashlib
import random
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
    """Each live node's segment bytes of a partition (sha256 of the concatenated logs)."""
    out = {}
    for b in cluster.live():
        d = b.dir / f"{topic}-{partition}"
        h = hashlib.sha256()
        for f in sorted(d.glob("*.log")):
            h.update(f.read_bytes())
        out[b.node_id] = h.hexdigest()
    return out


def wait_in_sync(cluster, topic, partitions, replicas=3, timeout=30):
    def full():
        md = cluster.metadata(topic=topic).topics[topic]
        return all(len(md.partitions[p].isrs) == replicas for p in range(partitions))
    cluster.wait_for(full, timeout, f"{topic}'s ISR to hold {replicas} replicas")


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
                                 consumer_timeout_ms=5000, group_id=None)
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


def test_kill9_of_leaders_in_a_loop_loses_no_acknowledged_message(make_cluster):
    c = make_cluster(3).start()
    create(c.bootstrap, "failover", partitions=3, rf=3, config={"min.insync.replicas": "2"})
    rng = random.Random(11)
    rounds = 5
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
        c.brokers[controller].start()
        wait_in_sync(c, "ctl", 3, timeout=60)
    check_no_loss(c, "ctl", 3, chk.acked)


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
