"""Consumer groups with real clients: members split partitions, a member that leaves or
dies hands its partitions over, and the group resumes from committed offsets."""
import threading
import time

import kafka
from confluent_kafka import Consumer, Producer

from test_clients import create_topic, produce_all

GROUP_BROKER = {"group.initial.rebalance.delay.ms": "200"}


def group_consumer(bootstrap, group, **extra):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": True, "auto.commit.interval.ms": 200, "session.timeout.ms": 6000,
                  "heartbeat.interval.ms": 500, **extra})
    c.subscribe(["g-topic"])
    return c


def poll_until(consumers, predicate, timeout=30):
    seen = {id(c): [] for c in consumers}
    deadline = time.time() + timeout
    while time.time() < deadline and not predicate(seen):
        for c in consumers:
            m = c.poll(0.1)
            if m is not None and not m.error():
                seen[id(c)].append((m.partition(), m.offset()))
    return seen


def test_two_consumers_split_partitions_and_survivor_takes_over(make_broker):
    b = make_broker(properties=GROUP_BROKER).start()
    create_topic(b.bootstrap, "g-topic", partitions=4)
    produce_all(b.bootstrap, "g-topic", [(None, str(i).encode(), None, i % 4) for i in range(400)])
    c1 = group_consumer(b.bootstrap, "g1")
    c2 = group_consumer(b.bootstrap, "g1")
    seen = poll_until([c1, c2], lambda s: sum(len(v) for v in s.values()) >= 400)
    p1 = {p for p, _ in seen[id(c1)]}
    p2 = {p for p, _ in seen[id(c2)]}
    assert sum(len(v) for v in seen.values()) == 400
    assert p1 and p2 and not (p1 & p2), f"partitions split: {p1} / {p2}"
    time.sleep(0.6)  # auto-commit
    c2.close()  # LeaveGroup: c1 takes over all four partitions
    produce_all(b.bootstrap, "g-topic", [(None, b"more", None, i % 4) for i in range(40)])
    more = poll_until([c1], lambda s: len(s[id(c1)]) >= 40)
    assert len(more[id(c1)]) == 40, "survivor consumed the new messages on every partition, nothing twice"
    assert {p for p, _ in more[id(c1)]} == {0, 1, 2, 3}
    c1.close()


def test_killed_member_is_expired_and_group_resumes_from_commits(make_broker):
    import subprocess
    import sys
    b = make_broker(properties=GROUP_BROKER).start()
    create_topic(b.bootstrap, "g-topic", partitions=2)
    produce_all(b.bootstrap, "g-topic", [(None, str(i).encode(), None, i % 2) for i in range(200)])
    # A member that commits the first 50 of each partition, then dies by SIGKILL.
    script = f"""
import time
from confluent_kafka import Consumer, TopicPartition
c = Consumer({{"bootstrap.servers": "{b.bootstrap}", "group.id": "g2", "auto.offset.reset": "earliest",
              "enable.auto.commit": False, "session.timeout.ms": 6000}})
c.subscribe(["g-topic"])
seen = 0
while seen < 200:
    m = c.poll(0.2)
    if m is not None and not m.error():
        seen += 1
c.commit(offsets=[TopicPartition("g-topic", 0, 50), TopicPartition("g-topic", 1, 50)], asynchronous=False)
print("ready", flush=True)
time.sleep(600)
"""
    dead = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert dead.stdout.readline().strip() == "ready"
    dead.kill()
    dead.wait()
    survivor = group_consumer(b.bootstrap, "g2")
    seen = poll_until([survivor], lambda s: len(s[id(survivor)]) >= 100, timeout=25)
    time.sleep(0.5)
    seen_more = poll_until([survivor], lambda s: False, timeout=1)
    survivor.close()
    got = seen[id(survivor)] + seen_more[id(survivor)]
    # The dead member's session expired; the survivor owns both partitions and resumes
    # exactly at the committed offsets: nothing lost, nothing committed read twice.
    for p in (0, 1):
        assert sorted(o for q, o in got if q == p) == list(range(50, 100))
def test_group_listing_description_and_delete_rules(make_broker):
    from confluent_kafka.admin import AdminClient
    b = make_broker(properties=GROUP_BROKER).start()
    create_topic(b.bootstrap, "g-topic", partitions=2)
    produce_all(b.bootstrap, "g-topic", [(None, b"x", None, 0)])
    c = group_consumer(b.bootstrap, "g3", **{"client.id": "app-1"})
    poll_until([c], lambda s: len(s[id(c)]) >= 1)
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    listed = admin.list_consumer_groups().result(10)
    assert "g3" in [g.group_id for g in listed.valid]
    desc = admin.describe_consumer_groups(["g3"])["g3"].result(10)
    assert desc.state.name == "STABLE"
    assert [(m.client_id, m.host) for m in desc.members] == [("app-1", "/127.0.0.1")]
    res = admin.delete_consumer_groups(["g3"])["g3"]
    try:
        res.result(10)
        raise AssertionError("deleting a group with members must fail")
    except Exception as e:
        assert "NON_EMPTY_GROUP" in str(e)
    c.close()
    time.sleep(0.3)
    admin.delete_consumer_groups(["g3"])["g3"].result(10)


