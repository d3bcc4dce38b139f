#!/usr/bin/env python3
"""Consumer-group figures (issue 4), measured with confluent-kafka against a release
ringmqd on this machine: how long a 3-member group takes to rebalance (from the third
member's subscribe to every member holding its partitions) and synchronous commits/s
from one client. Usage: benches/group_figures.py"""
import socket
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    data = tempfile.mkdtemp(prefix="ringmq-groups-", dir=ROOT)
    try:
        figures(data)
    finally:
        shutil.rmtree(data, ignore_errors=True)


def figures(data):
    conf = Path(data) / "server.properties"
    conf.write_text("group.initial.rebalance.delay.ms=0\n")
    bs = f"127.0.0.1:{free_port()}"
    broker = subprocess.Popen([str(ROOT / "target/release/ringmqd"), "--data-dir", data, "--listen", bs,
                               "--config", str(conf)], stderr=subprocess.DEVNULL)
    time.sleep(1)
    admin = AdminClient({"bootstrap.servers": bs})
    admin.create_topics([NewTopic("gf", 6, 1)])["gf"].result(10)
    rebalances = []
    for round_ in range(5):
        group = f"rb-{round_}"
        members = []
        for i in range(3):
            c = Consumer({"bootstrap.servers": bs, "group.id": group, "session.timeout.ms": 6000,
                          "heartbeat.interval.ms": 100})
            c.subscribe(["gf"])
            members.append(c)
        t0 = time.time()
        while time.time() - t0 < 30:
            for c in members:
                c.poll(0.01)
            if all(len(c.assignment()) == 2 for c in members):
                break
        rebalances.append(time.time() - t0)
        for c in members:
            c.close()
    c = Consumer({"bootstrap.servers": bs, "group.id": "committer"})
    n = 2000
    t0 = time.time()
    for i in range(n):
        c.commit(offsets=[TopicPartition("gf", i % 6, i)], asynchronous=False)
    commit_secs = time.time() - t0
    c.close()
    broker.kill()
    rebalances.sort()
    print(f"3-member group, 6 partitions, librdkafka: join-to-assigned {1000 * rebalances[len(rebalances) // 2]:.0f} ms median "
          f"(min {1000 * rebalances[0]:.0f}, max {1000 * rebalances[-1]:.0f}) over {len(rebalances)} groups")
    print(f"synchronous OffsetCommit from one client: {n / commit_secs:.0f} commits/s "
          f"({1e6 * commit_secs / n:.0f} us each, each written to __consumer_offsets)")


if __name__ == "__main__":
    main()
