#!/usr/bin/env python3
"""ringmq versus Apache Kafka on this machine, in one run, interleaved A B A B.

Starts ringmqd (release build) and Apache Kafka 4.4 (benches/peer/kafka.sh, KRaft combined
mode, 1 GB heap, shipped defaults), then for each scenario runs the same load generator
against one broker and then the other, `--rounds` times, alternating which goes first:
  - Kafka's own kafka-producer-perf-test / kafka-consumer-perf-test (Java client);
  - `ringmq bench` (librdkafka).
Measures msgs/s, MB/s, produce latency (perf-test: avg/p99/p99.9 as it prints them), and
the broker's CPU-seconds per GB (utime+stime from /proc over the run) and resident memory.
Prints a Markdown table and writes JSON (--json).

    benches/peer/compare.py [--records 300000] [--rounds 2] [--json out.json] [--pin]
    benches/peer/compare.py --transactions [--records 300000] [--rounds 2]

--transactions runs the transaction scenarios instead: kafka-producer-perf-test as an
idempotent producer, then as a transactional one committing every 10 ms and every 100 ms
(--transaction-duration-ms), on 3 partitions with acks=all; then kafka-consumer-perf-test
reading the transactional topic read_uncommitted and read_committed.

--topics measures topic creation instead: one CreateTopics of one topic with 1000
partitions, one CreateTopics of 100 topics of 4 partitions, and 10 CreateTopics of one
4-partition topic sent at once; each timed from the request until every partition has a
leader in Metadata (AdminClient, librdkafka), and until every partition acknowledged one
record (its log exists on its leader).

--pin puts each broker on core 0 (ringmqd with one shard; Kafka's JVM with taskset) and
the generators on the other cores, so neither broker competes with its load for a core.
"""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benches"))
from measure import cpu_seconds, free_port, rss_mb  # noqa: E402
KAFKA_SH = ROOT / "benches" / "peer" / "kafka.sh"
RINGMQD = ROOT / "target" / "release" / "ringmqd"
RINGMQ = ROOT / "target" / "release" / "ringmq"
# Command prefixes set by --pin: the broker's cores and the generators' cores.
BROKER_PIN: list = []
CLIENT_PIN: list = []


class Broker:
    def __init__(self, name, bootstrap, pid):
        self.name, self.bootstrap, self.pid = name, bootstrap, pid


def start_ringmq(work):
    port = free_port()
    log = open(work / "ringmqd.log", "w")
    extra = ["--shards", "1", "--cores", "0"] if BROKER_PIN else []
    p = subprocess.Popen([*BROKER_PIN, str(RINGMQD), "--data-dir", str(work / "ringmq-data"), "--listen",
                          f"127.0.0.1:{port}", *extra], stdout=log, stderr=subprocess.STDOUT)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return Broker("ringmq", f"127.0.0.1:{port}", p.pid), p


def start_kafka(work, heap):
    port = free_port()
    while port > 65000:
        port = free_port()
    d = work / "kafka"
    subprocess.run([str(KAFKA_SH), "start", str(d), str(port), heap], check=True)
    pid = int((d / "kafka.pid").read_text())
    if BROKER_PIN:
        subprocess.run(["taskset", "-a", "-p", "-c", "0", str(pid)], check=True, capture_output=True)
    return Broker("kafka", f"127.0.0.1:{port}", pid), d


