"""ringmq answers as Apache Kafka answers: the same request sent to both (Kafka 4.x as the
reference, the kafka_peer fixture in conftest), responses compared field by field (kafka_api.diff), volatile
fields (ids, hosts, ports, throttle) aside. Each case here was a difference once."""
import time

import pytest
from confluent_kafka import Consumer, Producer
from kafka.protocol.admin import (CreateTopicsRequest, DeleteRecordsRequest, DescribeClusterRequest,
                                  DescribeGroupsRequest, ListGroupsRequest)
from kafka.protocol.consumer import ListOffsetsRequest
from kafka.protocol.metadata import MetadataRequest
from kafka.protocol.producer import ProduceRequest
from kafka.record.default_records import DefaultRecordBatchBuilder

from kafka_api import build, call, diff, to_plain

VOLATILE = {"throttle_time_ms", "topic_id", "cluster_id", "controller_id", "host", "port",
            "node_id", "leader_id", "broker_id", "log_append_time_ms"}


def same_answer(kafka, ringmq, make_request, ignore=frozenset()):
    a = to_plain(call(kafka, make_request()))
    b = to_plain(call(ringmq, make_request()))
    d = diff(a, b, VOLATILE | set(ignore))
    assert not d, "ringmq differs from Kafka:\n" + "\n".join(d[:20])
    return b


def create(bootstrap, name, partitions=1, configs=None):
    resp = call(bootstrap, build(CreateTopicsRequest, 7, timeout_ms=10000, topics=[{
        "name": name, "num_partitions": partitions, "replication_factor": 1,
        "configs": [{"name": k, "value": v} for k, v in (configs or {}).items()]}]))
    assert resp.topics[0].error_code == 0, to_plain(resp)


