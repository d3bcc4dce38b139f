"""Transactions (SPEC K3, KIP-98/KIP-447): real transactional producers and
read_committed consumers against ringmqd — commit and abort, the last stable offset held
by an open transaction, zombie fencing, offsets committed in a transaction, timeouts,
restarts, and Kafka's error codes for out-of-order or stale transactional requests
(compared with Apache Kafka 4.x where the answer is in doubt)."""
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.protocol.metadata import FindCoordinatorRequest
from kafka.protocol.producer.transaction import (AddOffsetsToTxnRequest, AddPartitionsToTxnRequest,
                                                 EndTxnRequest, InitProducerIdRequest, TxnOffsetCommitRequest,
                                                 WriteTxnMarkersRequest)
from kafka.protocol.admin.transactions import DescribeTransactionsRequest, ListTransactionsRequest

from kafka_api import build, call, to_plain


def unique(name):
    return f"{name}-{uuid.uuid4().hex[:8]}"


def create(bootstrap, name, partitions=1, rf=1, config=None):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, rf, config=config or {})])[name].result(20)


def read_all(bootstrap, topic, partitions, isolation, settle=4.0, timeout=30):
    """Every value in `topic` as a consumer with `isolation` sees it: reads until nothing
    new arrived for `settle` seconds."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("reader"),
                  "isolation.level": isolation, "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        got, last, end = [], time.time(), time.time() + timeout
        while time.time() - last < settle and time.time() < end:
            m = c.poll(0.2)
            if m is not None and not m.error():
                got.append(m.value())
                last = time.time()
        return got
    finally:
        c.close()


def txn_producer(bootstrap, tid, **conf):
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": tid, **conf})
    p.init_transactions(30)
    return p


def test_read_committed_sees_committed_records_once_and_aborted_never(broker):
    t = unique("tx")
    create(broker.bootstrap, t, partitions=3)
    p = txn_producer(broker.bootstrap, unique("tid"))
    expected = []
    for round_ in range(6):
        p.begin_transaction()
        values = [f"r{round_}-{i}".encode() for i in range(20)]
        for i, v in enumerate(values):
            p.produce(t, value=v, partition=i % 3)
        p.flush(10)
        if round_ % 2 == 0:
            p.commit_transaction(30)
            expected += values
        else:
            p.abort_transaction(30)
    before = broker.metrics()
    committed = read_all(broker.bootstrap, t, 3, "read_committed")
    assert sorted(committed) == sorted(expected)
    # read_committed is a bound and an index lookup: the bytes still go zero-copy.
    after = broker.metrics()
    assert after["ringmq_fetch_zero_copy_bytes_total"] > before["ringmq_fetch_zero_copy_bytes_total"]
    assert after["ringmq_fetch_copied_bytes_total"] == 0
    everything = read_all(broker.bootstrap, t, 3, "read_uncommitted")
    assert len(everything) == 120, "read_uncommitted sees aborted records too"
    m = broker.metrics()
    assert m["ringmq_transactions_committed_total"] == 3
    assert m["ringmq_transactions_aborted_total"] == 3


def test_an_open_transaction_holds_the_last_stable_offset_until_it_ends(broker):
    t = unique("lso")
    create(broker.bootstrap, t)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    plain.produce(t, value=b"before")
    plain.flush(10)
    p = txn_producer(broker.bootstrap, unique("tid"))
    p.begin_transaction()
    p.produce(t, value=b"open")
    p.flush(10)
    plain.produce(t, value=b"after")
    plain.flush(10)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("g"),
                  "isolation.level": "read_committed"})
    u = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("g"),
                  "isolation.level": "read_uncommitted"})
    try:
        tp = TopicPartition(t, 0)
        # ListOffsets read_committed answers the LSO: the open transaction's first offset.
        assert c.get_watermark_offsets(tp, timeout=10) == (0, 1)
        assert u.get_watermark_offsets(tp, timeout=10) == (0, 3)
        assert read_all(broker.bootstrap, t, 1, "read_committed", settle=2) == [b"before"]
        p.commit_transaction(30)
        assert c.get_watermark_offsets(tp, timeout=10) == (0, 4)  # the marker is offset 3
        assert read_all(broker.bootstrap, t, 1, "read_committed") == [b"before", b"open", b"after"]
    finally:
        c.close()
        u.close()


def test_a_new_instance_fences_the_old_one_and_aborts_its_transaction(broker):
    t = unique("zombie")
    create(broker.bootstrap, t)
    tid = unique("tid")
    old = txn_producer(broker.bootstrap, tid)
    old.begin_transaction()
    old.produce(t, value=b"zombie")
    old.flush(10)
    new = txn_producer(broker.bootstrap, tid)
    with pytest.raises(KafkaException) as e:
        old.produce(t, value=b"zombie-2")
        old.commit_transaction(10)
    assert e.value.args[0].fatal(), e.value
    new.begin_transaction()
    new.produce(t, value=b"new")
    new.commit_transaction(30)
    assert read_all(broker.bootstrap, t, 1, "read_committed") == [b"new"]


def test_offsets_sent_to_a_transaction_are_committed_with_it_and_dropped_by_an_abort(broker):
    src, dst, group = unique("src"), unique("dst"), unique("eos")
    create(broker.bootstrap, src)
    create(broker.bootstrap, dst)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(10):
        plain.produce(src, value=f"in-{i}".encode())
    plain.flush(10)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    p = txn_producer(broker.bootstrap, unique("tid"))
    try:
        consumer.subscribe([src])
        seen = []
        while len(seen) < 10:
            m = consumer.poll(1)
            if m is not None and not m.error():
                seen.append(m)
        for commit, upto in ((False, 5), (True, 7)):
            p.begin_transaction()
            for m in seen[:upto]:
                p.produce(dst, value=m.value().upper())
            p.send_offsets_to_transaction([TopicPartition(src, 0, upto)],
                                          consumer.consumer_group_metadata(), 10)
            if commit:
                p.commit_transaction(30)
            else:
                p.abort_transaction(30)
        committed = consumer.committed([TopicPartition(src, 0)], timeout=10)[0].offset
        assert committed == 7, "the aborted transaction's offset 5 never became the group's"
        assert read_all(broker.bootstrap, dst, 1, "read_committed") == [
            f"IN-{i}".encode() for i in range(7)]
    finally:
        consumer.close()


def test_a_transaction_past_its_timeout_is_aborted_by_the_coordinator(make_broker):
    b = make_broker(properties={
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "500"}).start()
    t = unique("timeout")
    create(b.bootstrap, t)
    p = txn_producer(b.bootstrap, unique("tid"), **{"transaction.timeout.ms": 2000})
    p.begin_transaction()
    p.produce(t, value=b"forgotten")
    p.flush(10)
    deadline = time.time() + 20
    while b.metrics()["ringmq_transactions_timed_out_total"] < 1:
        assert time.time() < deadline, "the coordinator never aborted the transaction"
        time.sleep(0.2)
    # The LSO moves past the aborted records: a read_committed reader is not held back.
    plain = Producer({"bootstrap.servers": b.bootstrap})
    plain.produce(t, value=b"later")
    plain.flush(10)
    assert read_all(b.bootstrap, t, 1, "read_committed") == [b"later"]
    with pytest.raises(KafkaException):
        p.commit_transaction(10)


def test_an_open_transaction_survives_a_broker_restart(make_broker):
    b = make_broker().start()
    t = unique("restart")
    create(b.bootstrap, t, partitions=2)
    tid = unique("tid")
    p = txn_producer(b.bootstrap, tid)
    p.begin_transaction()
    for i in range(10):
        p.produce(t, value=f"v{i}".encode(), partition=i % 2)
    p.flush(10)
    b.stop()
    b.start()
    # The coordinator reloads the transaction from __transaction_state and the
    # partitions their open transaction from the log: commit still works.
    p.commit_transaction(60)
    assert sorted(read_all(b.bootstrap, t, 2, "read_committed")) == sorted(
        f"v{i}".encode() for i in range(10))
    desc = call(b.bootstrap, build(DescribeTransactionsRequest, 0, transactional_ids=[tid]))
    assert desc.transaction_states[0].transaction_state == "CompleteCommit"
    assert b.metrics()["ringmq_transaction_state_loads_total"] >= 1


def coordinator_ready(bootstrap, tid, timeout=30, key_type=1):
    """The coordinator of transactional id (or with key_type=0, group) `tid`, once one
    is there."""
    deadline = time.time() + timeout
    while True:
        r = call(bootstrap, build(FindCoordinatorRequest, 4, key_type=key_type, coordinator_keys=[tid]))
        if r.coordinators[0].error_code == 0:
            return r.coordinators[0]
        assert time.time() < deadline, to_plain(r)
        time.sleep(0.2)


def transactional_error_codes(bootstrap, topic, missing):
    """The error codes of transactional requests sent out of order or with stale ids,
    in a fixed sequence (for comparing two brokers)."""
    tid = unique("bad")
    coordinator_ready(bootstrap, tid)
    codes = {}
    r = call(bootstrap, build(InitProducerIdRequest, 4, transactional_id=tid,
                              transaction_timeout_ms=10**9, producer_id=-1, producer_epoch=-1))
    codes["timeout above transaction.max.timeout.ms"] = r.error_code
    deadline = time.time() + 30
    # The coordinator may still be loading its partition (NOT_COORDINATOR,
    # COORDINATOR_LOAD_IN_PROGRESS): retry as clients do.
    while (r := call(bootstrap, build(InitProducerIdRequest, 4, transactional_id=tid,
                                      transaction_timeout_ms=60000, producer_id=-1,
                                      producer_epoch=-1))).error_code in (14, 15, 16, 51):
        assert time.time() < deadline, to_plain(r)
        time.sleep(0.2)
    assert r.error_code == 0, to_plain(r)
    pid, epoch = r.producer_id, r.producer_epoch

    def end(commit, p=pid, e=epoch, t=tid):
        return call(bootstrap, build(EndTxnRequest, 3, transactional_id=t, producer_id=p,
                                     producer_epoch=e, committed=commit)).error_code

    def add(topics, p=pid, e=epoch, t=tid):
        r = call(bootstrap, build(AddPartitionsToTxnRequest, 3, v3_and_below_transactional_id=t,
                                  v3_and_below_producer_id=p, v3_and_below_producer_epoch=e,
                                  v3_and_below_topics=topics))
        return sorted((x.name, y.partition_index, y.partition_error_code)
                      for x in r.results_by_topic_v3_and_below for y in x.results_by_partition)

    codes["EndTxn commit with nothing open"] = end(True)
    codes["EndTxn abort with nothing open"] = end(False)
    codes["EndTxn for an unknown id"] = end(True, t=unique("nobody"))
    codes["EndTxn with another producer id"] = end(True, p=pid + 100000)
    codes["AddPartitions with an unknown topic"] = add(
        [{"name": topic, "partitions": [0]}, {"name": missing, "partitions": [0]}])
    codes["AddPartitions with an unknown partition"] = add([{"name": topic, "partitions": [0, 99]}])
    codes["AddPartitions with an older epoch"] = add([{"name": topic, "partitions": [0]}], e=epoch - 1)
    codes["AddPartitions for an unknown id"] = add([{"name": topic, "partitions": [0]}], t=unique("nobody"))
    def produce(version, sequence):
        from kafka.protocol.producer import ProduceRequest
        from kafka.record.default_records import DefaultRecordBatchBuilder
        b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=True, producer_id=pid,
                                      producer_epoch=epoch, base_sequence=sequence, batch_size=1 << 20)
        b.append(0, timestamp=None, key=None, value=b"v", headers=[])
        r = call(bootstrap, build(ProduceRequest, version, acks=-1, timeout_ms=5000, transactional_id=tid,
                                  topic_data=[{"name": topic, "partition_data": [
                                      {"index": 0, "records": bytes(b.build())}]}]))
        p = r.responses[0].partition_responses[0]
        return p.error_code, p.error_message

    # KIP-890 part 1: a write to a partition the transaction does not hold is refused.
    codes["Produce v9 to a partition not in the transaction"] = produce(9, 0)
    codes["Produce v11 to a partition not in the transaction"] = produce(11, 0)
    codes["AddPartitions"] = add([{"name": topic, "partitions": [0]}])
    codes["Produce v9 once the partition is added"] = produce(9, 0)
    codes["AddOffsets"] = call(bootstrap, build(AddOffsetsToTxnRequest, 3, transactional_id=tid,
                                                producer_id=pid, producer_epoch=epoch,
                                                group_id="g")).error_code
    def txn_commit(generation, member, group="g", p=pid, e=epoch, t=tid):
        deadline = time.time() + 30
        while True:
            r = call(bootstrap, build(TxnOffsetCommitRequest, 3, transactional_id=t, group_id=group, producer_id=p,
                                      producer_epoch=e, generation_id=generation, member_id=member,
                                      group_instance_id=None, topics=[{"name": topic, "partitions": [
                                          {"partition_index": 0, "committed_offset": 1,
                                           "committed_leader_epoch": -1, "committed_metadata": ""}]}]))
            codes = [p.error_code for x in r.topics for p in x.partitions]
            # The group coordinator may still be loading (retried, as clients do).
            if not set(codes) & {14, 15, 16} or time.time() > deadline:
                return codes
            time.sleep(0.2)

    coordinator_ready(bootstrap, "g", key_type=0)
    codes["TxnOffsetCommit outside group management"] = txn_commit(-1, "")
    codes["TxnOffsetCommit with a generation of a group without members"] = txn_commit(5, "someone")
    markers = call(bootstrap, build(WriteTxnMarkersRequest, 1, markers=[{
        "producer_id": pid + 200000, "producer_epoch": 0, "transaction_result": False, "coordinator_epoch": 0,
        "topics": [{"name": missing, "partition_indexes": [0]}]}]))
    codes["WriteTxnMarkers to an unknown topic"] = [
        p.error_code for m in markers.markers for t in m.topics for p in t.partitions]
    codes["EndTxn abort of the open transaction"] = end(False)
    # Once the abort's markers are written (until then: CONCURRENT_TRANSACTIONS).
    deadline = time.time() + 30
    while call(bootstrap, build(DescribeTransactionsRequest, 0, transactional_ids=[tid])) \
            .transaction_states[0].transaction_state != "CompleteAbort":
        assert time.time() < deadline
        time.sleep(0.1)
    codes["EndTxn commit after the abort"] = end(True)
    codes["Produce after the transaction ended (a late write)"] = produce(9, 1)
    # A new instance takes the id: the old epoch's writes are fenced.
    r = call(bootstrap, build(InitProducerIdRequest, 4, transactional_id=tid, transaction_timeout_ms=60000,
                              producer_id=-1, producer_epoch=-1))
    codes["InitProducerId again"] = (r.error_code, r.producer_id == pid, r.producer_epoch - epoch)
    codes["Produce with the fenced epoch"] = produce(9, 1)
    desc = call(bootstrap, build(DescribeTransactionsRequest, 0, transactional_ids=[tid, unique("nobody")]))
    codes["DescribeTransactions"] = [s.error_code for s in desc.transaction_states]
    return codes


def test_transactional_errors_match_kafka(kafka_peer, broker):
    t = unique("txerr")
    create(kafka_peer, t)
    create(broker.bootstrap, t)
    missing = unique("missing")
    kafka = transactional_error_codes(kafka_peer, t, missing)
    ringmq = transactional_error_codes(broker.bootstrap, t, missing)
    assert ringmq == kafka


def test_list_and_describe_transactions(broker):
    t = unique("list")
    create(broker.bootstrap, t)
    tid = unique("tid")
    p = txn_producer(broker.bootstrap, tid)
    p.begin_transaction()
    p.produce(t, value=b"x")
    p.flush(10)
    listed = call(broker.bootstrap, build(ListTransactionsRequest, 1, state_filters=["Ongoing"],
                                          producer_id_filters=[], duration_filter=-1))
    assert tid in [s.transactional_id for s in listed.transaction_states]
    listed = call(broker.bootstrap, build(ListTransactionsRequest, 1, state_filters=["Bogus"],
                                          producer_id_filters=[], duration_filter=-1))
    assert listed.unknown_state_filters == ["Bogus"] and listed.transaction_states == []
    d = call(broker.bootstrap, build(DescribeTransactionsRequest, 0, transactional_ids=[tid]))
    s = d.transaction_states[0]
    assert (s.error_code, s.transaction_state) == (0, "Ongoing")
    assert [(x.topic, x.partitions) for x in s.topics] == [(t, [0])]
    p.abort_transaction(30)


def test_transactions_across_a_cluster_survive_the_coordinator_killed(make_cluster):
    """Three brokers: the coordinator writes markers to partitions other brokers lead
    (WriteTxnMarkers); then its broker is killed with -9 inside a transaction, and again
    while a commit is being decided. The new coordinator (the next leader of the id's
    __transaction_state partition) finishes: a read_committed consumer sees every
    acknowledged transaction whole, exactly once, and nothing of any other."""
    c = make_cluster(3).start()
    t = unique("txc")
    create(c.bootstrap, t, partitions=3, rf=3, config={"min.insync.replicas": "2"})
    tid = unique("tid")
    p = txn_producer(c.bootstrap, tid, **{"transaction.timeout.ms": 60000})
    committed, maybe = [], []

    def txn(n, values):
        p.begin_transaction()
        for i, v in enumerate(values):
            p.produce(t, value=v, partition=i % 3)
        p.flush(30)

    for n in range(3):
        values = [f"a{n}-{i}".encode() for i in range(30)]
        txn(n, values)
        p.commit_transaction(60)
        committed += values
    leaders = {c.leader(t, i) for i in range(3)}
    assert len(leaders) > 1, "the partitions' leaders are spread over brokers"

    # Killed inside a transaction: the producer commits through the new coordinator.
    coordinator = coordinator_ready(c.live()[0].bootstrap, tid).node_id
    values = [f"b-{i}".encode() for i in range(30)]
    txn(0, values)
    c.brokers[coordinator].kill9()
    p.commit_transaction(120)
    committed += values

    # Killed while the commit is decided: whatever the producer heard, the transaction
    # is all or nothing.
    c.brokers[coordinator].start()
    coordinator = coordinator_ready(c.live()[0].bootstrap, tid).node_id
    values = [f"c-{i}".encode() for i in range(30)]
    txn(0, values)
    import threading
    outcome = {}

    def commit():
        try:
            p.commit_transaction(120)
            outcome["ok"] = True
        except KafkaException as e:
            outcome["error"] = e
    th = threading.Thread(target=commit)
    th.start()
    c.brokers[coordinator].kill9()
    th.join(130)
    if outcome.get("ok"):
        committed += values
    else:
        maybe += values
    c.brokers[coordinator].start()
    got = read_all(c.bootstrap, t, 3, "read_committed", settle=6, timeout=90)
    assert len(got) == len(set(got)), "no record twice"
    extra = set(got) - set(committed)
    assert set(committed) <= set(got), f"acknowledged records missing: {len(set(committed) - set(got))}"
    assert extra in (set(), set(maybe)), "the undecided transaction is all or nothing"


def test_consume_transform_produce_is_exactly_once_through_broker_kills(make_cluster):
    """The exactly-once loop (KIP-447): a read_committed consumer in a group, a
    transactional producer that writes each batch's output and commits the batch's
    offsets in the same transaction. Meanwhile the coordinator's broker and then a
    partition leader are killed with -9 and restarted. The output, read_committed,
    holds each input exactly once."""
    import threading
    c = make_cluster(3).start()
    src, dst, group, tid = unique("in"), unique("out"), unique("eos"), unique("eos-tid")
    create(c.bootstrap, src, partitions=3, rf=3, config={"min.insync.replicas": "2"})
    create(c.bootstrap, dst, partitions=3, rf=3, config={"min.insync.replicas": "2"})
    n = 3000
    plain = Producer({"bootstrap.servers": c.bootstrap, "enable.idempotence": True})
    for i in range(n):
        plain.produce(src, value=f"{i}".encode(), partition=i % 3)
    plain.flush(30)
    consumer = Consumer({"bootstrap.servers": c.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    producer = txn_producer(c.bootstrap, tid, **{"transaction.timeout.ms": 30000})
    consumer.subscribe([src])
    done = threading.Event()
    progress = {"committed": 0, "aborted": 0}

    def rewind():
        # Back to the group's committed offsets: the aborted batch is processed again.
        parts = consumer.assignment()
        if parts:
            for tp in consumer.committed(parts, timeout=30):
                consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else 0))

    def loop():
        deadline = time.time() + 240
        while not done.is_set() and time.time() < deadline:
            msgs = [m for m in consumer.consume(200, 1.0) if not m.error()]
            if not msgs:
                continue
            try:
                producer.begin_transaction()
                for m in msgs:
                    producer.produce(dst, value=b"out-" + m.value(), partition=m.partition())
                offsets = {}
                for m in msgs:
                    offsets[(m.topic(), m.partition())] = m.offset() + 1
                producer.send_offsets_to_transaction(
                    [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    consumer.consumer_group_metadata(), 60)
                producer.commit_transaction(60)
                progress["committed"] += 1
            except KafkaException as e:
                err = e.args[0]
                assert not err.fatal(), f"fatal: {err}"
                progress["aborted"] += 1
                if err.txn_requires_abort():
                    producer.abort_transaction(60)
                rewind()

    worker = threading.Thread(target=loop)
    worker.start()
    try:
        c.wait_for(lambda: progress["committed"] >= 2, 60, "the loop's first transactions")
        coordinator = coordinator_ready(c.live()[0].bootstrap, tid).node_id
        c.brokers[coordinator].kill9()
        time.sleep(3)
        c.brokers[coordinator].start()
        committed_before = progress["committed"]
        c.wait_for(lambda: progress["committed"] > committed_before + 1, 90, "progress after the coordinator died")
        leader = c.leader(src, 0)
        c.brokers[leader].kill9()
        time.sleep(3)
        c.brokers[leader].start()

        checker = Consumer({"bootstrap.servers": c.bootstrap, "group.id": group})

        def caught_up():
            committed = checker.committed([TopicPartition(src, p) for p in range(3)], timeout=10)
            return sum(max(tp.offset, 0) for tp in committed) == n
        c.wait_for(caught_up, 180, "every input processed")
        checker.close()
    finally:
        done.set()
        worker.join(120)
        consumer.close()
    got = read_all(c.bootstrap, dst, 3, "read_committed", settle=5, timeout=120)
    values = sorted(int(v[4:]) for v in got)
    assert len(values) == len(set(values)), "an input was written twice"
    assert values == list(range(n)), f"{n - len(set(values))} inputs missing"
