#!/usr/bin/env python3
"""Broker figures for issue 3, side by side in one run on this machine.

Starts a release ringmqd, then with `ringmq bench` (librdkafka, messages generated
in-process) as the load generator measures:
produce msgs/s and MB/s of 1 KB messages (1 and 16 partitions; acks=1, and acks=all with
synchronous flush), consume MB/s, broker CPU seconds per GB moved, and iperf3's loopback
TCP figure as the ceiling. Usage: benches/broker_figures.py [MESSAGES]
Client and broker CPU are reported separately (they share the machine's cores).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from measure import cpu_seconds, free_port

ROOT = Path(__file__).resolve().parent.parent
RINGMQD = ROOT / "target" / "release" / "ringmqd"
N = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
SIZE = 1024


def iperf3_mbps():
    port = free_port()
    srv = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", "4", "-l", "128K", "-J"], capture_output=True, text=True)
    srv.wait(10)
    return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 8e6


def main():
    data = tempfile.mkdtemp(prefix="ringmq-figures-", dir=ROOT)
    try:
        figures(data)
    finally:
        shutil.rmtree(data, ignore_errors=True)


def figures(data):
    port = free_port()
    bs = f"127.0.0.1:{port}"
    broker = subprocess.Popen([str(RINGMQD), "--data-dir", data, "--listen", bs], stderr=subprocess.DEVNULL)
    time.sleep(1)
    ringmq = [str(ROOT / "target" / "release" / "ringmq"), "-b", bs]
    for t, (parts, conf) in {"p1": (1, {}), "p16": (16, {}), "p1-sync": (1, {"flush.messages": "1"}),
                             "p16-sync": (16, {"flush.messages": "1"})}.items():
        cfg = [a for k, v in conf.items() for a in ("-c", f"{k}={v}")]
        subprocess.run([*ringmq, "topic", "create", t, "-p", str(parts), *cfg], check=True, capture_output=True)
    rows = []
    runs = [(["produce", "-t", "p1", "--acks", "1", "-q"], "produce p1 acks=1"),
            (["produce", "-t", "p16", "--acks", "1", "-q"], "produce p16 acks=1"),
            (["produce", "-t", "p1-sync", "--acks", "all", "-q"], "produce p1 acks=all sync-flush"),
            (["produce", "-t", "p16-sync", "--acks", "all", "-q"], "produce p16 acks=all sync-flush"),
            (["consume", "-t", "p1", "-q"], "consume p1"),
            (["consume", "-t", "p16", "-q"], "consume p16")]
    for args, name in runs:
        cpu0 = cpu_seconds(broker.pid)
        t0 = os.times()
        out = subprocess.run([*ringmq, "bench", *args, "-n", str(N)], check=True, capture_output=True, text=True).stdout
        t1 = os.times()
        rep = json.loads(out.strip().splitlines()[-1])
        flow = rep["produced"] or rep["consumed"]
        r = {"msgs_per_s": flow["msgs_per_s"], "MB_per_s": flow["mb_per_s"],
             "p99_ms": (rep["produce_latency"] or {}).get("p99_ms")}
        gb = N * SIZE / 1e9
        r.update(test=name, broker_cpu_s_per_GB=(cpu_seconds(broker.pid) - cpu0) / gb,
                 client_cpu_s_per_GB=((t1.children_user - t0.children_user) + (t1.children_system - t0.children_system)) / gb)
        rows.append(r)
    broker.kill()
    ceiling = iperf3_mbps()
    print(f"machine: {os.cpu_count()} cores; client (ringmq bench, librdkafka) and broker on the same machine; {N} x {SIZE} B")
    print(f"iperf3 loopback, one stream: {ceiling:.0f} MB/s")
    for r in rows:
        extra = f"  ({100 * r['MB_per_s'] / ceiling:.0f}% of loopback)" if r["test"].startswith("consume") else ""
        print(f"{r['test']:<34} {r['msgs_per_s']:>9.0f} msgs/s {r['MB_per_s']:>7.0f} MB/s  "
              f"broker {r['broker_cpu_s_per_GB']:.2f} CPU-s/GB, client {r['client_cpu_s_per_GB']:.2f} CPU-s/GB{extra}")
    print(json.dumps({"loopback_MBps": ceiling, "rows": rows}))


if __name__ == "__main__":
    main()