def batch(records, compression=0):
    """A v2 batch of (key, value, timestamp_ms) records, as bytes."""
    b = DefaultRecordBatchBuilder(magic=2, compression_type=compression, is_transactional=False,
                                  producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for i, (key, value, ts) in enumerate(records):
        b.append(i, timestamp=ts, key=key, value=value, headers=[])
    return bytes(b.build())


def produce(topic, records_bytes, version=9):
    return lambda: build(ProduceRequest, version, acks=-1, timeout_ms=10000, transactional_id=None,
                         topic_data=[{"name": topic, "partition_data": [{"index": 0, "records": records_bytes}]}])


@pytest.fixture
def both(kafka_peer, broker):
    return kafka_peer, broker.bootstrap


def unique(name):
    return f"{name}-{time.time_ns()}"


def test_create_topics_null_error_message_and_refusals(both):
    kafka, ringmq = both
    t = unique("ct")
    same_answer(kafka, ringmq, lambda: build(CreateTopicsRequest, 7, timeout_ms=10000, validate_only=True,
                topics=[{"name": t, "num_partitions": 2, "replication_factor": 1}]), ignore={"configs"})
    r = same_answer(kafka, ringmq, lambda: build(CreateTopicsRequest, 4, timeout_ms=10000,
                    topics=[{"name": t, "num_partitions": 2, "replication_factor": 1}]))
    assert r["topics"][0]["error_message"] is None
    # Explicit replica assignments on broker 1 (both peers are node 1), and bad ones.
    same_answer(kafka, ringmq, lambda: build(CreateTopicsRequest, 7, timeout_ms=10000, topics=[{
        "name": t + "-a", "num_partitions": -1, "replication_factor": -1,
        "assignments": [{"partition_index": 0, "broker_ids": [1]}, {"partition_index": 1, "broker_ids": [1]}]}]),
        ignore={"configs"})
    for bad in ([{"partition_index": 0, "broker_ids": [7]}],
                [{"partition_index": 0, "broker_ids": [1, 1]}],
                [{"partition_index": 1, "broker_ids": [1]}]):
        a = to_plain(call(kafka, build(CreateTopicsRequest, 7, timeout_ms=10000, topics=[{
            "name": unique("bad"), "num_partitions": -1, "replication_factor": -1, "assignments": bad}])))
        b = to_plain(call(ringmq, build(CreateTopicsRequest, 7, timeout_ms=10000, topics=[{
            "name": unique("bad"), "num_partitions": -1, "replication_factor": -1, "assignments": bad}])))
        assert a["topics"][0]["error_code"] == b["topics"][0]["error_code"] != 0, (bad, a, b)


def test_create_topics_refuses_a_name_given_twice_and_creates_the_rest(both):
    kafka, ringmq = both
    dup, other = unique("dup"), unique("other")
    r = same_answer(kafka, ringmq, lambda: build(CreateTopicsRequest, 7, timeout_ms=10000, topics=[
        {"name": dup, "num_partitions": 1, "replication_factor": 1},
        {"name": other, "num_partitions": 1, "replication_factor": 1},
        {"name": dup, "num_partitions": 2, "replication_factor": 1}]), ignore={"configs"})
    by_name = {t["name"]: t for t in r["topics"]}
    assert len(r["topics"]) == 2
    assert (by_name[dup]["error_code"], by_name[dup]["error_message"]) == (42, "Duplicate topic name.")
    assert by_name[other]["error_code"] == 0
    for peer in (kafka, ringmq):
        topics = {t.name: t.error_code for t in call(peer, build(MetadataRequest, 4, topics=[
            {"name": dup}, {"name": other}], allow_auto_topic_creation=False)).topics}
        assert topics == {dup: 3, other: 0}, (peer, topics)


def test_subtracting_delete_leaves_an_empty_cleanup_policy(both):
    """Kafka 4.x accepts an empty cleanup.policy (no retention, no compaction); what
    IncrementalAlterConfigs leaves after subtracting `delete` is that."""
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                       ResourceType)
    t = unique("nopolicy")
    values = []
    for bs in both:
        create(bs, t)
        admin = AdminClient({"bootstrap.servers": bs})
        res = ConfigResource(ResourceType.TOPIC, t, incremental_configs=[
            ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SUBTRACT)])
        for f in admin.incremental_alter_configs([res]).values():
            f.result(timeout=10)
        described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, t)])
        values.append(next(iter(described.values())).result(timeout=10)["cleanup.policy"].value)
    assert values == ["", ""], values


def test_metadata_that_auto_creates_a_topic_answers_it_as_not_there_yet(both):
    """The Metadata request that triggers auto-creation answers the topic as Kafka does
    (not there yet, no partitions); the next ones show it (kafka-go relies on this after
    DeleteTopics)."""
    kafka, ringmq = both
    t = unique("auto")
    r = same_answer(kafka, ringmq, lambda: build(MetadataRequest, 12, topics=[{"name": t}],
                    allow_auto_topic_creation=True, include_topic_authorized_operations=False),
                    ignore={"brokers"})
    assert r["topics"][0]["error_code"] != 0 and r["topics"][0]["partitions"] == []
    for peer in both:
        deadline = time.time() + 15
        while True:
            md = call(peer, build(MetadataRequest, 12, topics=[{"name": t}], allow_auto_topic_creation=False,
                                  include_topic_authorized_operations=False))
            if md.topics[0].error_code == 0 and md.topics[0].partitions:
                break
            assert time.time() < deadline, (peer, to_plain(md))
            time.sleep(0.1)


