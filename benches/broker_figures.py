#!/usr/bin/env python3
"""Broker figures for issue 3, side by side in one run on this machine.

Starts a release ringmqd, then with kcat (librdkafka) as the load generator measures:
produce msgs/s and MB/s of 1 KB messages (1 and 16 partitions; acks=1, and acks=all with
synchronous flush), consume MB/s, broker CPU seconds per GB moved, and iperf3's loopback
TCP figure as the ceiling. Usage: benches/broker_figures.py [MESSAGES]
(until `ringmq bench` exists, issue 5).
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RINGMQD = ROOT / "target" / "release" / "ringmqd"
N = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
SIZE = 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def iperf3_mbps():
    port = free_port()
    srv = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", "4", "-l", "128K", "-J"], capture_output=True, text=True)
    srv.wait(10)
    return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 8e6


def main():
    data = tempfile.mkdtemp(prefix="ringmq-figures-", dir=ROOT)
    port = free_port()
    bs = f"127.0.0.1:{port}"
    broker = subprocess.Popen([str(RINGMQD), "--data-dir", data, "--listen", bs], stderr=subprocess.DEVNULL)
    time.sleep(1)
    payload = ((b"x" * (SIZE - 1)) + b"\n") * N
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bs})
    topics = {"p1": (1, {}), "p16": (16, {}), "p1-sync": (1, {"flush.messages": "1"}), "p16-sync": (16, {"flush.messages": "1"})}
    for f in admin.create_topics([NewTopic(t, p, 1, config=c) for t, (p, c) in topics.items()]).values():
        f.result(10)
    rows = []
    common = ["-X", "linger.ms=5", "-X", "batch.num.messages=10000", "-X", "queue.buffering.max.messages=2000000",
              "-X", "queue.buffering.max.kbytes=2097151"]
    for topic, acks in [("p1", "1"), ("p16", "1"), ("p1-sync", "all"), ("p16-sync", "all")]:
        cpu0, t0 = cpu_seconds(broker.pid), time.time()
        subprocess.run(["kcat", "-b", bs, "-P", "-t", topic, "-X", f"acks={acks}", *common], input=payload, check=True)
        secs, cpu = time.time() - t0, cpu_seconds(broker.pid) - cpu0
        mb = N * SIZE / 1e6
        rows.append({"test": f"produce {topic} acks={acks}", "msgs_per_s": N / secs, "MB_per_s": mb / secs,
                     "broker_cpu_s_per_GB": cpu / (mb / 1000)})
    for topic in ["p1", "p16"]:
        cpu0, t0 = cpu_seconds(broker.pid), time.time()
        out = subprocess.run(["kcat", "-b", bs, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%o\n",
                              "-X", "fetch.max.bytes=52428800", "-X", "max.partition.fetch.bytes=10485760"],
                             capture_output=True, check=True).stdout
        secs, cpu = time.time() - t0, cpu_seconds(broker.pid) - cpu0
        got = out.count(b"\n")
        mb = got * SIZE / 1e6
        rows.append({"test": f"consume {topic}", "msgs": got, "msgs_per_s": got / secs, "MB_per_s": mb / secs,
                     "broker_cpu_s_per_GB": cpu / (mb / 1000)})
    broker.kill()
    subprocess.run(["rm", "-rf", data])
    ceiling = iperf3_mbps()
    print(f"machine: {os.cpu_count()} cores; client (kcat/librdkafka) and broker on the same machine; {N} x {SIZE} B")
    print(f"iperf3 loopback, one stream: {ceiling:.0f} MB/s")
    for r in rows:
        extra = f"  ({100 * r['MB_per_s'] / ceiling:.0f}% of loopback)" if r["test"].startswith("consume") else ""
        print(f"{r['test']:<28} {r['msgs_per_s']:>10.0f} msgs/s {r['MB_per_s']:>8.0f} MB/s  broker {r['broker_cpu_s_per_GB']:.2f} CPU-s/GB{extra}")
    print(json.dumps({"loopback_MBps": ceiling, "rows": rows}))


if __name__ == "__main__":
    main()
