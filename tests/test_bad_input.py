"""Bad input gets the Kafka error code or closes that connection only, while another
client keeps producing without a single failure."""
import re
import struct
import threading
import time

import pytest
from confluent_kafka import Producer

from kafka_wire import closed_by_broker, connect, frame, parse_produce_v3, produce_v3, read_frame, record_batch
from test_clients import create_topic


@pytest.fixture
def busy_broker(make_broker):
    """A broker with a background producer that must never see an error."""
    b = make_broker(properties={"message.max.bytes": "100000"}).start()
    b.expected_log.append(r"WARN.*closing connection after a request it could not handle")
    create_topic(b.bootstrap, "busy", partitions=2)
    stop = threading.Event()
    stats = {"acked": 0, "errors": []}

    def run():
        p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 1, "acks": "all"})
        def report(err, _m):
            if err:
                stats["errors"].append(err)
            else:
                stats["acked"] += 1
        while not stop.is_set():
            p.produce("busy", value=b"steady", on_delivery=report)
            p.poll(0.001)
        p.flush(10)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    time.sleep(0.5)
    yield b
    acked_before = stats["acked"]
    time.sleep(0.5)
    stop.set()
    t.join(20)
    assert not stats["errors"], stats["errors"][:3]
    assert stats["acked"] > acked_before > 0, "the other client kept producing"
    assert b.alive()


@pytest.mark.parametrize("payload", [
    b"\x00\x00\x00\x10" + b"\xde\xad\xbe\xef" * 4,             # garbage header
    struct.pack(">i", 2_000_000_000),                         # 2 GB length prefix
    struct.pack(">i", -5),                                     # negative length
    frame(999, 0, 1),                                          # unknown API key
    frame(3, 99, 1),                                           # Metadata v99 (not advertised)
    frame(0, 3, 1, b"\x00\x01"),                               # truncated Produce body
])
def test_malformed_frames_close_only_that_connection(busy_broker, payload):
    s = connect(busy_broker.bootstrap)
    s.sendall(payload)
    assert closed_by_broker(s)
    # A fresh connection still works.
    s2 = connect(busy_broker.bootstrap)
    s2.sendall(frame(18, 0, 7))
    resp = read_frame(s2)
    assert resp is not None and struct.unpack_from(">ih", resp) == (7, 0)


def api_versions_ranges(bootstrap):
    """{api_key: (min, max)} from an ApiVersions v0 answer."""
    s = connect(bootstrap)
    s.sendall(frame(18, 0, 1))
    resp = read_frame(s)
    s.close()
    _corr, err, n = struct.unpack_from(">ihi", resp)
    assert err == 0
    return {k: (lo, hi) for k, lo, hi in (struct.unpack_from(">hhh", resp, 10 + 6 * i) for i in range(n))}


def test_unsupported_version_closes_with_a_warn_naming_api_version_and_client(busy_broker):
    # Regression: OffsetCommit/OffsetFetch v10 were advertised but the codec decodes only
    # up to v9, so franz-go's group consumers saw EOF and the broker logged it at DEBUG.
    ranges = api_versions_ranges(busy_broker.bootstrap)
    assert ranges[8] == (2, 9) and ranges[9] == (1, 9), (ranges[8], ranges[9])
    s = connect(busy_broker.bootstrap)
    s.sendall(frame(8, 10, 3, b"\x00" * 16, client_id=b"franz-go-like"))
    assert closed_by_broker(s)
    deadline = time.time() + 5
    pattern = re.compile(r"WARN.*closing connection after a request it could not handle"
                         r".*api=OffsetCommit version=10 client_id=\"?franz-go-like")
    while time.time() < deadline and not pattern.search(busy_broker.log_path.read_text()):
        time.sleep(0.05)
    assert pattern.search(busy_broker.log_path.read_text())


