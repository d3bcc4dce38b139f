"""Topic administration through confluent-kafka's AdminClient: configs, errors Kafka
defines, partitions, DeleteRecords, DeleteTopics, DescribeCluster, auto-creation."""
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

from test_clients import consume_to_end, create_topic, produce_all


_ADMINS = {}


def admin(broker):
    """One AdminClient per broker, kept alive (a collected client cancels its futures)."""
    if broker.bootstrap not in _ADMINS:
        _ADMINS[broker.bootstrap] = AdminClient({"bootstrap.servers": broker.bootstrap})
    return _ADMINS[broker.bootstrap]


def create_error(broker, topic):
    try:
        admin(broker).create_topics([topic])[topic.topic].result(10)
    except KafkaException as e:
        return e.args[0].code()
    return None


def test_create_topic_errors_are_kafkas(broker):
    create_topic(broker.bootstrap, "dup")
    assert create_error(broker, NewTopic("dup", 1, 1)) == KafkaError.TOPIC_ALREADY_EXISTS
    assert create_error(broker, NewTopic("rf3", 1, 3)) == KafkaError.INVALID_REPLICATION_FACTOR
    assert create_error(broker, NewTopic("bad/name", 1, 1)) == KafkaError.TOPIC_EXCEPTION
    assert create_error(broker, NewTopic("zero", 0, 1)) == KafkaError.INVALID_PARTITIONS
    assert create_error(broker, NewTopic("cfg", 1, 1, config={"retention.ms": "soon"})) == KafkaError.INVALID_CONFIG
    assert create_error(broker, NewTopic("cfg", 1, 1, config={"no.such.key": "1"})) == KafkaError.INVALID_CONFIG


def test_describe_configs_shows_overrides_and_defaults(broker):
    create_topic(broker.bootstrap, "conf", config={"retention.ms": "3600000", "cleanup.policy": "compact",
                                                   "flush.messages": "1"})
    res = ConfigResource(ConfigResource.Type.TOPIC, "conf")
    configs = admin(broker).describe_configs([res])[res].result(10)
    assert configs["retention.ms"].value == "3600000"
    assert configs["retention.ms"].source == 1  # DYNAMIC_TOPIC_CONFIG
    assert configs["cleanup.policy"].value == "compact"
    assert configs["flush.messages"].value == "1"
    assert configs["segment.bytes"].value == str(500 * 1024 * 1024)
    assert configs["segment.bytes"].source == 5  # DEFAULT_CONFIG
    broker_res = ConfigResource(ConfigResource.Type.BROKER, "1")
    bc = admin(broker).describe_configs([broker_res])[broker_res].result(10)
    assert bc["num.partitions"].value == "3"
    assert bc["message.max.bytes"].value == "10485760"


def test_create_partitions_grows_and_never_shrinks(broker):
    create_topic(broker.bootstrap, "grow", partitions=2)
    admin(broker).create_partitions([NewPartitions("grow", 5)])["grow"].result(10)
    produce_all(broker.bootstrap, "grow", [(None, b"in-4", None, 4)])
    assert [g[3] for g in consume_to_end(broker.bootstrap, "grow", 5)] == [b"in-4"]
    with pytest.raises(KafkaException) as e:
        admin(broker).create_partitions([NewPartitions("grow", 3)])["grow"].result(10)
    assert e.value.args[0].code() == KafkaError.INVALID_PARTITIONS


def test_delete_records_moves_the_low_watermark(broker):
    create_topic(broker.bootstrap, "trim", partitions=1)
    produce_all(broker.bootstrap, "trim", [(None, str(i).encode(), None, 0) for i in range(100)])
    result = admin(broker).delete_records([TopicPartition("trim", 0, 60)])
    tp = list(result.values())[0].result(10)
    assert tp.low_watermark == 60
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "x"})
    assert c.get_watermark_offsets(TopicPartition("trim", 0), timeout=10) == (60, 100)
    c.close()
    assert [int(g[3]) for g in consume_to_end(broker.bootstrap, "trim", 1)] == list(range(60, 100))


def test_delete_topic_and_recreate(broker):
    create_topic(broker.bootstrap, "gone", partitions=2)
    produce_all(broker.bootstrap, "gone", [(None, b"old", None, 0)])
    admin(broker).delete_topics(["gone"])["gone"].result(10)
    md = admin(broker).list_topics(timeout=10)
    assert "gone" not in md.topics
    with pytest.raises(KafkaException) as e:
        admin(broker).delete_topics(["gone"])["gone"].result(10)
    assert e.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    create_topic(broker.bootstrap, "gone", partitions=1)
    assert consume_to_end(broker.bootstrap, "gone", 1) == []


def test_describe_cluster(broker):
    desc = admin(broker).describe_cluster().result(10)
    assert desc.cluster_id == "ringmq-cluster"
    assert [(n.id, n.host, n.port) for n in desc.nodes] == [(1, "127.0.0.1", broker.port)]


