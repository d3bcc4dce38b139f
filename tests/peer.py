"""Apache Kafka as the reference answer: a session-wide Kafka 4.x broker (benches/peer/kafka.sh,
jars from Maven Central) that tests send the same request to, beside ringmq."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, free_port

KAFKA_SH = ROOT / "benches" / "peer" / "kafka.sh"


@pytest.fixture(scope="session")
def kafka_peer(tmp_path_factory):
    """bootstrap of a running Apache Kafka (one KRaft node, 512 MB heap)."""
    if not shutil.which("java") or not shutil.which("mvn"):
        pytest.fail("Java and Maven are required for the Apache Kafka peer (the test command installs them)")
    d = tmp_path_factory.mktemp("kafka-peer")
    port = free_port()
    while port + 1 > 65535:
        port = free_port()
    subprocess.run([str(KAFKA_SH), "start", str(d), str(port), "512m"], check=True, timeout=300)
    yield f"127.0.0.1:{port}"
    subprocess.run([str(KAFKA_SH), "stop", str(d)], timeout=60)
