"""Real clients against a real ringmqd: kcat (librdkafka 2.0.2), confluent-kafka
(librdkafka 2.x), kafka-python. Round trips must be byte-exact."""
import subprocess
import time

import kafka
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def consume_to_end(bootstrap, topic, partitions, timeout=60):
    """Every message of every partition up to its high watermark."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions) if ends[p] > 0])
    got = []
    done = {p for p, e in ends.items() if e == 0}
    deadline = time.time() + timeout
    while len(done) < partitions and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            raise KafkaException(m.error())
        got.append((m.partition(), m.offset(), m.key(), m.value(), m.headers()))
        if m.offset() + 1 >= ends[m.partition()]:
            done.add(m.partition())
    c.close()
    assert len(done) == partitions, f"did not reach the end of {set(range(partitions)) - done}"
    return got


def create_topic(bootstrap, name, partitions=1, config=None):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})])
    fut[name].result(10)


def produce_all(bootstrap, topic, messages, **conf):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2, **conf})
    reports = []
    for key, value, headers, partition in messages:
        kw = {"partition": partition} if partition is not None else {}
        p.produce(topic, key=key, value=value, headers=headers,
                  on_delivery=lambda err, m: reports.append((err, m.partition(), m.offset(), m.key(), m.value())), **kw)
    assert p.flush(30) == 0
    errors = [r for r in reports if r[0] is not None]
    assert not errors, errors[:3]
    return reports


def consume_all(bootstrap, topic, partitions, expected, timeout=20):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = []
    deadline = time.time() + timeout
    while len(got) < expected and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            raise KafkaException(m.error())
        got.append((m.partition(), m.offset(), m.key(), m.value(), m.headers()))
    c.close()
    return got


def test_kcat_round_trip_with_keys_and_headers(broker):
    lines = "".join(f"key{i}\tvalue {i} \u00e9\n" for i in range(200))
    subprocess.run(["kcat", "-b", broker.bootstrap, "-P", "-t", "kc", "-K", "\t", "-H", "h1=one", "-H", "h2=two"],
                   input=lines.encode(), check=True, timeout=30)
    out = subprocess.run(["kcat", "-b", broker.bootstrap, "-C", "-t", "kc", "-e", "-o", "beginning",
                          "-f", "%k\t%s\t%h\n"], capture_output=True, check=True, timeout=30).stdout.decode()
    got = sorted(out.splitlines())
    want = sorted(f"key{i}\tvalue {i} \u00e9\th1=one,h2=two" for i in range(200))
    assert got == want


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_confluent_round_trip_every_codec(broker, codec):
    topic = f"codec-{codec}"
    create_topic(broker.bootstrap, topic, partitions=3)
    msgs = [(f"k{i}".encode(), bytes([i % 256]) * (i % 700), [("h", str(i).encode())], None) for i in range(600)]
    reports = produce_all(broker.bootstrap, topic, msgs, **{"compression.type": codec})
    got = consume_all(broker.bootstrap, topic, 3, len(msgs))
    assert len(got) == len(msgs)
    sent = {(r[1], r[2]): (r[3], r[4]) for r in reports}
    for partition, offset, key, value, headers in got:
        assert sent[(partition, offset)] == (key, value)
        assert headers == [("h", key[1:])]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd", None])
def test_kafka_python_round_trip(broker, codec):
    topic = f"kp-{codec}"
    p = kafka.KafkaProducer(bootstrap_servers=broker.bootstrap, compression_type=codec, acks="all")
    futures = [p.send(topic, key=f"k{i}".encode(), value=f"value-{i}".encode() * 3, headers=[("n", str(i).encode())]) for i in range(300)]
    metas = [f.get(timeout=20) for f in futures]
    p.close()
    c = kafka.KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                            consumer_timeout_ms=4000, group_id=None)
    got = {(m.partition, m.offset): (m.key, m.value, m.headers) for m in c}
    c.close()
    assert len(got) == 300
    for i, meta in enumerate(metas):
        assert got[(meta.partition, meta.offset)] == (f"k{i}".encode(), f"value-{i}".encode() * 3, [("n", str(i).encode())])


def test_many_partitions_and_order_per_partition(broker):
    create_topic(broker.bootstrap, "wide", partitions=64)
    msgs = [(f"key-{i % 97}".encode(), str(i).encode(), None, None) for i in range(5000)]
    produce_all(broker.bootstrap, "wide", msgs)
    got = consume_all(broker.bootstrap, "wide", 64, len(msgs))
    assert len(got) == 5000
    assert len({g[0] for g in got}) > 32
    by_key = {}
    for _, _, key, value, _ in sorted(got, key=lambda g: (g[0], g[1])):
        by_key.setdefault(key, []).append(int(value))
    for values in by_key.values():
        assert values == sorted(values), "order within a key's partition"


def test_idempotent_producer(broker):
    create_topic(broker.bootstrap, "idem", partitions=2)
    msgs = [(None, f"m{i}".encode(), None, i % 2) for i in range(2000)]
    reports = produce_all(broker.bootstrap, "idem", msgs, **{"enable.idempotence": True, "acks": "all",
                                                            "max.in.flight.requests.per.connection": 5})
    got = consume_all(broker.bootstrap, "idem", 2, 2000)
    assert sorted(g[3] for g in got) == sorted(m[1] for m in msgs)
    for p in (0, 1):
        offsets = sorted(r[2] for r in reports if r[1] == p)
        assert offsets == list(range(1000)), "no duplicates, no gaps"


def test_restart_and_read_back(make_broker):
    b = make_broker().start()
    create_topic(b.bootstrap, "keep", partitions=4, config={"segment.bytes": "65536"})
    msgs = [(f"k{i}".encode(), b"x" * 300 + str(i).encode(), None, None) for i in range(3000)]
    produce_all(b.bootstrap, "keep", msgs)
    before = sorted(consume_all(b.bootstrap, "keep", 4, 3000))
    b.stop()
    b.start()
    after = sorted(consume_all(b.bootstrap, "keep", 4, 3000))
    assert after == before
    # The topic and its config survived, and production continues after the restart.
    produce_all(b.bootstrap, "keep", [(b"new", b"after", None, 0)])
    assert len(consume_all(b.bootstrap, "keep", 4, 3001)) == 3001


def test_list_offsets_earliest_latest_and_by_time(broker):
    create_topic(broker.bootstrap, "times", partitions=1)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    base = int(time.time() * 1000) - 100_000
    for i in range(100):
        p.produce("times", value=str(i).encode(), timestamp=base + i * 1000)
    p.flush(10)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "x"})
    lo, hi = c.get_watermark_offsets(TopicPartition("times", 0), timeout=10)
    assert (lo, hi) == (0, 100)
    found = c.offsets_for_times([TopicPartition("times", 0, base + 42_500)], timeout=10)
    assert found[0].offset == 43
    found = c.offsets_for_times([TopicPartition("times", 0, base + 1_000_000)], timeout=10)
    assert found[0].offset in (-1, 100)  # end of log
    c.close()


def test_zero_copy_fetch_is_proven_by_metrics(broker):
    create_topic(broker.bootstrap, "zc", partitions=1)
    produce_all(broker.bootstrap, "zc", [(None, b"z" * 1000, None, 0) for _ in range(2000)])
    before = broker.metrics()
    got = consume_all(broker.bootstrap, "zc", 1, 2000)
    assert len(got) == 2000
    after = broker.metrics()
    sent = after["ringmq_fetch_zero_copy_bytes_total"] - before["ringmq_fetch_zero_copy_bytes_total"]
    assert sent >= 2000 * 1000, sent
    assert after["ringmq_fetch_copied_bytes_total"] == 0


def test_zero_copy_to_a_slow_reader_and_from_cold_pages(make_broker):
    """A consumer with a 4 KiB receive buffer that takes 20 MB in one fetch: the broker's
    socket fills again and again (splice waits for writability, never blocks the shard),
    and after a restart the same bytes come from files not in the page cache yet."""
    b = make_broker().start()
    create_topic(b.bootstrap, "slow", partitions=1)
    values = [bytes([i % 251]) * 4000 for i in range(5000)]
    produce_all(b.bootstrap, "slow", [(None, v, None, 0) for v in values])

    def read_slowly():
        c = kafka.KafkaConsumer("slow", bootstrap_servers=b.bootstrap, auto_offset_reset="earliest",
                                receive_buffer_bytes=4096, fetch_max_bytes=30 << 20,
                                max_partition_fetch_bytes=30 << 20, consumer_timeout_ms=20000)
        got = []
        for m in c:
            got.append(m.value)
            if len(got) == 1:
                time.sleep(0.5)  # let the broker's send buffer fill while we do not read
            if len(got) == len(values):
                break
        c.close()
        return got

    assert read_slowly() == values
    assert b.metrics()["ringmq_fetch_copied_bytes_total"] == 0
    b.stop()
    subprocess.run(["sh", "-c", "sync; echo 1 > /proc/sys/vm/drop_caches"], check=False)
    b.start()
    assert read_slowly() == values
    assert b.metrics()["ringmq_fetch_copied_bytes_total"] == 0


def test_incremental_fetch_sessions_with_kafka_python(broker):
    """kafka-python uses KIP-227 sessions: consume while producing in waves over 8
    partitions; every message arrives once, in order per partition."""
    create_topic(broker.bootstrap, "sess", partitions=8)
    c = kafka.KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, fetch_max_wait_ms=100,
                            auto_offset_reset="earliest", consumer_timeout_ms=3000)
    c.assign([kafka.TopicPartition("sess", p) for p in range(8)])
    p = kafka.KafkaProducer(bootstrap_servers=broker.bootstrap)
    got = []
    for wave in range(10):
        for i in range(50):
            p.send("sess", value=f"{wave}-{i}".encode(), partition=(wave + i) % 3)  # only some partitions change
        p.flush()
        deadline = time.time() + 10
        while len(got) < (wave + 1) * 50 and time.time() < deadline:
            for records in c.poll(timeout_ms=200).values():
                got.extend((r.partition, r.offset, r.value) for r in records)
    c.close()
    assert len(got) == 500
    assert len({(g[0], g[1]) for g in got}) == 500
    for part in range(3):
        offsets = [g[1] for g in got if g[0] == part]
        assert offsets == list(range(len(offsets)))
    m = broker.metrics()
    assert m["ringmq_fetch_sessions_opened_total"] >= 1
    assert m["ringmq_fetch_incremental_requests_total"] > 3


def test_partitions_are_re_placed_when_the_shard_count_changes(make_broker):
    b = make_broker(extra_args=["--shards", "2"]).start()
    create_topic(b.bootstrap, "moves", partitions=6)
    produce_all(b.bootstrap, "moves", [(f"k{i}".encode(), f"v{i}".encode(), None, i % 6) for i in range(600)])
    before = sorted(consume_to_end(b.bootstrap, "moves", 6))
    b.stop()
    b.extra_args = ["--shards", "1"]
    b.start()
    assert sorted(consume_to_end(b.bootstrap, "moves", 6)) == before
    produce_all(b.bootstrap, "moves", [(b"after", b"one-shard", None, 5)])
    b.stop()
    b.extra_args = ["--shards", "2"]
    b.start()
    assert len(consume_to_end(b.bootstrap, "moves", 6)) == 601
