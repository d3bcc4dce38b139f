#!/usr/bin/env python3
"""Reassignment figures (issue 11), side by side in one run on this machine:

A 4-broker local cluster (`ringmq cluster start --brokers 4 --shards 1`). Topic `load`
(6 partitions, replicas on brokers 1-3, min.insync.replicas=2) takes an acks=all producer
at a fixed rate (`ringmq bench produce --client native --producers 2 --rate R`, 1 KiB
messages; default 30,000 msgs/s, what leaves this 2-core machine room to move data: a
flat-out producer leaves none, and then any move just shares the cores) for the whole
run. Topic `moved` (one partition, replicas 1,2,3) is preloaded with --move-mb MB,
then moved to 2,3,4 while the producer runs: broker 4 copies the whole partition.

Per run the producer's per-second series gives its throughput and p99 before the move
(no reassignment) and during it. Two runs, each on a fresh cluster: unthrottled, and
with `ringmq reassign execute --throttle T` (MB/s). The throttled run's move time is the
"time to move 1 GB at 50 MB/s" figure (defaults: --move-mb 1024, --throttle 50).

    benches/cluster/reassign.py [--move-mb 1024] [--throttle 50] [--rate 30000] [--json F]

Needs target/release/{ringmqd,ringmq} and the test venv (confluent-kafka).
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import importlib.util
import sys

# benches/cluster/measure.py (its name clashes with benches/measure.py, which it imports).
_spec = importlib.util.spec_from_file_location("cluster_measure", Path(__file__).with_name("measure.py"))
cluster_measure = importlib.util.module_from_spec(_spec)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
_spec.loader.exec_module(cluster_measure)
RINGMQ, ROOT, LocalCluster, ringmq = (cluster_measure.RINGMQ, cluster_measure.ROOT, cluster_measure.LocalCluster,
                                      cluster_measure.ringmq)


def create(bootstrap, name, partitions, assignment, configs=None):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=partitions,
                                  replica_assignment=[assignment] * partitions,
                                  config=configs or {})])[name].result(30)


def window(series, t0, t1):
    rows = [s for s in series if t0 <= s["t"] <= t1]
    if not rows:
        return None
    return {"seconds": t1 - t0,
            "msgs_s": statistics.mean(r["produced_msgs_per_s"] for r in rows),
            "p99_ms_median_second": statistics.median(r["produce_p99_ms"] for r in rows),
            "p99_ms_worst_second": max(r["produce_p99_ms"] for r in rows)}


def run(move_mb, throttle, duration, rate):
    c = LocalCluster(4)
    try:
        create(c.bootstrap, "load", 6, [1, 2, 3], {"min.insync.replicas": "2"})
        create(c.bootstrap, "moved", 1, [1, 2, 3])
        ringmq("bench", "produce", "-b", c.bootstrap, "-t", "moved", "-n", move_mb * 1024, "-s", 1024,
               "--acks", "all", "--client", "native", "--producers", 1, timeout=1800)
        # The preload's dirty pages must not be written back during the measurement.
        os.sync()
        time.sleep(2)
        out = Path(tempfile.mktemp(suffix=".json"))
        started = time.monotonic()
        prod = subprocess.Popen([str(RINGMQ), "bench", "produce", "-b", c.bootstrap, "-t", "load", "-d", str(duration),
                                 "-s", "1024", "--acks", "all", "--client", "native", "--producers", "2",
                                 "--rate", str(rate),
                                 "--json", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(duration * 0.25)
        move_start = time.monotonic() - started
        args = ["reassign", "execute", "-b", c.bootstrap, "--replicas", "moved:0=2,3,4"]
        if throttle is not None:
            args += ["--throttle", throttle]
        ringmq(*args)
        while "No reassignment in progress." not in ringmq("reassign", "status", "-b", c.bootstrap,
                                                             "--interval", "0.1", "--keep-throttles"):
            time.sleep(0.2)
        move_end = time.monotonic() - started
        prod.wait(duration + 120)
        ringmq("reassign", "status", "-b", c.bootstrap, "--interval", "0.1")  # clears the throttles
        series = json.loads(out.read_text())["series"]
        out.unlink()
        moved = move_mb * 1024 * 1024
        r = {"throttle_mb_s": throttle, "move_mb": move_mb, "producer_rate": rate,
             "move_seconds": move_end - move_start,
             "move_mb_s": moved / 1e6 / (move_end - move_start),
             "before": window(series, 1.0, move_start),
             "during": window(series, move_start, move_end),
             "series": [{"t": round(x["t"], 2), "msgs_s": round(x["produced_msgs_per_s"]),
                         "p99_ms": x["produce_p99_ms"]} for x in series]}
        label = f"throttle {throttle} MB/s" if throttle is not None else "unthrottled"
        b, d = r["before"], r["during"]
        print(f"{label}: moved {move_mb} MB in {r['move_seconds']:.1f} s ({r['move_mb_s']:.0f} MB/s); producer "
              f"{b['msgs_s']:,.0f} msgs/s p99 {b['p99_ms_median_second']:.0f} ms before, "
              f"{d['msgs_s']:,.0f} msgs/s p99 {d['p99_ms_median_second']:.0f} ms "
              f"(worst second {d['p99_ms_worst_second']:.0f} ms) during", flush=True)
        return r
    finally:
        c.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--move-mb", type=int, default=1024)
    ap.add_argument("--throttle", type=float, default=50)
    ap.add_argument("--rate", type=int, default=30000, help="producer msgs/s (1 KiB each)")
    ap.add_argument("--duration", type=int, default=0, help="producer seconds (default: enough for the throttled move)")
    ap.add_argument("--json")
    a = ap.parse_args()
    duration = a.duration or int(a.move_mb * 1.048576 / a.throttle * 1.6 + 10)
    limits = subprocess.run([str(ROOT.parent / "shared" / "tools" / "physical-limits"), tempfile.gettempdir()],
                            capture_output=True, text=True)
    result = {"physical_limits": json.loads(limits.stdout.strip().splitlines()[-1]) if limits.returncode == 0 else None,
              "runs": [run(a.move_mb, None, duration, a.rate), run(a.move_mb, a.throttle, duration, a.rate)]}
    print(f"physical limits: {result['physical_limits']}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