def test_huge_array_counts_are_malformed(busy_broker):
    """A 42-byte Metadata request declaring a 33-million-entry topic array (found by the
    request_frame fuzz target) made the decoder ask for a 78 GB Vec, and the failed
    allocation aborted the broker. Now it is a malformed request: that connection closes,
    the broker and the other client go on."""
    from pathlib import Path
    crash = (Path(__file__).parent / "fuzz" / "regressions" / "request_frame" / "metadata-huge-array").read_bytes()
    s = connect(busy_broker.bootstrap)
    s.sendall(struct.pack(">i", len(crash)) + crash)
    assert closed_by_broker(s)
    assert busy_broker.alive()


def test_truncated_frame_then_hangup(busy_broker):
    s = connect(busy_broker.bootstrap)
    s.sendall(struct.pack(">i", 1000) + b"x" * 10)
    s.close()
    time.sleep(0.2)
    assert busy_broker.alive()


def test_api_versions_of_unknown_version_answers_with_our_ranges(busy_broker):
    s = connect(busy_broker.bootstrap)
    s.sendall(frame(18, 99, 5))
    resp = read_frame(s)
    corr, err, n = struct.unpack_from(">ihi", resp)
    assert (corr, err) == (5, 35)  # UNSUPPORTED_VERSION
    keys = {struct.unpack_from(">hhh", resp, 10 + 6 * i)[0] for i in range(n)}
    assert {0, 1, 2, 3, 18, 19, 20, 22} <= keys


def test_corrupt_crc_is_corrupt_message(busy_broker):
    create_topic(busy_broker.bootstrap, "crc", partitions=1)
    good = record_batch([b"hello", b"world"])
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    s = connect(busy_broker.bootstrap)
    s.sendall(frame(0, 3, 11, produce_v3("crc", 0, bytes(bad))))
    assert parse_produce_v3(read_frame(s)) == [(0, 2, -1)]  # CORRUPT_MESSAGE
    s.sendall(frame(0, 3, 12, produce_v3("crc", 0, good)))
    assert parse_produce_v3(read_frame(s)) == [(0, 0, 0)]  # same connection still serves


def test_oversized_batch_is_message_too_large(busy_broker):
    create_topic(busy_broker.bootstrap, "big", partitions=1)
    s = connect(busy_broker.bootstrap)
    s.sendall(frame(0, 3, 21, produce_v3("big", 0, record_batch([b"x" * 150_000]))))
    assert parse_produce_v3(read_frame(s)) == [(0, 10, -1)]  # MESSAGE_TOO_LARGE
    p = Producer({"bootstrap.servers": busy_broker.bootstrap, "message.max.bytes": 1_000_000})
    errs = []
    p.produce("big", value=b"y" * 200_000, on_delivery=lambda e, m: errs.append(e))
    p.flush(10)
    assert errs and errs[0] is not None and "MSG_SIZE_TOO_LARGE" in errs[0].name()


def test_unknown_topic_and_bad_acks(busy_broker):
    s = connect(busy_broker.bootstrap)
    s.sendall(frame(0, 3, 31, produce_v3("no-such-topic", 0, record_batch([b"a"]))))
    assert parse_produce_v3(read_frame(s)) == [(0, 3, -1)]  # UNKNOWN_TOPIC_OR_PARTITION
    s.sendall(frame(0, 3, 32, produce_v3("busy", 0, record_batch([b"a"]), acks=7)))
    assert parse_produce_v3(read_frame(s)) == [(0, 21, -1)]  # INVALID_REQUIRED_ACKS


