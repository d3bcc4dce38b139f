"""Security figures, side by side in one run on this machine, ringmq and Apache Kafka:

- consume MB/s and broker CPU-seconds per GB read, over PLAINTEXT and over TLS (ringmq's
  user-space rustls; kernel TLS is probed and reported, see `ktls`);
- produce msgs/s (acks=all, 1 KiB) over PLAINTEXT and over SASL_SSL (SCRAM-SHA-512);
- full TLS handshakes per second (new connections, no resumption), 4 client threads.

Usage: .venv/bin/python benches/security/tls.py [--gb 1] [--out FILE.json]
Needs `cargo build --release` and the Kafka classpath (benches/peer/kafka.sh classpath).
"""
import argparse
import json
import os
import socket
import ssl
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benches"))
from certs import Certs, ktls_available  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from measure import cpu_seconds, free_port  # noqa: E402

RINGMQD = ROOT / "target" / "release" / "ringmqd"
RINGMQ = ROOT / "target" / "release" / "ringmq"
KAFKA_SH = ROOT / "benches" / "peer" / "kafka.sh"
USER, PASSWORD = "bench", "bench-secret"


def client_config(path, certs, sasl):
    lines = [f"ssl.ca.location={certs.ca}"]
    if sasl:
        lines = ["security.protocol=SASL_SSL", "sasl.mechanism=SCRAM-SHA-512",
                 f"sasl.username={USER}", f"sasl.password={PASSWORD}", *lines]
    else:
        lines = ["security.protocol=SSL", *lines]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def bench(kind, addr, config, *args):
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [str(RINGMQ), "bench", kind, "-b", addr, "-q", "--json", out.name, *map(str, args)]
        if config:
            cmd += ["--command-config", config]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=900)
        return json.loads(Path(out.name).read_text())


def consume(pid, addr, config, topic, messages):
    before = cpu_seconds(pid)
    r = bench("consume", addr, config, "-t", topic, "-n", messages, "--client", "native")
    cpu = cpu_seconds(pid) - before
    gb = r["consumed"]["bytes"] / 1e9
    return {"mb_per_s": round(r["consumed"]["mb_per_s"], 1), "broker_cpu_s_per_gb": round(cpu / gb, 2),
            "gb": round(gb, 3)}


def produce(pid, addr, config, topic, messages):
    before = cpu_seconds(pid)
    r = bench("produce", addr, config, "-t", topic, "-n", messages, "--partitions", 6, "--acks", "all")
    cpu = cpu_seconds(pid) - before
    return {"msgs_per_s": round(r["produced"]["msgs_per_s"]), "p99_ms": r["produce_latency"]["p99_ms"],
            "broker_cpu_s_per_gb": round(cpu / (r["produced"]["bytes"] / 1e9), 2)}


def handshakes(addr, certs, seconds=5.0, threads=4):
    host, port = addr.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=certs.ca)
    count = [0] * threads
    stop = time.time() + seconds

    def run(i):
        while time.time() < stop:
            with socket.create_connection((host, int(port))) as raw:
                with ctx.wrap_socket(raw, server_hostname=host):
                    count[i] += 1

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return round(sum(count) / (time.time() - t0))


