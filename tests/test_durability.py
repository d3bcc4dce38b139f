"""kill -9 during synchronous-flush acks=all production, in a loop: every acknowledged
message is there after the restart."""
import random
import threading
import time

from confluent_kafka import Producer

from test_clients import consume_to_end, create_topic

ROUNDS = 4


def test_kill9_during_sync_flush_loses_no_acknowledged_message(make_broker):
    b = make_broker().start()
    # A kill in the middle of a write tears the segment's tail; the next start truncates
    # it (and says so). What this test checks is that nothing acknowledged is lost.
    b.expected_log.append(r"truncating torn or corrupt tail")
    create_topic(b.bootstrap, "durable", partitions=3, config={"flush.messages": "1"})
    acked = {}
    rng = random.Random(7)
    for rnd in range(ROUNDS):
        stop = threading.Event()

        def run():
            p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 1,
                          "message.timeout.ms": 3000, "enable.idempotence": True})

            def report(err, m):
                if err is None:
                    acked[(m.partition(), m.offset())] = m.value()

            i = 0
            while not stop.is_set():
                try:
                    p.produce("durable", value=f"r{rnd}-{i}".encode(), on_delivery=report)
                except BufferError:
                    pass
                p.poll(0.0005)
                i += 1
            p.flush(5)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        time.sleep(0.4 + rng.random())
        b.kill9()
        stop.set()
        t.join(15)
        b.start()
    total = len(acked)
    assert total > 100, f"only {total} acknowledgements"
    got = consume_to_end(b.bootstrap, "durable", 3)
    stored = {(g[0], g[1]): g[3] for g in got}
    lost = [k for k, v in acked.items() if stored.get(k) != v]
    assert not lost, f"{len(lost)} of {total} acknowledged messages lost or changed, e.g. {lost[:5]}"