def test_every_topic_config_kafka_lists_is_accepted(both):
    """Every key Kafka 4.4 lists for a topic is one ringmq lists and accepts: each set to
    Kafka's own default in a CreateTopics (validate only) passes on both; a bad value and
    tiered storage are refused on both."""
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
    kafka, ringmq = both
    t = unique("allkeys")
    keys = []
    for bs in both:
        create(bs, t)
        admin = AdminClient({"bootstrap.servers": bs})
        described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, t)])
        keys.append({k: e.value for k, e in next(iter(described.values())).result(timeout=10).items()})
    kafka_keys, ringmq_keys = keys
    assert set(kafka_keys) <= set(ringmq_keys), sorted(set(kafka_keys) - set(ringmq_keys))

    def create_code(bs, configs):
        r = call(bs, build(CreateTopicsRequest, 7, timeout_ms=10000, validate_only=True, topics=[{
            "name": unique("v"), "num_partitions": 1, "replication_factor": 1,
            "configs": [{"name": k, "value": v} for k, v in configs.items()]}]))
        return r.topics[0].error_code, r.topics[0].error_message
    for key, value in sorted(kafka_keys.items()):
        for bs in both:
            assert create_code(bs, {key: value})[0] == 0, (bs, key, value, create_code(bs, {key: value}))
    for bad in ({"segment.jitter.ms": "-1"}, {"compression.zstd.level": "99"}, {"preallocate": "maybe"},
                {"remote.storage.enable": "true"}, {"max.compaction.lag.ms": "0"}):
        codes = [create_code(bs, bad)[0] for bs in both]
        assert codes[0] == codes[1] != 0, (bad, [create_code(bs, bad) for bs in both])


def test_create_partitions_with_explicit_replicas(both):
    """CreatePartitions naming each new partition's replicas (`kafka-topics --alter
    --replica-assignment`): placed as asked; wrong counts, unknown or repeated brokers are
    INVALID_REPLICA_ASSIGNMENT with Kafka's message, and change nothing."""
    from kafka.protocol.admin import CreatePartitionsRequest
    kafka, ringmq = both
    t = unique("grow")
    for bs in both:
        create(bs, t)
    req = lambda count, assignments: lambda: build(CreatePartitionsRequest, 3, timeout_ms=10000,  # noqa: E731
                                                   validate_only=False, topics=[{
                                                       "name": t, "count": count, "assignments": assignments}])
    for bad in ([], [{"broker_ids": [1]}], [{"broker_ids": [7]}, {"broker_ids": [1]}],
                [{"broker_ids": [1, 1]}, {"broker_ids": [1]}], [{"broker_ids": []}, {"broker_ids": [1]}]):
        r = same_answer(kafka, ringmq, req(3, bad))
        assert r["results"][0]["error_code"] == 39, (bad, r)
    r = same_answer(kafka, ringmq, req(3, [{"broker_ids": [1]}, {"broker_ids": [1]}]))
    assert r["results"][0]["error_code"] == 0
    for bs in both:
        md = call(bs, build(MetadataRequest, 4, topics=[{"name": t}], allow_auto_topic_creation=False))
        assert sorted((p.partition_index, list(p.replica_nodes)) for p in md.topics[0].partitions) == \
            [(0, [1]), (1, [1]), (2, [1])], bs


def test_delete_records_edges(both):
    kafka, ringmq = both
    t = unique("dr")
    for bs in both:
        create(bs, t)
        p = Producer({"bootstrap.servers": bs})
        for _ in range(10):
            p.produce(t, value=b"x")
        assert p.flush(10) == 0
    req = lambda off: lambda: build(DeleteRecordsRequest, 2, timeout_ms=10000, topics=[
        {"name": t, "partitions": [{"partition_index": 0, "offset": off}]}])
    for offset in (5, 2, 11, -5, -1):   # forward, below the start, above the HW, negative, the HW
        same_answer(kafka, ringmq, req(offset))


def test_authorized_operations_when_asked(both):
    kafka, ringmq = both
    t = unique("ops")
    for bs in both:
        create(bs, t)
    for asked in (True, False):
        same_answer(kafka, ringmq, lambda: build(MetadataRequest, 12, topics=[{"name": t}],
                    allow_auto_topic_creation=False, include_topic_authorized_operations=asked),
                    ignore={"brokers", "leader_epoch"})
        same_answer(kafka, ringmq, lambda: build(DescribeClusterRequest, 1,
                    include_cluster_authorized_operations=asked), ignore={"brokers"})