def kafka_tool(cp, main, *args, timeout=900):
    p = subprocess.run([*CLIENT_PIN, "java", "-Xmx1g", "-cp", cp, f"org.apache.kafka.tools.{main}", *map(str, args)],
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{main} failed: {p.stdout[-2000:]} {p.stderr[-2000:]}")
    return p.stdout


def create_topic(cp, broker, topic, partitions):
    kafka_tool(cp, "TopicCommand", "--bootstrap-server", broker.bootstrap, "--create", "--topic", topic,
               "--partitions", partitions, "--replication-factor", 1, "--if-not-exists")


def measured(broker, f):
    c0, t0 = cpu_seconds(broker.pid), time.time()
    out = f()
    return out, cpu_seconds(broker.pid) - c0, time.time() - t0, rss_mb(broker.pid)


def perf_produce(cp, broker, topic, records, size, acks, throughput=-1, txn_ms=None):
    txn = ["--transactional-id", f"perf-{time.time_ns()}", "--transaction-duration-ms", txn_ms] if txn_ms else []
    out = kafka_tool(cp, "ProducerPerformance", "--topic", topic, "--num-records", records, "--record-size", size,
                     "--throughput", throughput, *txn, "--producer-props", f"bootstrap.servers={broker.bootstrap}",
                     f"acks={acks}", "linger.ms=5", "batch.size=65536")
    last = [l for l in out.splitlines() if "records sent" in l][-1]
    m = re.search(r"([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, ([\d.]+) ms max latency, "
                  r"(\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th", last)
    return {"msgs_s": float(m[1]), "mb_s": float(m[2]), "p50_ms": float(m[5]), "p99_ms": float(m[7]),
            "p999_ms": float(m[8])}


def perf_consume(cp, broker, topic, records, isolation=None):
    config = []
    if isolation:
        f = Path(tempfile.mktemp(suffix=".properties"))
        f.write_text(f"isolation.level={isolation}\n")
        config = ["--command-config", str(f)]
    out = kafka_tool(cp, "ConsumerPerformance", "--bootstrap-server", broker.bootstrap, "--topic", topic,
                     "--messages", records, "--timeout", 60000, "--group", f"perf-{time.time_ns()}", *config)
    last = out.strip().splitlines()[-1].split(",")
    # start, end, MB, MB/sec, nMsg, nMsg/sec, rebalance ms, fetch ms, fetch MB/sec, fetch nMsg/sec
    return {"msgs_s": float(last[9]), "mb_s": float(last[8])}


def run_bench(scenario, broker, topic, partitions, *args):
    """`ringmq bench SCENARIO` against `broker`; its JSON report."""
    out = Path(tempfile.mktemp(suffix=".json"))
    p = subprocess.run([*CLIENT_PIN, str(RINGMQ), "bench", scenario, "-b", broker.bootstrap, "-t", topic,
                        "--partitions", str(partitions), *map(str, args), "--json", str(out)],
                       capture_output=True, text=True, timeout=900)
    if p.returncode != 0 or not out.exists():
        raise RuntimeError(f"ringmq bench {scenario} failed: {p.stdout[-2000:]} {p.stderr[-2000:]}")
    j = json.loads(out.read_text())
    out.unlink()
    lat = j["produce_latency"]
    return j, {"msgs_s": j["produced"]["msgs_per_s"], "mb_s": j["produced"]["mb_per_s"],
               "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"], "p999_ms": lat["p999_ms"]}


def bench_produce(broker, topic, records, size, acks, partitions):
    return run_bench("produce", broker, topic, partitions, "-n", records, "-s", size, "--acks", acks)[1]


