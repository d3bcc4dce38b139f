"""Fixtures for ringmq's end-to-end tests: real ringmqd processes on loopback.

Each test gets a fresh broker (its own data dir and free ports). Its log is checked at the
end: an ERROR or WARN line the test did not declare expected fails the test.
"""
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RINGMQD = Path(os.environ.get("RINGMQD", ROOT / "target" / "release" / "ringmqd"))


# A panic in any broker thread: the panic hook's ERROR line, or the default hook's
# message should the hook not be installed yet (a panic while starting).
PANIC_LINE = re.compile(r"PANIC:|panicked at")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, tmp: Path, extra_args=(), properties=None):
        self.dir = tmp / "data"
        self.port = free_port()
        self.http_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.extra_args = list(extra_args)
        self.log_path = tmp / "ringmqd.log"
        self.config_path = None
        if properties:
            self.config_path = tmp / "server.properties"
            self.config_path.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
        self.proc = None
        self.expected_log = []

    def start(self):
        args = [str(RINGMQD), "--data-dir", str(self.dir), "--listen", self.bootstrap,
                "--http", f"127.0.0.1:{self.http_port}", *self.extra_args]
        if self.config_path:
            args += ["--config", str(self.config_path)]
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "RINGMQ_LOG": "info"})
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ringmqd exited: {self.log_path.read_text()}")
            try:
                # The admin HTTP listener starts just after the Kafka one.
                for port in (self.port, self.http_port):
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("ringmqd did not start listening")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alive(self):
        return self.proc.poll() is None

    def metrics(self):
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5).read().decode()
        return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+) ([0-9.e+-]+)$", text, re.M)}

    def unexpected_log_lines(self):
        """ERROR/WARN lines the test did not expect, and every panic (never expectable)."""
        bad = []
        for line in self.log_path.read_text().splitlines():
            if PANIC_LINE.search(line):
                bad.append(line)
            elif re.search(r"\b(ERROR|WARN)\b", line) and not any(re.search(p, line) for p in self.expected_log):
                bad.append(line)
        return bad


@pytest.fixture
def make_broker(tmp_path):
    brokers = []

    def make(extra_args=(), properties=None, name="b"):
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        b = Broker(d, extra_args, properties)
        brokers.append(b)
        return b

    yield make
    for b in brokers:
        b.stop()
    for b in brokers:
        bad = b.unexpected_log_lines()
        assert not bad, "unexpected ERROR/WARN in ringmqd log:\n" + "\n".join(bad[:20])


@pytest.fixture
def broker(make_broker):
    return make_broker().start()


KAFKA_SH = ROOT / "benches" / "peer" / "kafka.sh"


@pytest.fixture(scope="session")
def kafka_peer(tmp_path_factory):
    """Apache Kafka as the reference answer: the bootstrap of a session-wide Kafka 4.x
    (benches/peer/kafka.sh: one KRaft node, 512 MB heap, jars from Maven Central) that
    tests send the same request to, beside ringmq."""
    import shutil
    if not shutil.which("java") or not shutil.which("mvn"):
        pytest.fail("Java and Maven are required for the Apache Kafka peer (the test command installs them)")
    d = tmp_path_factory.mktemp("kafka-peer")
    port = free_port()
    while port + 1 > 65535:   # the controller listens on port + 1
        port = free_port()
    subprocess.run([str(KAFKA_SH), "start", str(d), str(port), "512m"], check=True, timeout=300)
    yield f"127.0.0.1:{port}"
    subprocess.run([str(KAFKA_SH), "stop", str(d)], timeout=60)
