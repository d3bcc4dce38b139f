"""Core and disk profiles (SPEC P4, T7, S5): `ringmqd --profile` / `--disk-profile`, the
limits a flavor sets, enforced with Kafka's errors, and the disk-class emulation cap."""
import socket
import subprocess
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from conftest import RINGMQD
import kafka_wire


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create(a, name, partitions):
    a.create_topics([NewTopic(name, partitions, 1)])[name].result(15)


def test_flavor_partition_limit_is_enforced(make_broker):
    """kafka.2u4g allows 250 partitions per broker: filling it works, one more fails with
    POLICY_VIOLATION and a message naming the limit, for CreateTopics, CreatePartitions and
    auto-creation alike. __consumer_offsets' 50 do not count."""
    b = make_broker(["--profile", "kafka.2u4g.cluster"]).start()
    a = admin(b)
    for i in range(4):
        create(a, f"t{i}", 60)
    create(a, "t4", 9)  # 249 in use
    with pytest.raises(KafkaException) as e:
        create(a, "over", 2)
    err = e.value.args[0]
    assert err.code() == KafkaError.POLICY_VIOLATION
    assert "max.broker.partitions=250" in err.str() and "249" in err.str()
    with pytest.raises(KafkaException) as e:
        a.create_partitions([NewPartitions("t4", 11)])["t4"].result(15)
    assert e.value.args[0].code() == KafkaError.POLICY_VIOLATION
    a.create_partitions([NewPartitions("t4", 10)])["t4"].result(15)  # exactly 250
    # Auto-creation (3 partitions by default) is refused the same way.
    p = Producer({"bootstrap.servers": b.bootstrap, "message.timeout.ms": 3000})
    results = []
    p.produce("auto-topic", b"x", on_delivery=lambda err, msg: results.append(err))
    p.flush(10)
    assert results and results[0] is not None
    md = a.list_topics(timeout=10)
    assert "auto-topic" not in md.topics
    # The producer would keep asking for auto-topic and get it created as soon as room
    # appears: destroy it first (rd_kafka_destroy runs on dealloc).
    del p
    # Deleting a topic frees its partitions.
    a.delete_topics(["t0"])["t0"].result(15)
    create(a, "fits-again", 60)


def test_flavor_sets_shards_capped_at_host_cores(make_broker):
    b = make_broker(["--profile", "kafka.16u32g"]).start()
    create(admin(b), "x", 4)
    log = b.log_path.read_text()
    assert "profile=kafka.16u32g" in log and "vcpus=16" in log
    import os
    assert f"shards={min(16, os.cpu_count())}" in log


def connected(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def test_connection_limit_closes_extra_connections(make_broker, tmp_path):
    """max.connections from a profile file: the broker closes connections past the limit
    as they arrive, counts them, and admits again when one closes."""
    prof = tmp_path / "tiny.toml"
    prof.write_text(open(RINGMQD.parent.parent.parent / "tuning/flavors/kafka.2u4g.toml").read()
                    .replace('"max.connections" = "2000"', '"max.connections" = "4"')
                    .replace('name = "kafka.2u4g"', 'name = "tiny"'))
    b = make_broker(["--profile", str(prof)])
    b.expected_log.append(r"connection refused.*max.connections=4 reached")
    b.start()
    time.sleep(0.2)  # the readiness probe's connection must be gone
    held = [kafka_wire.connect(b.bootstrap) for _ in range(4)]
    for s in held:  # each is served
        s.sendall(kafka_wire.frame(18, 0, 7))
        assert kafka_wire.read_frame(s)[:4] == (7).to_bytes(4, "big")
    extra = kafka_wire.connect(b.bootstrap)
    assert kafka_wire.closed_by_broker(extra)
    assert b.metrics()["ringmq_connections_rejected_total"] >= 1
    assert b.metrics()["current_connections"] == 4
    held.pop().close()
    deadline = time.time() + 5
    while b.metrics()["current_connections"] > 3 and time.time() < deadline:
        time.sleep(0.05)
    again = kafka_wire.connect(b.bootstrap)
    again.sendall(kafka_wire.frame(18, 0, 8))
    assert kafka_wire.read_frame(again)[:4] == (8).to_bytes(4, "big")


def test_unknown_profiles_are_refused():
    for args, words in [(["--profile", "kafka.3u6g"], "kafka.2u4g"),
                        (["--disk-profile", "floppy"], "local-nvme"),
                        (["--profile", "/nonexistent.toml"], "cannot read")]:
        r = subprocess.run([str(RINGMQD), *args], capture_output=True, text=True, timeout=10)
        assert r.returncode == 2 and words in r.stderr, (args, r.stderr)


def test_emulated_disk_class_caps_the_write_rate(make_broker, tmp_path):
    """--emulate-disk caps appends at the disk class's bandwidth (here a 20 MB/s class in a
    profile file): 60 MB cannot be written in much under 3 s, and all of it arrives."""
    prof = tmp_path / "slow.toml"
    prof.write_text('name = "slow"\ndescription = "test"\n[class]\nlatency_ms = 2.0\n'
                    'bandwidth_mbps = 20\n[broker]\n"ringmq.writeback.bytes" = "1048576"\n')
    b = make_broker(["--disk-profile", str(prof), "--emulate-disk"]).start()
    create(admin(b), "slow", 1)
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 5, "batch.size": 1 << 20})
    payload = b"x" * 1000
    start = time.time()
    for _ in range(60_000):
        while True:
            try:
                p.produce("slow", payload)
                break
            except BufferError:
                p.poll(0.01)
    assert p.flush(60) == 0
    secs = time.time() - start
    assert secs >= 2.5, f"60 MB in {secs:.2f} s is over the 20 MB/s cap"
    assert "emulate=true" in b.log_path.read_text()


