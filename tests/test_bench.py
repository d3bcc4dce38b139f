"""`ringmq bench` and `ringmq tune` against real ringmqd processes: every scenario runs
short, and its report is checked against what the broker actually holds."""
import csv
import json
import subprocess
import time

from confluent_kafka import Consumer, TopicPartition

from conftest import RINGMQD, ROOT

RINGMQ = ROOT / "target" / "release" / "ringmq"


def bench(bootstrap, *args, timeout=120, check=True):
    r = subprocess.run([str(RINGMQ), "-b", bootstrap, "bench", *args], capture_output=True, text=True,
                       timeout=timeout)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def report(r):
    return json.loads(r.stdout.strip().splitlines()[-1])


def end_offsets(bootstrap, topic, partitions):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "check"})
    total = sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions))
    c.close()
    return total


def test_produce_then_consume_counts_match_the_broker(broker):
    r = report(bench(broker.bootstrap, "produce", "-t", "pc", "--partitions", "3", "-n", "20000",
                     "-s", "512", "--acks", "1", "--compression", "lz4", "--producers", "2"))
    assert r["scenario"] == "produce"
    assert r["produced"]["messages"] == 20000 and r["produced"]["errors"] == 0
    assert r["produced"]["bytes"] == 20000 * 512
    lat = r["produce_latency"]
    assert lat["count"] == 20000
    assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["p999_ms"] <= lat["max_ms"]
    assert r["client_cpu_cores"] > 0
    assert end_offsets(broker.bootstrap, "pc", 3) == 20000
    # The broker's own view of the same requests: its produce-time histogram counted them.
    assert broker.metrics()["ringmq_produce_time_seconds_count"] > 0
    c = report(bench(broker.bootstrap, "consume", "-t", "pc", "--consumers", "2"))
    assert c["consumed"]["messages"] == 20000 and c["consumed"]["bytes"] == 20000 * 512
    # The bench's own payloads carry their send time: consumers measure end-to-end age.
    assert c["e2e_latency"]["count"] == 20000
    assert "consumed" in bench(broker.bootstrap, "consume", "-t", "pc", "-n", "5000", "-q").stdout


def test_paced_e2e_writes_csv_plot_and_json(broker, tmp_path):
    out = bench(broker.bootstrap, "e2e", "-t", "lat", "--rate", "2000", "-d", "3", "--linger-ms", "0",
                "--csv", str(tmp_path / "s.csv"), "--plot", str(tmp_path / "p.html"),
                "--json", str(tmp_path / "r.json"))
    r = report(out)
    assert r == json.loads((tmp_path / "r.json").read_text())
    assert r["target_msgs_per_s"] == 2000
    # Paced: about 3 s x 2000/s, all of it consumed from the tail.
    assert 5400 <= r["produced"]["messages"] <= 6600, r["produced"]
    assert r["consumed"]["messages"] == r["produced"]["messages"]
    assert 1800 <= r["produced"]["msgs_per_s"] <= 2200
    assert r["e2e_latency"]["count"] > 4000 and r["e2e_latency"]["p50_ms"] < 1000
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert len(rows) >= 3 and float(rows[1]["produced_msgs_per_s"]) > 1000
    html = (tmp_path / "p.html").read_text()
    assert "<svg" in html and "polyline" in html
    assert "produced" in out.stdout and "end-to-end" in out.stdout  # the human table
    assert "[" in out.stderr and "msgs/s" in out.stderr  # the progress line


def test_mixed_with_a_consumer_group(broker):
    r = report(bench(broker.bootstrap, "mixed", "-t", "mix", "--partitions", "4", "-n", "30000",
                     "--consumers", "2", "--group", "bench-g", "-q"))
    assert r["produced"]["messages"] == 30000
    assert r["consumed"]["messages"] == 30000
    assert r["produce_latency"] and r["e2e_latency"]