def test_idempotent_sequence_errors(busy_broker):
    create_topic(busy_broker.bootstrap, "seq", partitions=1)
    s = connect(busy_broker.bootstrap)
    first = record_batch([b"a", b"b"], producer_id=4242, epoch=0, base_sequence=0)
    s.sendall(frame(0, 3, 41, produce_v3("seq", 0, first)))
    assert parse_produce_v3(read_frame(s)) == [(0, 0, 0)]
    # The same batch again is a duplicate: acknowledged with the original offset, not appended.
    s.sendall(frame(0, 3, 42, produce_v3("seq", 0, first)))
    assert parse_produce_v3(read_frame(s)) == [(0, 0, 0)]
    gap = record_batch([b"c"], producer_id=4242, epoch=0, base_sequence=5)
    s.sendall(frame(0, 3, 43, produce_v3("seq", 0, gap)))
    assert parse_produce_v3(read_frame(s)) == [(0, 45, -1)]  # OUT_OF_ORDER_SEQUENCE_NUMBER
    nxt = record_batch([b"c"], producer_id=4242, epoch=0, base_sequence=2)
    s.sendall(frame(0, 3, 44, produce_v3("seq", 0, nxt)))
    assert parse_produce_v3(read_frame(s)) == [(0, 0, 2)]


def test_grouped_produce_isolates_bad_requests(make_broker):
    """Concurrent produce requests to one partition are written together; a corrupt one
    in the same loop turn fails alone and the others are all stored exactly once."""
    b = make_broker().start()
    create_topic(b.bootstrap, "group", partitions=1)
    acked = []
    errors = []

    def producer(n):
        p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0, "acks": "all"})
        for i in range(300):
            p.produce("group", value=f"{n}-{i}".encode(),
                      on_delivery=lambda e, m: (errors if e else acked).append(e or (m.offset(), m.value())))
            p.poll(0)
        p.flush(30)

    def corrupt_sender():
        bad = bytearray(record_batch([b"bad"]))
        bad[-1] ^= 0xFF
        socks = [connect(b.bootstrap) for _ in range(4)]
        codes = []
        for round_ in range(20):
            for i, s in enumerate(socks):
                s.sendall(frame(0, 3, round_ * 10 + i, produce_v3("group", 0, bytes(bad))))
            for s in socks:
                codes.extend(c for _, c, _ in parse_produce_v3(read_frame(s)))
        return codes

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    codes = corrupt_sender()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert codes == [2] * 80  # every corrupt request: CORRUPT_MESSAGE
    assert len(acked) == 2400
    assert len({o for o, _ in acked}) == 2400, "distinct offsets"
    from test_clients import consume_to_end
    stored = {(g[1], g[3]) for g in consume_to_end(b.bootstrap, "group", 1)}
    assert stored == set(acked)
    assert b.metrics()["ringmq_produce_grouped_requests_total"] > 0


def test_decompression_bomb_is_refused_not_allocated(make_broker):
    """A gzip batch of ~300 KB that inflates to 300 MB, sent to a compacted topic (whose
    key check decodes records): refused with CORRUPT_MESSAGE (ringmq caps one batch at
    256 MiB decompressed), and the broker goes on."""
    from kafka.protocol.producer import ProduceRequest
    from kafka.record.default_records import DefaultRecordBatchBuilder
    from kafka_api import build, call
    from test_kafka_peer import create
    b = make_broker().start()
    create(b.bootstrap, "bombs", configs={"cleanup.policy": "compact"})
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=1, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 30)
    builder.append(0, timestamp=0, key=b"k", value=bytes(300 << 20), headers=[])
    bomb = bytes(builder.build())
    assert len(bomb) < 2 << 20
    req = lambda records: build(ProduceRequest, 9, acks=1, timeout_ms=10000, transactional_id=None,  # noqa: E731
                                topic_data=[{"name": "bombs", "partition_data": [{"index": 0, "records": records}]}])
    resp = call(b.bootstrap, req(bomb), timeout=60)
    assert resp.responses[0].partition_responses[0].error_code == 2        # CORRUPT_MESSAGE
    ok = DefaultRecordBatchBuilder(magic=2, compression_type=1, is_transactional=False, producer_id=-1,
                                   producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    ok.append(0, timestamp=0, key=b"k", value=b"fine", headers=[])
    assert call(b.bootstrap, req(bytes(ok.build()))).responses[0].partition_responses[0].error_code == 0
    assert b.alive()