def run_broker(name, pid, addrs, certs, tmp, messages):
    plain, tls, sasl_ssl = addrs
    ssl_conf = client_config(tmp / f"{name}-ssl.properties", certs, sasl=False)
    sasl_conf = client_config(tmp / f"{name}-sasl.properties", certs, sasl=True)
    # One topic, written once over PLAINTEXT, read back over each listener.
    bench("produce", plain, None, "-t", "read-me", "-n", messages, "--partitions", 6, "--acks", "1")
    out = {"consume_plaintext": consume(pid, plain, None, "read-me", messages),
           "consume_tls": consume(pid, tls, ssl_conf, "read-me", messages)}
    n = max(messages // 4, 100_000)
    out["produce_plaintext"] = produce(pid, plain, None, "w-plain", n)
    out["produce_sasl_ssl"] = produce(pid, sasl_ssl, sasl_conf, "w-sasl", n)
    out["tls_handshakes_per_s"] = handshakes(tls, certs)
    print(name, json.dumps(out), flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--out")
    ap.add_argument("--shards", type=int, default=2)
    args = ap.parse_args()
    messages = int(args.gb * 1e9 / 1024)
    tmp = Path(tempfile.mkdtemp(prefix="ringmq-sec-bench-"))
    try:
        compare(args, tmp, messages)
    finally:
        # Both brokers' logs are GBs; nothing in them is kept (the figures are printed).
        shutil.rmtree(tmp, ignore_errors=True)


def compare(args, tmp, messages):
    certs = Certs(tmp / "certs")
    results = {"machine": f"{os.cpu_count()} vCPU, {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB",
               "ktls_available": ktls_available(), "messages": messages, "message_bytes": 1024}

    # ringmq.
    p = [free_port() for _ in range(4)]
    props = tmp / "ringmq.properties"
    props.write_text(
        f"listeners=PLAINTEXT://127.0.0.1:{p[0]},SSL://127.0.0.1:{p[1]},SASL_SSL://127.0.0.1:{p[2]}\n"
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{p[0]},SSL://localhost:{p[1]},SASL_SSL://localhost:{p[2]}\n"
        f"ssl.keystore.location={certs.keystore}\nssl.key.password={Certs.KEY_PASSWORD}\n"
        f"ringmq.sasl.initial.user={USER}\nringmq.sasl.initial.user.password={PASSWORD}\n"
        f"ringmq.shards={args.shards}\nlog.segment.bytes=1073741824\n")
    proc = subprocess.Popen([str(RINGMQD), "--config", str(props), "--data-dir", str(tmp / "ringmq-data")],
                            stdout=open(tmp / "ringmqd.log", "w"), stderr=subprocess.STDOUT)
    try:
        time.sleep(3)
        results["ringmq"] = run_broker("ringmq", proc.pid, (f"127.0.0.1:{p[0]}", f"localhost:{p[1]}",
                                                             f"localhost:{p[2]}"), certs, tmp, messages)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    # Apache Kafka, same certificates, same users.
    k = [free_port() for _ in range(4)]  # k[1] unused: kafka.sh puts its controller on PORT+1
    extra = tmp / "kafka-extra.properties"
    # Kafka (Java 17) cannot read PBES2-encrypted PEM keys: the same key goes inline,
    # unencrypted (ssl.keystore.key without ssl.key.password).
    pem = Path(certs.keystore).read_bytes()
    key = serialization.load_pem_private_key(pem, Certs.KEY_PASSWORD.encode()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    chain = pem[pem.index(b"-----BEGIN CERTIFICATE-----"):]
    inline = lambda b: b.decode().strip().replace("\n", "\\n")
    extra.write_text(
        f"ssl.keystore.type=PEM\nssl.keystore.key={inline(key)}\nssl.keystore.certificate.chain={inline(chain)}\n"
        "sasl.enabled.mechanisms=SCRAM-SHA-512\n"
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;\n")
    env = {**os.environ, "KAFKA_EXTRA_LISTENERS": f"SSL://localhost:{k[2]},SASL_SSL://localhost:{k[3]}",
           "KAFKA_EXTRA_PROPS": str(extra)}
    kdir = tmp / "kafka"
    subprocess.run([str(KAFKA_SH), "start", str(kdir), str(k[0]), "2G"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    try:
        pid = int((kdir / "kafka.pid").read_text())
        # SCRAM users are added the way Kafka operators do it (any tool works: ringmq's).
        subprocess.run([str(RINGMQ), "-b", f"127.0.0.1:{k[0]}", "user", "create", USER, "--password", PASSWORD],
                       check=True, stdout=subprocess.DEVNULL)
        time.sleep(2)
        results["kafka"] = run_broker("kafka", pid, (f"127.0.0.1:{k[0]}", f"localhost:{k[2]}",
                                                     f"localhost:{k[3]}"), certs, tmp, messages)
    finally:
        subprocess.run([str(KAFKA_SH), "stop", str(kdir)], check=False)

    r, kf = results["ringmq"], results["kafka"]
    results["ratios_ringmq_over_kafka"] = {
        "consume_plaintext_mb_s": round(r["consume_plaintext"]["mb_per_s"] / kf["consume_plaintext"]["mb_per_s"], 2),
        "consume_tls_mb_s": round(r["consume_tls"]["mb_per_s"] / kf["consume_tls"]["mb_per_s"], 2),
        "consume_tls_cpu_per_gb": round(r["consume_tls"]["broker_cpu_s_per_gb"]
                                        / kf["consume_tls"]["broker_cpu_s_per_gb"], 2),
        "produce_sasl_ssl_msgs_s": round(r["produce_sasl_ssl"]["msgs_per_s"] / kf["produce_sasl_ssl"]["msgs_per_s"], 2),
        "tls_handshakes_per_s": round(r["tls_handshakes_per_s"] / kf["tls_handshakes_per_s"], 2),
    }
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