def test_native_client_writes_real_kafka_data(broker):
    """The bench's own client: its hand-built Produce frames become records any Kafka
    client reads back, counts match the broker's offsets, and its consumer times them."""
    r = report(bench(broker.bootstrap, "produce", "--client", "native", "-t", "nat", "--partitions", "3",
                     "-n", "20000", "-s", "300", "--producers", "2", "--linger-ms", "2"))
    assert r["client"] == "native"
    assert r["produced"]["messages"] == 20000 and r["produced"]["errors"] == 0
    assert r["produced"]["bytes"] == 20000 * 300
    assert r["produce_latency"]["count"] == 20000
    assert end_offsets(broker.bootstrap, "nat", 3) == 20000
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "nat-check",
                  "auto.offset.reset": "earliest", "check.crcs": True})
    c.assign([TopicPartition("nat", p, 0) for p in range(3)])
    seen = 0
    while seen < 20000:
        m = c.poll(10)
        assert m is not None and m.error() is None, m and m.error()
        assert len(m.value()) == 300 and m.value()[:8] == b"RINGMQB1" and m.key() is None
        seen += 1
    c.close()
    r = report(bench(broker.bootstrap, "consume", "--client", "native", "-t", "nat", "--consumers", "2"))
    assert r["consumed"]["messages"] == 20000 and r["consumed"]["bytes"] == 20000 * 300
    assert r["e2e_latency"]["count"] == 20000
    # acks=0: no responses, yet everything lands.
    r = report(bench(broker.bootstrap, "produce", "--client", "native", "-t", "nat", "--partitions", "3",
                     "-n", "5000", "-s", "100", "--acks", "0"))
    assert r["produced"]["messages"] == 5000
    for _ in range(50):
        if end_offsets(broker.bootstrap, "nat", 3) == 25000:
            break
        time.sleep(0.1)
    assert end_offsets(broker.bootstrap, "nat", 3) == 25000
    # Paced mixed traffic: every message produced is consumed from the tail.
    r = report(bench(broker.bootstrap, "mixed", "--client", "native", "-t", "nat-mix", "--partitions", "4",
                     "--rate", "20000", "-d", "2", "--consumers", "2", "-q"))
    assert r["produced"]["messages"] > 30000
    assert r["consumed"]["messages"] == r["produced"]["messages"]
    assert r["e2e_latency"]["count"] > 0


def test_native_client_reports_broker_errors_and_refuses_what_it_cannot_do(broker):
    # A record over message.max.bytes: the broker answers MESSAGE_TOO_LARGE (10) and the
    # bench counts the errors instead of hanging or crashing.
    r = bench(broker.bootstrap, "produce", "--client", "native", "-t", "nat-big", "-n", "3",
              "-s", "11000000")
    assert r.returncode == 0, r.stderr
    assert report(r)["produced"]["errors"] == 3 and report(r)["produced"]["messages"] == 0
    assert "Kafka error code 10" in r.stderr
    for args, why in ((["produce", "--compression", "lz4"], "uncompressed"),
                      (["mixed", "--group", "g", "-n", "10"], "--group"),
                      (["produce", "--producer-property", "enable.idempotence=true"], "enable.idempotence")):
        r = bench(broker.bootstrap, *args, "--client", "native", "-t", "nat-refuse", check=False)
        assert r.returncode == 1 and why in r.stderr, (args, r.stderr)


def test_bad_arguments_and_unreachable_brokers(broker):
    for args in (["produce", "--size", "8"], ["produce", "--acks", "2"], ["produce", "-d", "soon"],
                 ["flavor-table", "--p99-ms", "-1"], ["consume", "--from", "middle"]):
        r = bench(broker.bootstrap, *args, check=False)
        assert r.returncode == 2, (args, r.stderr)
    r = bench(broker.bootstrap, "consume", "-t", "nope-missing", "--from", "latest", check=False)
    assert r.returncode == 1 and "ringmq:" in r.stderr
    # Nothing listens on port 1: a clear failure, not a hang.
    r = bench("127.0.0.1:1", "consume", "-t", "x", check=False, timeout=90)
    assert r.returncode == 1 and "ringmq:" in r.stderr