def bench_e2e(broker, topic, rate, seconds, size, partitions):
    """ringmq bench e2e: produce at `rate` (acks=all) while consumers read the tail; the
    send time travels in the payload, so both produce and end-to-end latency are timed."""
    j, res = run_bench("e2e", broker, topic, partitions, "-r", rate, "-d", seconds, "-s", size, "--acks", "all")
    e2e = j["e2e_latency"]
    return {**res, "e2e_p50_ms": e2e["p50_ms"], "e2e_p99_ms": e2e["p99_ms"], "e2e_p999_ms": e2e["p999_ms"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--heap", default="1G")
    ap.add_argument("--json")
    ap.add_argument("--skip-bench-tool", action="store_true", help="only Kafka's perf tools")
    ap.add_argument("--pin", action="store_true", help="brokers on core 0, generators on the others")
    ap.add_argument("--transactions", action="store_true", help="the transaction scenarios only")
    ap.add_argument("--topics", action="store_true", help="the topic-creation scenarios only")
    args = ap.parse_args()
    if args.pin:
        cores = os.cpu_count() or 2
        BROKER_PIN[:] = ["taskset", "-c", "0"]
        CLIENT_PIN[:] = ["taskset", "-c", f"1-{cores - 1}" if cores > 2 else "1"]
    cp = subprocess.run([str(KAFKA_SH), "classpath"], check=True, capture_output=True, text=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="ringmq-peer-"))
    ringmq, rproc = start_ringmq(work)
    kafka, kdir = start_kafka(work, args.heap)
    brokers = [ringmq, kafka]
    rows = []
    try:
        if args.transactions:
            transactions(cp, brokers, args, rows)
            return
        if args.topics:
            topic_creation(brokers, args, rows)
            return
        scenarios = [("perf-test produce", 1, "1"), ("perf-test produce", 16, "1"),
                     ("perf-test produce", 1, "all"), ("perf-test produce", 16, "all")]
        for r in range(args.rounds):
            order = brokers if r % 2 == 0 else brokers[::-1]
            for name, parts, acks in scenarios:
                for b in order:
                    topic = f"p{parts}-a{acks}-r{r}"
                    create_topic(cp, b, topic, parts)
                    res, cpu, wall, rss = measured(b, lambda: perf_produce(cp, b, topic, args.records, args.size, acks))
                    gb = args.records * args.size / 1e9
                    rows.append({"scenario": f"{name} {parts}p acks={acks}", "broker": b.name, "round": r, **res,
                                 "cpu_s_per_gb": cpu / gb, "rss_mb": rss})
                    if parts == 16 and acks == "1":
                        res, cpu, wall, rss = measured(b, lambda: perf_consume(cp, b, topic, args.records))
                        rows.append({"scenario": "perf-test consume 16p", "broker": b.name, "round": r, **res,
                                     "cpu_s_per_gb": cpu / gb, "rss_mb": rss})
            if not args.skip_bench_tool:
                for b in order:
                    topic = f"bench-r{r}"
                    res, cpu, wall, rss = measured(b, lambda: bench_produce(b, topic, args.records, args.size, "all", 16))
                    rows.append({"scenario": "ringmq bench produce 16p acks=all", "broker": b.name, "round": r, **res,
                                 "cpu_s_per_gb": cpu / (args.records * args.size / 1e9), "rss_mb": rss})
        # Latency at a fixed rate: half the lower of the two maxima (16p acks=all).
        best = {b.name: max(x["msgs_s"] for x in rows if x["broker"] == b.name
                            and x["scenario"] == "perf-test produce 16p acks=all") for b in brokers}
        rate = int(min(best.values()) / 2)
        for r in range(args.rounds):
            for b in (brokers if r % 2 == 0 else brokers[::-1]):
                topic = f"rate-r{r}"
                create_topic(cp, b, topic, 16)
                n = min(args.records, rate * 20)
                res, cpu, wall, rss = measured(b, lambda: perf_produce(cp, b, topic, n, args.size, "all", rate))
                rows.append({"scenario": f"perf-test produce 16p acks=all at {rate}/s", "broker": b.name, "round": r,
                             **res, "cpu_s_per_gb": cpu / (n * args.size / 1e9), "rss_mb": rss})
                if not args.skip_bench_tool:
                    res, cpu, wall, rss = measured(b, lambda: bench_e2e(b, f"e2e-r{r}", rate, 20, args.size, 16))
                    rows.append({"scenario": f"ringmq bench e2e 16p acks=all at {rate}/s", "broker": b.name,
                                 "round": r, **res, "cpu_s_per_gb": cpu / (res["mb_s"] * 20 / 1e3), "rss_mb": rss})
    finally:
        rproc.terminate()
        subprocess.run([str(KAFKA_SH), "stop", str(kdir)])
        table(rows)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
        shutil.rmtree(work, ignore_errors=True)


def transactions(cp, brokers, args, rows):
    """Idempotent against transactional produce (a commit every 10 ms and every 100 ms),
    then read_uncommitted against read_committed consumption of the transactional topic."""
    gb = args.records * args.size / 1e9
    for r in range(args.rounds):
        for b in (brokers if r % 2 == 0 else brokers[::-1]):
            for label, txn_ms in (("idempotent", None), ("transactional, commit every 10 ms", 10),
                                  ("transactional, commit every 100 ms", 100)):
                topic = f"tx-{txn_ms}-r{r}"
                create_topic(cp, b, topic, 3)
                res, cpu, wall, rss = measured(b, lambda: perf_produce(cp, b, topic, args.records, args.size, "all",
                                                                       txn_ms=txn_ms))
                rows.append({"scenario": f"perf-test produce 3p acks=all {label}", "broker": b.name, "round": r,
                             **res, "cpu_s_per_gb": cpu / gb, "rss_mb": rss})
            for isolation in ("read_uncommitted", "read_committed"):
                res, cpu, wall, rss = measured(b, lambda: perf_consume(cp, b, f"tx-10-r{r}", args.records, isolation))
                rows.append({"scenario": f"perf-test consume 3p transactional {isolation}", "broker": b.name,
                             "round": r, **res, "cpu_s_per_gb": cpu / gb, "rss_mb": rss})


def create_and_wait(broker, batches, replication_factor=1):
    """Sends each batch of (name, partitions) as one CreateTopics, all at once, and waits
    until every partition of every topic has a leader; returns the seconds taken."""
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "socket.timeout.ms": 120000})
    started = time.time()
    futures = [admin.create_topics([NewTopic(n, p, replication_factor) for n, p in batch], request_timeout=120,
                                   operation_timeout=120) for batch in batches]
    for f in futures:
        for fut in f.values():
            fut.result(180)
    wanted = {n: p for batch in batches for n, p in batch}
    while time.time() - started < 180:
        md = admin.list_topics(timeout=30).topics
        if all(n in md and len(md[n].partitions) == p and all(x.leader >= 0 for x in md[n].partitions.values())
               for n, p in wanted.items()):
            break
        time.sleep(0.02)
    else:
        raise RuntimeError(f"{broker.name}: topics not ready in 180 s")
    led = time.time() - started
    # Usable: one record acknowledged by every partition (its log exists on the leader).
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "1", "linger.ms": 5,
                  "message.timeout.ms": 170000})
    failed = []
    for n, parts in wanted.items():
        for i in range(parts):
            p.produce(n, b"x", partition=i, on_delivery=lambda err, m: err and failed.append(err))
            p.poll(0)
    if p.flush(180) or failed:
        raise RuntimeError(f"{broker.name}: produce to the new partitions failed: {failed[:3]}")
    return led, time.time() - started


