"""`ringmq group ...` against a real group: list, describe with lag and owners,
reset-offsets (dry run, by offset, by time) of a stopped group, delete rules."""
import time

from confluent_kafka import Consumer, Producer

from test_cli import ringmq
from test_clients import create_topic


def test_group_commands(make_broker):
    b = make_broker(properties={"group.initial.rebalance.delay.ms": "200"}).start()
    create_topic(b.bootstrap, "gt", partitions=2)
    p = Producer({"bootstrap.servers": b.bootstrap})
    base = int(time.time() * 1000) - 1_000_000
    for i in range(100):
        p.produce("gt", value=str(i).encode(), partition=i % 2, timestamp=base + i * 1000)
    p.flush(10)
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "cli-g", "auto.offset.reset": "earliest",
                  "client.id": "app-7", "enable.auto.commit": False})
    c.subscribe(["gt"])
    n = 0
    deadline = time.time() + 20
    while n < 100 and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            n += 1
    c.commit(asynchronous=False)
    assert "cli-g" in ringmq(b, "group", "list").stdout
    d = ringmq(b, "group", "describe", "cli-g").stdout
    assert "State: Stable" in d and "app-7" in d and "/127.0.0.1" in d
    r = ringmq(b, "group", "reset-offsets", "cli-g", "-t", "gt", "--to-earliest", check=False)
    assert r.returncode == 1 and "stop its consumers" in r.stderr
    c.close()
    time.sleep(0.3)
    d = ringmq(b, "group", "describe", "cli-g").stdout
    assert "State: Empty" in d
    rows = [l.split() for l in d.splitlines() if l.startswith("gt ")]
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [("0", "50", "50", "0"), ("1", "50", "50", "0")]
    plan = ringmq(b, "group", "reset-offsets", "cli-g", "-t", "gt", "--to-earliest", "--dry-run").stdout
    assert "dry run" in plan
    assert "50" in ringmq(b, "group", "describe", "cli-g").stdout.splitlines()[2]
    ringmq(b, "group", "reset-offsets", "cli-g", "-t", "gt", "-p", "0", "--to-offset", "10")
    # record i of partition 1 is offset i//2 with time base + i*1000: time of record 41 -> offset 20
    ringmq(b, "group", "reset-offsets", "cli-g", "-t", "gt", "-p", "1", "--to-datetime", str(base + 41_000))
    rows = [l.split() for l in ringmq(b, "group", "describe", "cli-g").stdout.splitlines() if l.startswith("gt ")]
    assert [(r[1], r[2], r[4]) for r in rows] == [("0", "10", "40"), ("1", "20", "30")]
    # The group resumes from the reset offsets.
    c2 = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "cli-g", "enable.auto.commit": False})
    c2.subscribe(["gt"])
    got = []
    deadline = time.time() + 20
    while len(got) < 70 and time.time() < deadline:
        m = c2.poll(0.2)
        if m is not None and not m.error():
            got.append((m.partition(), m.offset()))
    c2.close()
    assert min(o for q, o in got if q == 0) == 10 and min(o for q, o in got if q == 1) == 20
    time.sleep(0.3)
    ringmq(b, "group", "delete", "cli-g")
    r = ringmq(b, "group", "describe", "cli-g", check=False)
    assert r.returncode == 1 and "does not exist" in r.stderr


def test_a_group_known_only_by_its_offsets_is_empty_and_can_be_reset(make_broker):
    """After a restart (or offsets committed without joining) the coordinator knows a group
    only by its committed offsets: Kafka describes it Empty, and its offsets can be reset."""
    from confluent_kafka import TopicPartition
    b = make_broker().start()
    create_topic(b.bootstrap, "kept", partitions=1)
    p = Producer({"bootstrap.servers": b.bootstrap})
    for i in range(10):
        p.produce("kept", value=str(i).encode())
    p.flush(10)
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "kept-g", "enable.auto.commit": False})
    c.assign([TopicPartition("kept", 0, 0)])
    c.commit(offsets=[TopicPartition("kept", 0, 7)], asynchronous=False)
    c.close()
    b.stop()
    b.start()
    d = ringmq(b, "group", "describe", "kept-g").stdout
    assert "State: Empty" in d, d
    ringmq(b, "group", "reset-offsets", "kept-g", "-t", "kept", "--to-earliest")
    rows = [l.split() for l in ringmq(b, "group", "describe", "kept-g").stdout.splitlines() if l.startswith("kept ")]
    assert [(r[1], r[2]) for r in rows] == [("0", "0")]