def test_auto_create_can_be_switched_off(make_broker):
    b = make_broker(properties={"auto.create.topics.enable": "false"}).start()
    p = Producer({"bootstrap.servers": b.bootstrap, "message.timeout.ms": 2000})
    errs = []
    p.produce("nope", value=b"x", on_delivery=lambda e, m: errs.append(e))
    p.flush(5)
    assert errs and errs[0] is not None
    assert "nope" not in admin(b).list_topics(timeout=5).topics


def test_advertised_listener_is_what_metadata_returns(make_broker):
    b = make_broker(extra_args=["--advertise", "broker.example.com:9094"]).start()
    md = admin(b).list_topics(timeout=10)
    assert [(x.host, x.port) for x in md.brokers.values()] == [("broker.example.com", 9094)]


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_compaction_cleans_inside_compressed_batches(make_broker, codec):
    """A compacted topic written by a compressing producer (every batch holds every key,
    values that compress): the cleaner decompresses, drops superseded records and
    compresses again, as Kafka does. Below the active segment one value per key is left;
    keeping compressed batches whole would leave all 1500 records."""
    import time
    b = make_broker(properties={"log.retention.check.interval.ms": "300"}).start()
    create_topic(b.bootstrap, "ztable", partitions=1, config={
        "cleanup.policy": "compact", "segment.bytes": "16384", "min.cleanable.dirty.ratio": "0.01"})
    p = Producer({"bootstrap.servers": b.bootstrap, "compression.type": codec, "linger.ms": 50})
    for r in range(150):
        for i in range(10):
            p.produce("ztable", key=f"k{i}".encode(), value=f"{r:04d}-{i}-".encode() * 30, partition=0)
        p.flush(10)
    deadline, got = time.time() + 30, []
    while time.time() < deadline:
        got = consume_to_end(b.bootstrap, "ztable", 1)
        if len(got) <= 750:
            break
        time.sleep(0.5)
    assert len(got) <= 750, f"{len(got)} of 1500 records left: compressed batches were not compacted"
    latest = {g[2]: g[3] for g in got}
    assert latest == {f"k{i}".encode(): f"0149-{i}-".encode() * 30 for i in range(10)}


def test_retention_and_compaction_run_in_the_broker(make_broker):
    b = make_broker(properties={"log.retention.check.interval.ms": "300"}).start()
    create_topic(b.bootstrap, "short", partitions=1, config={"retention.ms": "1000", "segment.bytes": "16384"})
    create_topic(b.bootstrap, "table", partitions=1, config={"cleanup.policy": "compact", "segment.bytes": "16384",
                                                             "min.cleanable.dirty.ratio": "0.01"})
    # Separate flushes, so the data spans many batches and segments.
    for _ in range(10):
        produce_all(b.bootstrap, "short", [(None, b"x" * 1000, None, 0) for _ in range(10)])
    for r in range(10):
        produce_all(b.bootstrap, "table", [(f"k{i % 5}".encode(), f"{i}".encode() * 200, None, 0) for i in range(r * 30, r * 30 + 30)])
    import time
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "x"})
    deadline = time.time() + 15
    low = 0
    while time.time() < deadline:
        low, high = c.get_watermark_offsets(TopicPartition("short", 0), timeout=5)
        if low > 0:
            break
        time.sleep(0.3)
    c.close()
    assert 0 < low <= high == 100, "time retention deleted old segments"
    got = []
    while time.time() < deadline:
        got = consume_to_end(b.bootstrap, "table", 1)
        if len(got) < 150:
            break
        time.sleep(0.3)
    latest = {}
    for g in got:
        latest[g[2]] = g[3]
    assert len(got) < 150, "compaction removed superseded records"
    assert latest == {f"k{k}".encode(): str(max(i for i in range(300) if i % 5 == k)).encode() * 200 for k in range(5)}


def test_topics_of_many_partitions_are_created_in_one_request_with_bounded_threads(broker):
    """One CreateTopics of a 2000-partition topic and one of 100 topics of 4 partitions:
    each answered without error (the shards open the new logs in parallel batches), every
    partition has a leader and takes records, and the broker's threads stay bounded (its
    blocking pools are capped; they once grew to hundreds of idle threads)."""
    import re
    import time
    from pathlib import Path

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    started = time.time()
    admin.create_topics([NewTopic("wide", 2000, 1)], operation_timeout=60)["wide"].result(90)
    many = [NewTopic(f"many-{i}", 4, 1) for i in range(100)]
    for f in admin.create_topics(many, operation_timeout=60).values():
        f.result(90)
    elapsed = time.time() - started
    md = admin.list_topics(timeout=30).topics
    assert len(md["wide"].partitions) == 2000 and all(p.leader == 1 or p.leader >= 0
                                                       for p in md["wide"].partitions.values())
    assert all(len(md[f"many-{i}"].partitions) == 4 for i in range(100))
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for part in (0, 999, 1999):
        p.produce("wide", b"x", partition=part)
    p.produce("many-99", b"y", partition=3)
    assert p.flush(30) == 0
    threads = int(re.search(r"^Threads:\s+(\d+)", Path(f"/proc/{broker.proc.pid}/status").read_text(),
                            re.M).group(1))
    assert threads < 100, threads
    print(f"created 2400 partitions in {elapsed:.1f} s; {threads} threads")