def topic_creation(brokers, args, rows):
    scenarios = [
        ("1 topic x 1000 partitions, one request", lambda tag: [[(f"big-{tag}", 1000)]]),
        ("100 topics x 4 partitions, one request", lambda tag: [[(f"many-{tag}-{i}", 4) for i in range(100)]]),
        ("10 requests of 1 topic x 4 partitions at once", lambda tag: [[(f"con-{tag}-{i}", 4)] for i in range(10)]),
    ]
    for r in range(args.rounds):
        order = brokers if r % 2 == 0 else brokers[::-1]
        for name, batches in scenarios:
            for b in order:
                c0 = cpu_seconds(b.pid)
                led, usable = create_and_wait(b, batches(f"r{r}"))
                rows.append({"scenario": f"create {name}", "broker": b.name, "round": r, "seconds": led,
                             "usable_seconds": usable, "cpu_s": cpu_seconds(b.pid) - c0, "rss_mb": rss_mb(b.pid)})
                print(f"{name}: {b.name} led in {led:.2f} s, every partition took a record at {usable:.2f} s",
                      flush=True)


def table(rows):
    scen = list(dict.fromkeys(r["scenario"] for r in rows))
    cols = ["msgs_s", "mb_s", "p50_ms", "p99_ms", "p999_ms", "e2e_p50_ms", "e2e_p99_ms", "e2e_p999_ms",
            "cpu_s_per_gb", "seconds", "usable_seconds", "cpu_s", "rss_mb"]
    print("| scenario | metric | ringmq | kafka | ratio |\n|---|---|---|---|---|")
    for s in scen:
        for c in cols:
            vals = {}
            for b in ("ringmq", "kafka"):
                xs = [r[c] for r in rows if r["scenario"] == s and r["broker"] == b and r.get(c) is not None]
                if xs:
                    vals[b] = statistics.median(xs)
            if len(vals) == 2:
                ratio = vals["ringmq"] / vals["kafka"] if vals["kafka"] else float("inf")
                print(f"| {s} | {c} | {vals['ringmq']:.2f} | {vals['kafka']:.2f} | {ratio:.2f}x |")


if __name__ == "__main__":
    sys.exit(main())