def test_groups_list_with_type_filter_and_describe(both):
    kafka, ringmq = both
    t, g = unique("lg"), unique("group")
    for bs in both:
        create(bs, t)
        c = Consumer({"bootstrap.servers": bs, "group.id": g, "auto.offset.reset": "earliest"})
        c.subscribe([t])
        deadline = time.time() + 30
        while not c.assignment() and time.time() < deadline:
            c.poll(0.2)
        c.close()
    for types in ([], ["classic"], ["consumer"], ["CLASSIC", "share"]):
        a = to_plain(call(kafka, build(ListGroupsRequest, 5, states_filter=[], types_filter=types)))
        b = to_plain(call(ringmq, build(ListGroupsRequest, 5, states_filter=[], types_filter=types)))
        ga = {x["group_id"]: x for x in a["groups"] if x["group_id"] == g}
        gb = {x["group_id"]: x for x in b["groups"] if x["group_id"] == g}
        assert diff(ga, gb) == [], (types, ga, gb)
    same_answer(kafka, ringmq, lambda: build(DescribeGroupsRequest, 5, groups=[g],
                include_authorized_operations=True), ignore={"members"})


def test_a_group_with_only_committed_offsets_is_empty(both):
    """Offsets committed without joining (assign + commit): the group exists, Empty, in
    ListGroups and DescribeGroups alike."""
    from confluent_kafka import TopicPartition
    kafka, ringmq = both
    t, g = unique("simple"), unique("simple-group")
    for bs in both:
        create(bs, t)
        c = Consumer({"bootstrap.servers": bs, "group.id": g, "enable.auto.commit": False})
        c.assign([TopicPartition(t, 0, 0)])
        c.commit(offsets=[TopicPartition(t, 0, 0)], asynchronous=False)
        c.close()
    a = to_plain(call(kafka, build(ListGroupsRequest, 5, states_filter=[], types_filter=[])))
    b = to_plain(call(ringmq, build(ListGroupsRequest, 5, states_filter=[], types_filter=[])))
    ga = [x for x in a["groups"] if x["group_id"] == g]
    gb = [x for x in b["groups"] if x["group_id"] == g]
    assert ga and diff(ga, gb) == [], (ga, gb)
    r = same_answer(kafka, ringmq, lambda: build(DescribeGroupsRequest, 5, groups=[g],
                    include_authorized_operations=True))
    assert r["groups"][0]["group_state"] == "Empty"


def test_compacted_topic_rejects_records_without_keys(both):
    kafka, ringmq = both
    t = unique("compact")
    for bs in both:
        create(bs, t, configs={"cleanup.policy": "compact"})
    now = int(time.time() * 1000)
    for codec in (0, 1):    # uncompressed, gzip
        r = same_answer(kafka, ringmq, produce(t, batch([(b"k", b"v", now), (None, b"v", now), (None, b"w", now)],
                                                      codec)), ignore={"base_offset", "log_start_offset"})
        p = r["responses"][0]["partition_responses"][0]
        assert p["error_code"] == 87 and [e["batch_index"] for e in p["record_errors"]] == [1, 2]
    same_answer(kafka, ringmq, produce(t, batch([(b"k", b"v", now)])), ignore={"base_offset"})


def test_list_offsets_max_timestamp_is_record_exact(both):
    kafka, ringmq = both
    now = int(time.time() * 1000)
    for codec in (0, 1, 2, 3, 4):   # none, gzip, snappy, lz4, zstd
        t = unique(f"maxts{codec}")
        for bs in both:
            create(bs, t)
            call(bs, produce(t, batch([(None, b"a", now + 100), (None, b"b", now + 400), (None, b"c", now + 200)],
                                       codec))())
        r = same_answer(kafka, ringmq, lambda: build(ListOffsetsRequest, 9, replica_id=-1, isolation_level=0,
                        topics=[{"name": t, "partitions": [{"partition_index": 0, "timestamp": -3}]}]))
        assert r["topics"][0]["partitions"][0]["offset"] == 1, (codec, r)


