"""The Kafka Java client 4.4 (tests/java ClientSuite: Admin, idempotent Producer with every
codec, Consumer groups with cooperative-sticky, commitSync/commitAsync, seek, static
membership, admin consumer-group APIs) against a real ringmqd."""
import subprocess

from conftest import KAFKA_SH



def test_java_client_suite(broker):
    cp = subprocess.run([str(KAFKA_SH), "classpath"], check=True, capture_output=True, text=True,
                        timeout=600).stdout.strip()
    p = subprocess.run(["java", "-Xmx512m", "-cp", cp, "ringmq.ClientSuite", broker.bootstrap],
                       capture_output=True, text=True, timeout=600)
    results = [l for l in p.stdout.splitlines() if l.startswith(("PASS", "FAIL"))]
    assert p.returncode == 0 and len(results) >= 13 and all(r.startswith("PASS") for r in results), \
        p.stdout[-6000:] + p.stderr[-2000:]
