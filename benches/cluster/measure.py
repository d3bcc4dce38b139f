#!/usr/bin/env python3
"""Replicated-cluster figures, side by side in one run on this machine:

1. throughput: one broker, RF=1, acks=1 versus three brokers (`ringmq cluster start`),
   RF=3, acks=all, min.insync.replicas=2 — `ringmq bench produce`, interleaved A B A B;
   with --peer, Apache Kafka's same two set-ups in the same rounds (benches/peer/kafka.sh:
   one node, and three KRaft nodes in combined mode), so the cost of replicating three
   ways on this one machine is measured for Kafka too;
2. failover time: kill -9 of a partition leader to the first acks=all produce
   acknowledged again, with Kafka's default session timeout and a tuned one;
3. catch-up: a follower down while 1 GB (default) goes to its partition, then restarted;
   time until it is back in the ISR;
4. topics: one CreateTopics of 1000 partitions with RF=3 on three brokers, from the
   request until every partition has a leader in Metadata, and until every partition
   acknowledged a record; beside Kafka's three nodes in the same rounds with --peer.

    benches/cluster/measure.py [--records 500000] [--rounds 2] [--lag-mb 1024] [--json F]
        [--property num.replica.fetchers=4] [--skip throughput|failover|catchup|topics] [--peer]

RINGMQ_BENCH_DIR puts the data directories elsewhere (e.g. /dev/shm to take the disk out).

Needs target/release/{ringmqd,ringmq} and the test venv (confluent-kafka).
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benches"))
from measure import cpu_seconds  # noqa: E402

RINGMQ = ROOT / "target" / "release" / "ringmq"
RINGMQD = ROOT / "target" / "release" / "ringmqd"


def free_base(brokers=3):
    """A base port with base..base+n-1 and base+100..base+100+n-1 free, below the
    ephemeral range."""
    import random
    import socket
    while True:
        base = random.randrange(12000, 30000)
        ok = True
        for p in [base + i for i in range(brokers)] + [base + 100 + i for i in range(brokers)]:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
        if ok:
            return base


class LocalCluster:
    def __init__(self, brokers, props=()):
        self.dir = Path(tempfile.mkdtemp(prefix="ringmq-cluster-", dir=os.environ.get("RINGMQ_BENCH_DIR")))
        self.base = free_base(max(brokers, 3))
        self.brokers = brokers
        args = [str(RINGMQ), "cluster", "start", "--brokers", str(brokers), "--dir", str(self.dir),
                "--base-port", str(self.base), "--shards", "1"]
        for k, v in props:
            args += ["--property", f"{k}={v}"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        deadline = time.time() + 90
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("bootstrap.servers="):
                self.bootstrap = line.strip().split("=", 1)[1]
                return
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError("the cluster did not start")

    def addr(self, node):
        return f"127.0.0.1:{self.base + node - 1}"

    def pid(self, node):
        out = subprocess.run(["pgrep", "-f", f"{self.dir}/node{node}/server.properties"],
                             capture_output=True, text=True).stdout.split()
        return int(out[0]) if out else None

    def kill9(self, node):
        os.kill(self.pid(node), signal.SIGKILL)

    def restart(self, node):
        d = self.dir / f"node{node}"
        log = open(d / "ringmqd.log", "a")
        return subprocess.Popen([str(RINGMQD), "--config", str(d / "server.properties")], stdout=log,
                                stderr=subprocess.STDOUT)

    def cpu(self):
        return sum(cpu_seconds(self.pid(n)) for n in range(1, self.brokers + 1) if self.pid(n))

    def disk_written(self):
        """Bytes the brokers caused to be written to storage (/proc/PID/io write_bytes)."""
        total = 0
        for n in range(1, self.brokers + 1):
            pid = self.pid(n)
            if pid:
                for line in Path(f"/proc/{pid}/io").read_text().splitlines():
                    if line.startswith("write_bytes:"):
                        total += int(line.split()[1])
        return total

    def stop(self, extra=()):
        for p in extra:
            p.terminate()
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(120)
        for p in extra:
            p.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


KAFKA_SH = ROOT / "benches" / "peer" / "kafka.sh"


class KafkaCluster:
    """Apache Kafka on this machine: one node, or `brokers` KRaft nodes in combined mode
    with a static quorum (1 GB heap each), with LocalCluster's interface."""

    def __init__(self, brokers):
        self.dir = Path(tempfile.mkdtemp(prefix="kafka-cluster-", dir=os.environ.get("RINGMQ_BENCH_DIR")))
        self.brokers = brokers
        base = free_base(max(brokers, 3))
        # PORT and PORT+1 (its controller) per node.
        self.ports = {n: base + 2 * (n - 1) for n in range(1, brokers + 1)}
        env = dict(os.environ)
        if brokers > 1:
            env["KAFKA_VOTERS"] = ",".join(f"{n}@127.0.0.1:{p + 1}" for n, p in self.ports.items())
            env["KAFKA_CLUSTER_ID"] = subprocess.run(
                [str(KAFKA_SH), "tool", "kafka.tools.StorageTool", "random-uuid"],
                capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        starts = []
        for n, port in self.ports.items():
            starts.append(subprocess.Popen([str(KAFKA_SH), "start", str(self.dir / f"node{n}"), str(port)],
                                           env={**env, "KAFKA_NODE_ID": str(n)}, stdout=subprocess.DEVNULL))
        for s in starts:
            if s.wait(180) != 0:
                raise RuntimeError("kafka did not start")
        self.bootstrap = ",".join(f"127.0.0.1:{p}" for p in self.ports.values())
        # Every node registered and unfenced before the topic is created.
        from confluent_kafka.admin import AdminClient
        deadline = time.time() + 120
        while time.time() < deadline:
            md = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=10)
            if len(md.brokers) == brokers:
                return
            time.sleep(0.5)
        raise RuntimeError("kafka brokers did not all register")

    def pid(self, node):
        f = self.dir / f"node{node}" / "kafka.pid"
        return int(f.read_text()) if f.exists() else None

    cpu = LocalCluster.cpu
    disk_written = LocalCluster.disk_written

    def stop(self, extra=()):
        for n in self.ports:
            subprocess.run([str(KAFKA_SH), "stop", str(self.dir / f"node{n}")], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def ringmq(*args, timeout=600):
    r = subprocess.run([str(RINGMQ), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"ringmq {' '.join(map(str, args))}: {r.stderr[-2000:]}")
    return r.stdout


def bench(bootstrap, topic, records, acks):
    out = Path(tempfile.mktemp(suffix=".json"))
    ringmq("bench", "produce", "-b", bootstrap, "-t", topic, "-n", records, "-s", 1024, "--acks", acks,
           "--client", "native", "--producers", 2, "--json", out)
    j = json.loads(out.read_text())
    out.unlink()
    return {"msgs_s": j["produced"]["msgs_per_s"], "mb_s": j["produced"]["mb_per_s"],
            "p99_ms": j["produce_latency"]["p99_ms"]}


def measured(cluster, topic, records, acks):
    cpu0, disk0, t0 = cluster.cpu(), cluster.disk_written(), time.monotonic()
    r = bench(cluster.bootstrap, topic, records, acks)
    secs = time.monotonic() - t0
    r["broker_cpu_s"] = cluster.cpu() - cpu0
    r["disk_write_mb_s"] = (cluster.disk_written() - disk0) / 1e6 / secs
    return r


def pair(make, records, props=()):
    """One broker RF=1 acks=1, then three brokers RF=3 acks=all min.insync.replicas=2."""
    single = make(1, ())
    ringmq("topic", "create", "t1", "-p", 6, "-r", 1, "-b", single.bootstrap)
    a = measured(single, "t1", records, "1")
    single.stop()
    trio = make(3, props)
    ringmq("topic", "create", "t3", "-p", 6, "-r", 3, "-c", "min.insync.replicas=2", "-b", trio.bootstrap)
    b = measured(trio, "t3", records, "all")
    trio.stop()
    return {"one_broker_rf1_acks1": a, "three_brokers_rf3_acksall": b, "ratio": b["msgs_s"] / a["msgs_s"]}


def describe(label, r):
    a, b = r["one_broker_rf1_acks1"], r["three_brokers_rf3_acksall"]
    return (f"{label}: 1 broker RF=1 acks=1 {a['msgs_s']:,.0f} msgs/s (p99 {a['p99_ms']:.0f} ms, "
            f"{a['broker_cpu_s']:.1f} CPU-s); 3 brokers RF=3 acks=all {b['msgs_s']:,.0f} msgs/s "
            f"(p99 {b['p99_ms']:.0f} ms, {b['broker_cpu_s']:.1f} CPU-s, disk {b['disk_write_mb_s']:.0f} MB/s); "
            f"ratio {r['ratio']:.2f}")


def throughput(records, rounds, props=(), peer=False):
    rows = []
    for rnd in range(rounds):
        row = {"round": rnd, **pair(lambda n, p: LocalCluster(n, p), records, props)}
        print(f"round {rnd}: " + describe("ringmq", row), flush=True)
        if peer:
            row["kafka"] = pair(lambda n, _p: KafkaCluster(n), records)
            print(f"round {rnd}: " + describe("kafka", row["kafka"]), flush=True)
            ours, theirs = row["three_brokers_rf3_acksall"], row["kafka"]["three_brokers_rf3_acksall"]
            print(f"round {rnd}: 3 brokers RF=3 acks=all, ringmq / kafka: "
                  f"{ours['msgs_s'] / theirs['msgs_s']:.2f}x msgs/s, "
                  f"{ours['broker_cpu_s'] / max(theirs['broker_cpu_s'], 1e-9):.2f}x broker CPU-s", flush=True)
        rows.append(row)
    return rows


def topic_creation(rounds, peer=False):
    """Seconds from one CreateTopics of 1000 partitions (RF=3) to every partition led."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("compare", ROOT / "benches" / "peer" / "compare.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    rows = []
    for rnd in range(rounds):
        makers = [("ringmq", lambda: LocalCluster(3))] + ([("kafka", lambda: KafkaCluster(3))] if peer else [])
        for name, make in (makers if rnd % 2 == 0 else makers[::-1]):
            cluster = make()
            try:
                broker = compare.Broker(name, cluster.bootstrap, None)
                led, usable = compare.create_and_wait(broker, [[(f"wide-{rnd}", 1000)]], replication_factor=3)
            finally:
                cluster.stop()
            rows.append({"round": rnd, "broker": name, "seconds": led, "usable_seconds": usable})
            print(f"round {rnd}: {name}: 1000 partitions RF=3 on 3 brokers led in {led:.2f} s, "
                  f"each took a record at {usable:.2f} s", flush=True)
    return rows


def leader_of(bootstrap, topic, partition):
    from confluent_kafka.admin import AdminClient
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic=topic, timeout=10)
    p = md.topics[topic].partitions[partition]
    return p.leader, p.isrs


def failover(props, label):
    from confluent_kafka import Producer
    c = LocalCluster(3, props)
    ringmq("topic", "create", "fo", "-p", 1, "-r", 3, "-c", "min.insync.replicas=2", "-b", c.bootstrap)
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "linger.ms": 0,
                  "message.timeout.ms": 60000, "retry.backoff.ms": 20, "retry.backoff.max.ms": 100,
                  "topic.metadata.refresh.interval.ms": 100})
    for _ in range(100):
        p.produce("fo", b"warm")
    p.flush(10)
    leader, _ = leader_of(c.bootstrap, "fo", 0)
    acked = []
    t0 = time.monotonic()
    c.kill9(leader)
    p.produce("fo", b"after", on_delivery=lambda err, m: acked.append((err, time.monotonic())))
    p.flush(60)
    err, t = acked[0]
    revived = c.restart(leader)
    c.stop([revived])
    secs = t - t0
    print(f"failover ({label}): {secs:.2f} s from kill -9 to the first acks=all ack", flush=True)
    return {"label": label, "seconds": secs, "error": str(err) if err else None}


def catch_up(lag_mb):
    from confluent_kafka import Producer
    c = LocalCluster(3, [("replica.lag.time.max.ms", "5000"), ("broker.session.timeout.ms", "3000"),
                         ("broker.heartbeat.interval.ms", "500")])
    ringmq("topic", "create", "cu", "-p", 1, "-r", 3, "-c", "min.insync.replicas=2", "-b", c.bootstrap)
    leader, _ = leader_of(c.bootstrap, "cu", 0)
    follower = next(n for n in (1, 2, 3) if n != leader)
    c.kill9(follower)
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "linger.ms": 5,
                  "batch.size": 1_000_000, "queue.buffering.max.kbytes": 1_000_000})
    value = b"x" * 1024
    n = lag_mb * 1024
    for i in range(n):
        while True:
            try:
                p.produce("cu", value)
                break
            except BufferError:
                p.poll(0.01)
        if i % 10000 == 0:
            p.poll(0)
    p.flush(300)
    t0 = time.monotonic()
    revived = c.restart(follower)
    while True:
        _, isrs = leader_of(c.addr(leader), "cu", 0)
        if follower in isrs:
            break
        time.sleep(0.05)
    secs = time.monotonic() - t0
    c.stop([revived])
    print(f"catch-up: follower back in the ISR {secs:.2f} s after restarting with {lag_mb} MB of lag "
          f"({lag_mb / secs:.0f} MB/s)", flush=True)
    return {"lag_mb": lag_mb, "seconds": secs, "mb_per_s": lag_mb / secs}


def warm_memory(leave_mb=3072):
    """Touches the machine's free memory once. On this VM (Firecracker) a guest page the
    guest has never used costs a host fault on first touch: filling new page cache ran
    at ~360 MB/s the first time and 3.8-4.6 GB/s after, and first-touching 2 GiB of
    anonymous memory took 8.6 s against 0.16 s for the second pass. Without this, the
    first configuration measured pays for warming pages the next one reuses, and three
    replicas writing three times the bytes pay three times as much. A real host's memory
    is backed from the start; this makes this machine behave like one."""
    avail = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemAvailable:")) // 1024
    mb = max(0, avail - leave_mb)
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", (
        "import mmap\n"
        f"n = {mb} << 20\n"
        "m = mmap.mmap(-1, n)\n"
        "page = b'\\1' * 4096\n"
        "for off in range(0, n, 1 << 20):\n"
        "    m[off:off + (1 << 20)] = page * 256\n")], check=True)
    print(f"warmed {mb} MB of memory in {time.monotonic() - t0:.1f} s", flush=True)
    return {"warmed_mb": mb, "seconds": time.monotonic() - t0}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--lag-mb", type=int, default=1024)
    ap.add_argument("--json")
    ap.add_argument("--property", action="append", default=[], metavar="K=V",
                    help="a broker property for the three-broker cluster of the throughput figure")
    ap.add_argument("--skip", action="append", default=[], help="throughput, failover or catchup")
    ap.add_argument("--no-warm", action="store_true",
                    help="skip touching free memory first (see warm_memory)")
    ap.add_argument("--peer", action="store_true",
                    help="measure Apache Kafka's one-broker and three-broker throughput in the same rounds")
    a = ap.parse_args()
    warmed = None if a.no_warm else warm_memory()
    limits = subprocess.run([str(ROOT.parent / "shared" / "tools" / "physical-limits"), tempfile.gettempdir()],
                            capture_output=True, text=True)
    result = {"machine": os.uname().release, "cores": os.cpu_count(),
              "physical_limits": json.loads(limits.stdout.strip().splitlines()[-1]) if limits.returncode == 0 else None}
    print(f"physical limits: {result['physical_limits']}", flush=True)
    result["warm_memory"] = warmed

    if "throughput" not in a.skip:
        props = [tuple(kv.split("=", 1)) for kv in a.property]
        result["cluster_properties"] = dict(props)
        result["throughput"] = throughput(a.records, a.rounds, props, a.peer)
    if "failover" not in a.skip:
        result["failover"] = [
            failover([], "defaults: heartbeat 2000 ms, session 9000 ms"),
            failover([("broker.heartbeat.interval.ms", "200"), ("broker.session.timeout.ms", "1500")],
                     "tuned: heartbeat 200 ms, session 1500 ms"),
        ]
    if "catchup" not in a.skip:
        result["catch_up"] = catch_up(a.lag_mb)
    if "topics" not in a.skip:
        result["topics"] = topic_creation(a.rounds, a.peer)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