@pytest.mark.parametrize("topic_codec", ["gzip", "lz4", "zstd", "snappy", "uncompressed"])
def test_topic_compression_type_recompresses(both, topic_codec):
    kafka, ringmq = both
    t = unique(f"tc-{topic_codec}")
    values = [f"value-{i}".encode() * 20 for i in range(50)]
    for bs in both:
        create(bs, t, configs={"compression.type": topic_codec})
        p = Producer({"bootstrap.servers": bs, "compression.type": "lz4" if topic_codec != "lz4" else "gzip",
                      "linger.ms": 50})
        for v in values:
            p.produce(t, key=b"k", value=v)
        assert p.flush(10) == 0
        c = Consumer({"bootstrap.servers": bs, "group.id": unique("g"), "auto.offset.reset": "earliest",
                      "enable.auto.commit": False})
        c.subscribe([t])
        got = []
        deadline = time.time() + 30
        while len(got) < len(values) and time.time() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m.value())
        c.close()
        assert got == values, bs
    # The stored batches carry the topic's codec (attributes of the first batch fetched).
    codes = {"uncompressed": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
    from kafka.protocol.consumer import FetchRequest
    for bs in both:
        resp = call(bs, build(FetchRequest, 11, replica_id=-1, max_wait_ms=100, min_bytes=1, max_bytes=1 << 20,
                              isolation_level=0, session_id=0, session_epoch=-1, rack_id="", forgotten_topics_data=[],
                              topics=[{"topic": t, "partitions": [{"partition": 0, "fetch_offset": 0,
                                       "log_start_offset": -1, "partition_max_bytes": 1 << 20, "current_leader_epoch": -1}]}]))
        records = resp.responses[0].partitions[0].records
        raw = records if isinstance(records, (bytes, bytearray)) else records.buffer() if hasattr(records, "buffer") else bytes(records)
        attributes = int.from_bytes(raw[21:23], "big")
        assert attributes & 0x7 == codes[topic_codec], (bs, attributes)


def find_coordinator(bootstrap, group):
    """Waits until the group's coordinator is up (Kafka creates __consumer_offsets on the
    first FindCoordinator)."""
    from kafka.protocol.metadata import FindCoordinatorRequest
    deadline = time.time() + 60
    while True:
        r = call(bootstrap, build(FindCoordinatorRequest, 4, key_type=0, coordinator_keys=[group]))
        if r.coordinators[0].error_code == 0 or time.time() > deadline:
            assert r.coordinators[0].error_code == 0, to_plain(r)
            return
        time.sleep(0.2)


def test_replaced_static_member_is_fenced(both):
    """A second join with the same group.instance.id replaces the first member; the old
    incarnation's Heartbeat, SyncGroup, OffsetCommit and LeaveGroup get FENCED_INSTANCE_ID
    (a fatal error for the client), as in Kafka."""
    from kafka.protocol.consumer import (HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
                                         OffsetCommitRequest, SyncGroupRequest)
    g = unique("static")
    codes = {}
    for bs in both:
        create(bs, g)
        find_coordinator(bs, g)

        def join(member_id):
            return call(bs, build(JoinGroupRequest, 7, group_id=g, session_timeout_ms=30000,
                                  rebalance_timeout_ms=5000, member_id=member_id, group_instance_id="inst-1",
                                  protocol_type="consumer", reason=None,
                                  protocols=[{"name": "range", "metadata": b"\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00"}]))
        first = join("")
        deadline = time.time() + 60
        while first.error_code in (14, 15, 16) and time.time() < deadline:   # coordinator still loading
            time.sleep(0.2)
            first = join("")
        assert first.error_code == 0, (bs, to_plain(first))
        old, gen = first.member_id, first.generation_id
        sync = call(bs, build(SyncGroupRequest, 5, group_id=g, generation_id=gen, member_id=old,
                              group_instance_id="inst-1", protocol_type="consumer", protocol_name="range",
                              assignments=[{"member_id": old, "assignment": b""}]))
        assert sync.error_code == 0, to_plain(sync)
        second = join("")
        assert second.error_code == 0 and second.member_id != old, to_plain(second)
        got = [
            call(bs, build(HeartbeatRequest, 4, group_id=g, generation_id=gen, member_id=old,
                           group_instance_id="inst-1")).error_code,
            call(bs, build(SyncGroupRequest, 5, group_id=g, generation_id=gen, member_id=old,
                           group_instance_id="inst-1", protocol_type="consumer", protocol_name="range",
                           assignments=[])).error_code,
            call(bs, build(OffsetCommitRequest, 8, group_id=g, generation_id_or_member_epoch=gen, member_id=old,
                           group_instance_id="inst-1", topics=[{"name": g, "partitions": [
                               {"partition_index": 0, "committed_offset": 1, "committed_leader_epoch": -1,
                                "committed_metadata": ""}]}])).topics[0].partitions[0].error_code,
            call(bs, build(LeaveGroupRequest, 4, group_id=g, members=[
                {"member_id": old, "group_instance_id": "inst-1"}])).members[0].error_code,
            # The current incarnation is fine.
            call(bs, build(HeartbeatRequest, 4, group_id=g, generation_id=second.generation_id,
                           member_id=second.member_id, group_instance_id="inst-1")).error_code,
        ]
        codes[bs] = got
    kafka, ringmq = both
    assert codes[ringmq] == codes[kafka], codes
    assert codes[ringmq][:4] == [82, 82, 82, 82], codes


def test_describe_topic_partitions_pages_like_kafka(both):
    from kafka.protocol.admin import DescribeTopicPartitionsRequest
    kafka, ringmq = both
    base = unique("dtp")
    names = [f"{base}-a", f"{base}-b", f"{base}-c"]
    for bs in both:
        for i, n in enumerate(names):
            create(bs, n, partitions=i + 2)      # 2, 3, 4 partitions
    ignore = {"brokers"}
    ask = lambda topics, limit, cursor=None: lambda: build(   # noqa: E731
        DescribeTopicPartitionsRequest, 0, topics=[{"name": t} for t in topics],
        response_partition_limit=limit, cursor=cursor)
    same_answer(kafka, ringmq, ask(names, 2000), ignore)
    same_answer(kafka, ringmq, ask(names, 4), ignore)           # a page ends inside topic b
    same_answer(kafka, ringmq, ask(names, 4, {"topic_name": names[1], "partition_index": 2}), ignore)
    same_answer(kafka, ringmq, ask([names[0], base + "-missing"], 100), ignore)


def test_create_topics_reports_the_topic_configs(both):
    """CreateTopics v5+ lists the new topic's configs with their sources, as Kafka does."""
    kafka, ringmq = both
    t = unique("cfgs")
    req = lambda: build(CreateTopicsRequest, 7, timeout_ms=10000, topics=[{   # noqa: E731
        "name": t, "num_partitions": 1, "replication_factor": 1,
        "configs": [{"name": "retention.ms", "value": "3600000"}, {"name": "cleanup.policy", "value": "compact"}]}])
    a = {c["name"]: c for c in to_plain(call(kafka, req()))["topics"][0]["configs"]}
    b = {c["name"]: c for c in to_plain(call(ringmq, req()))["topics"][0]["configs"]}
    assert len(b) >= 10 and {"retention.ms", "cleanup.policy", "compression.type"} <= set(a) & set(b), (a, b)
    # (max.message.bytes and segment.bytes defaults differ on purpose: the seeds' 10 MB
    # and 500 MB.)
    for k in ("retention.ms", "cleanup.policy", "compression.type", "message.timestamp.type"):
        assert (a[k]["value"], a[k]["config_source"]) == (b[k]["value"], b[k]["config_source"]), (k, a[k], b[k])