def test_static_member_restart_does_not_rebalance(make_broker):
    from confluent_kafka.admin import AdminClient
    b = make_broker(properties=GROUP_BROKER).start()
    create_topic(b.bootstrap, "g-topic", partitions=4)
    produce_all(b.bootstrap, "g-topic", [(None, b"x", None, i % 4) for i in range(40)])
    events = []

    def static(instance):
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "g-static", "group.instance.id": instance,
                      "auto.offset.reset": "earliest", "session.timeout.ms": 10000, "heartbeat.interval.ms": 300})
        c.subscribe(["g-topic"], on_assign=lambda _c, ps: events.append((instance, "assign", sorted(p.partition for p in ps))),
                    on_revoke=lambda _c, ps: events.append((instance, "revoke", sorted(p.partition for p in ps))))
        return c

    a, b1 = static("inst-a"), static("inst-b")
    poll_until([a, b1], lambda s: len(a.assignment()) == 2 and len(b1.assignment()) == 2, timeout=20)
    before = (sorted(p.partition for p in a.assignment()), sorted(p.partition for p in b1.assignment()))
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    events.clear()
    b1.close()  # a static member does not leave the group on close
    b2 = static("inst-b")
    poll_until([a, b2], lambda s: len(b2.assignment()) == 2, timeout=20)
    assert sorted(p.partition for p in b2.assignment()) == before[1], "the same partitions came back"
    assert sorted(p.partition for p in a.assignment()) == before[0]
    assert not [e for e in events if e[0] == "inst-a"], f"the other member was not rebalanced: {events}"
    desc = admin.describe_consumer_groups(["g-static"])["g-static"].result(10)
    assert desc.state.name == "STABLE" and len(desc.members) == 2
    assert sorted(m.group_instance_id for m in desc.members) == ["inst-a", "inst-b"]
    a.close()
    b2.close()


def test_offset_delete(make_broker):
    from kafka.admin import KafkaAdminClient
    b = make_broker(properties=GROUP_BROKER).start()
    create_topic(b.bootstrap, "g-topic", partitions=2)
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "g-del"})
    from confluent_kafka import TopicPartition
    c.commit(offsets=[TopicPartition("g-topic", 0, 5), TopicPartition("g-topic", 1, 7)], asynchronous=False)
    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    result = admin.delete_group_offsets("g-del", [kafka.TopicPartition("g-topic", 0)])
    assert all(err is None or getattr(err, "errno", 0) == 0 for err in result.values()), result
    left = c.committed([TopicPartition("g-topic", 0), TopicPartition("g-topic", 1)], timeout=10)
    assert [tp.offset for tp in left] == [-1001, 7]
    # An active group's offsets are not deleted.
    member = group_consumer(b.bootstrap, "g-del")
    poll_until([member], lambda s: len(member.assignment()) > 0, timeout=15)
    refused = admin.delete_group_offsets("g-del", [kafka.TopicPartition("g-topic", 1)])
    # kafka-python reports error classes, not instances.
    names = [getattr(err, "__name__", type(err).__name__) for err in refused.values()]
    assert names == ["GroupSubscribedToTopicError"], refused
    member.close()
    admin.close()
    c.close()


def test_three_members_cooperative_sticky_and_kafka_python(make_broker):
    b = make_broker(properties=GROUP_BROKER).start()
    create_topic(b.bootstrap, "g-topic", partitions=6)
    produce_all(b.bootstrap, "g-topic", [(None, str(i).encode(), None, i % 6) for i in range(600)])
    coop = [group_consumer(b.bootstrap, "g-coop", **{"partition.assignment.strategy": "cooperative-sticky"}) for _ in range(3)]
    seen = poll_until(coop, lambda s: sum(len(v) for v in s.values()) >= 600)
    assert sum(len(v) for v in seen.values()) == 600
    owned = [sorted(p.partition for p in c.assignment()) for c in coop]
    assert sorted(sum(owned, [])) == list(range(6)) and all(len(o) == 2 for o in owned), owned
    for c in coop:
        c.close()
    # kafka-python's group consumer (its own assignor and heartbeat thread).
    kc = kafka.KafkaConsumer("g-topic", bootstrap_servers=b.bootstrap, group_id="g-kp", auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)
    assert len(list(kc)) == 600
    kc.close()