def assert_search_converged(row, cap):
    """The flavor search as it ran, whatever rates this machine held: it starts at the
    cap, tries a failing rate twice before halving it, stops at the first rate that holds
    (or at 1000 msgs/s), and reports the best sustained step's achieved rate. Rates are
    the benchmarks' business; a test under load checks the search, not the speed."""
    steps = row["steps"]
    assert steps and steps[0]["rate"] == cap, row
    expected, failures = cap, 0
    for i, st in enumerate(steps):
        assert st["rate"] == expected, (i, [x["rate"] for x in steps])
        if st["pass"]:
            assert i == len(steps) - 1, "the search goes on after a rate held"
            break
        failures += 1
        if failures == 2:
            expected, failures = expected // 2, 0
    passed = [st for st in steps if st["pass"]]
    brokers = row["brokers"]
    if passed:
        best = passed[-1]
        assert row["cluster_tps"] == int(best["report"]["produced"]["msgs_per_s"])
        assert row["cluster_tps"] >= 0.95 * best["rate"]
    else:
        assert row["cluster_tps"] == 0 and steps[-1]["rate"] <= 1000, row
    assert row["max_tps"] == int(row["cluster_tps"] / brokers)


def test_flavor_table_starts_ringmqd_per_profile(tmp_path):
    """A short search against a ringmqd started with --profile kafka.2u4g, capped low so
    it finishes in seconds; the row carries the published figures and the limits check."""
    r = subprocess.run([str(RINGMQ), "bench", "flavor-table", "--profiles", "kafka.2u4g",
                        "--ringmqd", str(RINGMQD), "--data-dir", str(tmp_path / "fd"),
                        "--step", "1.5", "--max-rate", "4000", "--refine", "0", "--no-probe",
                        "--verify-limits", "--json", str(tmp_path / "t.json")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    t = json.loads((tmp_path / "t.json").read_text())
    row, = t["rows"]
    assert row["flavor"] == "kafka.2u4g" and row["published_tps"] == 30000
    assert row["max_partitions"] == 250 and row["max_connections"] == 2000
    # Capped at 4000 msgs/s (the profile publishes 30,000).
    assert_search_converged(row, 4000)
    assert row["limits_verified"] == "250 partitions created, one more refused; " \
                                     "2000 connections held, one more closed"
    assert "kafka.2u4g" in r.stdout and "[30000]" in r.stdout
    assert not (tmp_path / "fd" / "kafka.2u4g").exists()


def test_flavor_table_measures_a_three_broker_cluster_beside_one_broker(tmp_path):
    """--brokers 3: a local cluster per profile, topic with 3 replicas, acks=all; the row's
    per-broker figure is the cluster's total over three."""
    r = subprocess.run([str(RINGMQ), "bench", "flavor-table", "--profiles", "kafka.2u4g", "--brokers", "3",
                        "--ringmqd", str(RINGMQD), "--data-dir", str(tmp_path / "fd"),
                        "--step", "1.5", "--max-rate", "3000", "--refine", "0", "--no-probe",
                        "--json", str(tmp_path / "t.json")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    one, three = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert (one["brokers"], one["replicas"]) == (1, 1)
    assert (three["brokers"], three["replicas"]) == (3, 3)
    assert_search_converged(one, 3000)
    assert_search_converged(three, 3000)
    assert "cluster of 3 brokers" in r.stdout
    assert not (tmp_path / "fd" / "kafka.2u4g-cluster").exists()


def test_tune_probes_writes_a_profile_and_applies_only_when_asked(tmp_path, make_broker):
    root = tmp_path / "root"
    for key, value in [("net/core/somaxconn", "128"), ("vm/swappiness", "60"),
                       ("vm/dirty_ratio", "20"), ("vm/dirty_background_ratio", "10")]:
        p = root / "proc/sys" / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(value + "\n")
    prof = tmp_path / "disk.toml"
    args = [str(RINGMQ), "tune", "--quick", "--data-dir", str(tmp_path / "d"), "--write-profile", str(prof),
            "--root", str(root)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout.strip().splitlines()[-1])
    assert j["probe"]["seq_write_mbps"] > 0 and j["probe"]["loopback_mbps"] > 0
    assert j["probe"]["fdatasync_p50_us"] > 0 and j["applied"] == []
    assert "--apply" in r.stdout
    assert (root / "proc/sys/vm/swappiness").read_text().strip() == "60"
    r = subprocess.run(args + ["--apply"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (root / "proc/sys/vm/swappiness").read_text().strip() == "1"
    assert (root / "proc/sys/net/core/somaxconn").read_text().strip() == "4096"
    assert "vm.swappiness = 1" in (root / "etc/sysctl.d/99-ringmq.conf").read_text()
    # ringmqd runs with the profile tune wrote.
    b = make_broker(["--disk-profile", str(prof)]).start()
    assert "disk profile" in b.log_path.read_text()
