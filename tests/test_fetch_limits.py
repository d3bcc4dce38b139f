"""Fetch bounds the whole response by the request's max_bytes and each partition by its
partition_max_bytes; only the first batch of the first non-empty partition may exceed
them (KIP-74). Regression: a consumer with fetch.max.bytes ~1 MB got a 19 MB response."""
from kafka.protocol.consumer import FetchRequest

from kafka_api import build, call
from test_kafka_peer import batch, create

KB = 1024


def fetch(bootstrap, topic, partitions, max_bytes, partition_max_bytes):
    resp = call(bootstrap, build(
        FetchRequest, 11, replica_id=-1, max_wait_ms=0, min_bytes=0, max_bytes=max_bytes, isolation_level=0,
        session_id=0, session_epoch=-1, rack_id="", forgotten_topics_data=[],
        topics=[{"topic": topic, "partitions": [
            {"partition": p, "fetch_offset": 0, "log_start_offset": -1, "current_leader_epoch": -1,
             "partition_max_bytes": partition_max_bytes} for p in range(partitions)]}]))
    return [len(p.records or b"") for p in resp.responses[0].partitions]


def fill(bootstrap, topic, partition, n, size):
    for i in range(n):
        r = call(bootstrap, build_produce(topic, partition, batch([(None, bytes([i % 251]) * size, 0)])))
        assert r.responses[0].partition_responses[0].error_code == 0


def build_produce(topic, partition, records):
    from kafka.protocol.producer import ProduceRequest
    return build(ProduceRequest, 9, acks=1, timeout_ms=10000, transactional_id=None,
                 topic_data=[{"name": topic, "partition_data": [{"index": partition, "records": records}]}])


def test_response_bounded_by_max_bytes_across_partitions(broker):
    create(broker.bootstrap, "limits", partitions=3)
    for p in range(3):
        fill(broker.bootstrap, "limits", p, 12, 100 * KB)     # ~1.2 MB per partition
    sizes = fetch(broker.bootstrap, "limits", 3, max_bytes=1000 * KB, partition_max_bytes=10 * 1024 * KB)
    assert 0 < sum(sizes) <= 1000 * KB, sizes
    assert sizes[0] > 800 * KB and sizes[1:] == [0, 0], sizes
    # Each partition bounded by its own limit: one ~100 KB batch each.
    sizes = fetch(broker.bootstrap, "limits", 3, max_bytes=10 * 1024 * KB, partition_max_bytes=150 * KB)
    assert all(100 * KB < s <= 150 * KB for s in sizes), sizes
    # Room for two and a bit: the first partition's batches, then whole batches of the next.
    sizes = fetch(broker.bootstrap, "limits", 3, max_bytes=350 * KB, partition_max_bytes=250 * KB)
    assert sum(sizes) <= 350 * KB and sizes[0] > 200 * KB and sizes[1] > 100 * KB and sizes[2] == 0, sizes


def test_only_the_first_batch_of_the_first_partition_may_exceed(broker):
    create(broker.bootstrap, "big", partitions=2)
    fill(broker.bootstrap, "big", 0, 1, 2048 * KB)            # one 2 MB batch
    fill(broker.bootstrap, "big", 1, 1, 2048 * KB)
    sizes = fetch(broker.bootstrap, "big", 2, max_bytes=1024 * KB, partition_max_bytes=1024 * KB)
    assert sizes[0] > 2048 * KB and sizes[1] == 0, sizes
    # partition_max_bytes smaller than the batch: still the first batch, nothing more.
    sizes = fetch(broker.bootstrap, "big", 2, max_bytes=50 * 1024 * KB, partition_max_bytes=64 * KB)
    assert sizes[0] > 2048 * KB and sizes[1] == 0, sizes
