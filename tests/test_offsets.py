"""Committed offsets (the first part of consumer groups): FindCoordinator, OffsetCommit,
OffsetFetch with consumers outside group management (assign), stored in the internal,
compacted __consumer_offsets topic and surviving restarts."""
import time

import kafka
import pytest
from confluent_kafka import OFFSET_STORED, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from test_clients import create_topic, produce_all


def consume_n(c, n, timeout=15):
    got = []
    deadline = time.time() + timeout
    while len(got) < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append((m.partition(), m.offset()))
    return got


def test_commit_then_resume_from_committed_offsets_across_restart(make_broker):
    b = make_broker().start()
    create_topic(b.bootstrap, "work", partitions=1)
    produce_all(b.bootstrap, "work", [(None, str(i).encode(), None, 0) for i in range(200)])
    conf = {"bootstrap.servers": b.bootstrap, "group.id": "workers", "enable.auto.commit": False,
            "auto.offset.reset": "earliest"}
    c = Consumer(conf)
    c.assign([TopicPartition("work", 0, OFFSET_STORED)])
    got = consume_n(c, 60)
    assert got == [(0, o) for o in range(60)]
    c.commit(offsets=[TopicPartition("work", 0, 60)], asynchronous=False)
    assert c.committed([TopicPartition("work", 0)], timeout=10)[0].offset == 60
    c.close()
    b.stop()
    b.start()
    c2 = Consumer(conf)
    c2.assign([TopicPartition("work", 0, OFFSET_STORED)])
    rest = consume_n(c2, 140)
    c2.close()
    assert rest == [(0, o) for o in range(60, 200)], "resumed from the committed offset"


def test_kafka_python_commit_with_metadata_and_unknown_partitions(broker):
    create_topic(broker.bootstrap, "kp-off", partitions=3)
    c = kafka.KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="kp-group", enable_auto_commit=False)
    tp = kafka.TopicPartition("kp-off", 1)
    c.assign([tp])
    c.commit({tp: kafka.structs.OffsetAndMetadata(17, "cursor-17", -1)})
    assert c.committed(tp) == 17
    meta = c.committed(tp, metadata=True)
    assert meta.metadata == "cursor-17"
    assert c.committed(kafka.TopicPartition("kp-off", 2)) is None
    c.close()


def test_groups_are_independent_and_offsets_topic_is_protected(broker):
    create_topic(broker.bootstrap, "shared", partitions=1)
    for group, offset in (("alpha", 5), ("beta", 9)):
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
        c.commit(offsets=[TopicPartition("shared", 0, offset)], asynchronous=False)
        c.close()
    for group, offset in (("alpha", 5), ("beta", 9), ("gamma", -1001)):
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
        assert c.committed([TopicPartition("shared", 0)], timeout=10)[0].offset == offset
        c.close()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    md = admin.list_topics(timeout=10)
    assert "__consumer_offsets" in md.topics and len(md.topics["__consumer_offsets"].partitions) == 50
    with pytest.raises(KafkaException):
        admin.delete_topics(["__consumer_offsets"])["__consumer_offsets"].result(10)


def test_offsets_of_groups_without_members_expire(make_broker):
    b = make_broker(properties={"ringmq.offsets.retention.ms": "800",
                                "offsets.retention.check.interval.ms": "200"}).start()
    create_topic(b.bootstrap, "exp", partitions=1)
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "old-group"})
    c.commit(offsets=[TopicPartition("exp", 0, 3)], asynchronous=False)
    assert c.committed([TopicPartition("exp", 0)], timeout=10)[0].offset == 3
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    assert "old-group" in [g.group_id for g in admin.list_consumer_groups().result(10).valid]
    time.sleep(2)
    assert c.committed([TopicPartition("exp", 0)], timeout=10)[0].offset == -1001  # no offset
    assert "old-group" not in [g.group_id for g in admin.list_consumer_groups().result(10).valid]
    c.close()