def test_request_queue_budget_applies_back_pressure_without_losing_writes(make_broker):
    """queued.max.request.bytes (a profile's memory budget) far below what four producers
    send at once: shards stop reading until requests are handled, nothing is lost."""
    b = make_broker(properties={"queued.max.request.bytes": "65536"}).start()
    create(admin(b), "bp", 4)
    producers = [Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 20, "batch.size": 1 << 20})
                 for _ in range(4)]
    failures = []
    for i in range(20_000):
        p = producers[i % 4]
        while True:
            try:
                p.produce("bp", b"y" * 1000, on_delivery=lambda err, msg: err and failures.append(err))
                break
            except BufferError:
                p.poll(0.01)
    for p in producers:
        assert p.flush(60) == 0
    assert not failures
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "x"})
    assert sum(c.get_watermark_offsets(TopicPartition("bp", q), timeout=10)[1] for q in range(4)) == 20_000
    c.close()
    assert b.metrics()["ringmq_request_queue_waits_total"] > 0


def test_connections_are_spread_evenly_over_the_shards(make_broker):
    """SO_REUSEPORT hashes connections to shards; the broker rebalances them on accept so
    every shard serves as many as the others (a producer and a consumer do not end up on
    one shard while the other idles). Each handed-over connection is fully served."""
    import re
    import urllib.request
    b = make_broker(["--shards", "2"]).start()
    time.sleep(0.2)
    conns = [kafka_wire.connect(b.bootstrap) for _ in range(8)]
    for i, s in enumerate(conns):
        s.sendall(kafka_wire.frame(18, 0, 100 + i))
        assert kafka_wire.read_frame(s)[:4] == (100 + i).to_bytes(4, "big")
    text = urllib.request.urlopen(f"http://127.0.0.1:{b.http_port}/metrics", timeout=5).read().decode()
    per_shard = [int(v) for v in re.findall(r'^ringmq_shard_connections\{shard="\d+"\} (\d+)$', text, re.M)]
    assert per_shard == [4, 4], text
    for s in conns[:6]:
        s.close()
    deadline = time.time() + 5
    while time.time() < deadline:
        text = urllib.request.urlopen(f"http://127.0.0.1:{b.http_port}/metrics", timeout=5).read().decode()
        if "current_connections 2" in text:
            break
        time.sleep(0.05)
    assert "current_connections 2" in text


def test_idle_connections_are_closed_and_busy_ones_kept(make_broker):
    """connections.max.idle.ms (SPEC S5): a connection that sends nothing for that long is
    closed; one that keeps sending requests stays open past it."""
    b = make_broker(properties={"connections.max.idle.ms": "700"}).start()
    idle = kafka_wire.connect(b.bootstrap, timeout=5)
    busy = kafka_wire.connect(b.bootstrap, timeout=5)
    start = time.time()
    for i in range(10):  # 2 s of requests every 200 ms
        busy.sendall(kafka_wire.frame(18, 0, i))
        assert kafka_wire.read_frame(busy)[:4] == i.to_bytes(4, "big")
        time.sleep(0.2)
    assert time.time() - start > 1.5
    assert kafka_wire.closed_by_broker(idle)
    busy.sendall(kafka_wire.frame(18, 0, 99))
    assert kafka_wire.read_frame(busy)[:4] == (99).to_bytes(4, "big")
    r = subprocess.run([str(RINGMQD), "--config", "/dev/stdin"], input="connections.max.idle.ms=0\n",
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "connections.max.idle.ms" in r.stderr
