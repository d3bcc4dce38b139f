"""Kafka Streams and Kafka Connect (4.4, from Maven Central) against a real ringmqd.

Connect runs at 4.3.1 (tests/java/connect): its FileStream connectors are not served at 4.4.0.
Streams: a word count with a state store, its changelog (compacted) and repartition
topics (tests/java WordCount), at least once and exactly once (v2: transactions).
Connect: a distributed worker (config, offset and status topics, compacted) running the
FileStream source and sink connectors, which move a file through ringmq and back
byte-exact."""
import json
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from conftest import KAFKA_SH, free_port



def classpath(which="classpath"):
    return subprocess.run([str(KAFKA_SH), which], check=True, capture_output=True, text=True,
                          timeout=600).stdout.strip()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_streams_word_count(broker, tmp_path, guarantee):
    p = subprocess.run(["java", "-Xmx512m", "-cp", classpath(), "ringmq.WordCount", broker.bootstrap,
                        str(tmp_path / "state"), guarantee], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "PASS streams-word-count" in p.stdout, p.stdout[-5000:] + p.stderr[-3000:]


def test_streams_exactly_once_through_a_broker_killed(make_cluster, tmp_path):
    """Kafka Streams exactly_once_v2 on three brokers (every topic with three
    replicas): once the application has made its internal topics a broker is killed
    with -9 and restarted; the counts, read_committed, still equal the input's exactly."""
    c = make_cluster(3).start()
    p = subprocess.Popen(["java", "-Xmx512m", "-cp", classpath(), "ringmq.WordCount", c.bootstrap,
                          str(tmp_path / "state"), "exactly_once_v2", "3"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    try:
        for line in p.stdout:
            out.append(line)
            if "streams started" in line:
                break
        # Once Streams has made its internal topics (three replicas need three live
        # brokers, in Kafka too): then a broker dies while the application runs.
        c.wait_for(lambda: any(t.endswith("-by-word-repartition") for t in c.metadata().topics)
                   and any(t.endswith("-counts-changelog") for t in c.metadata().topics),
                   60, "Streams' internal topics")
        c.brokers[2].kill9()
        time.sleep(3)
        c.brokers[2].start()
        out += p.stdout.readlines()
        p.wait(timeout=240)
    finally:
        if p.poll() is None:
            p.kill()
    text = "".join(out)
    assert p.returncode == 0 and "PASS streams-word-count" in text, text[-6000:]


def rest(port, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{method} {path}: {e.code} {e.read().decode(errors='replace')}") from e


def create_connector(port, spec, wait=60):
    """POST /connectors, retried while the worker is still joining its group (409, or a
    500 "rebalance" while it reads the config topic)."""
    deadline = time.time() + wait
    while True:
        try:
            return rest(port, "POST", "/connectors", spec)
        except AssertionError as e:
            if time.time() > deadline or not (": 409 " in str(e) or ": 500 " in str(e)):
                raise
            time.sleep(1)


def test_connect_distributed_file_round_trip(broker, tmp_path):
    port = free_port()
    source, sink = tmp_path / "in.txt", tmp_path / "out.txt"
    text = "".join(f"line {i}: the quick brown fox \u00e9\u00e8 {i * i}\n" for i in range(500))
    source.write_text(text)
    worker = tmp_path / "worker.properties"
    worker.write_text("\n".join([
        f"bootstrap.servers={broker.bootstrap}",
        "group.id=ringmq-connect",
        "key.converter=org.apache.kafka.connect.storage.StringConverter",
        "value.converter=org.apache.kafka.connect.storage.StringConverter",
        "config.storage.topic=connect-configs", "config.storage.replication.factor=1",
        "offset.storage.topic=connect-offsets", "offset.storage.replication.factor=1",
        "status.storage.topic=connect-status", "status.storage.replication.factor=1",
        "offset.flush.interval.ms=500",
        f"listeners=http://127.0.0.1:{port}",
        "plugin.discovery=only_scan",
    ]) + "\n")
    # One partition, so the sink writes lines in the order the source read them (ringmq's
    # num.partitions default is the seeds' 3; Kafka's is 1).
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("connect-lines", num_partitions=1, replication_factor=1)])["connect-lines"].result(10)
    log = open(tmp_path / "connect.log", "w")
    proc = subprocess.Popen(["java", "-Xmx512m", "-cp", classpath("connect-classpath"),
                             "org.apache.kafka.connect.cli.ConnectDistributed", str(worker)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while True:
            try:
                rest(port, "GET", "/connectors")
                break
            except (OSError, AssertionError):   # not listening yet, or resources not up yet
                assert proc.poll() is None, (tmp_path / "connect.log").read_text()[-5000:]
                assert time.time() < deadline, "Connect REST did not come up"
                time.sleep(0.5)
        create_connector(port, {"name": "file-source", "config": {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
            "tasks.max": "1", "file": str(source), "topic": "connect-lines"}})
        create_connector(port, {"name": "file-sink", "config": {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
            "tasks.max": "1", "file": str(sink), "topics": "connect-lines"}})
        deadline = time.time() + 120
        while time.time() < deadline and not (sink.exists() and sink.read_text() == text):
            time.sleep(0.5)
        assert sink.exists() and sink.read_text() == text, \
            (sink.read_text()[:500] if sink.exists() else "no sink file") + (tmp_path / "connect.log").read_text()[-3000:]
        for name in ("file-source", "file-sink"):
            status = rest(port, "GET", f"/connectors/{name}/status")
            assert status["connector"]["state"] == "RUNNING" and status["tasks"][0]["state"] == "RUNNING", status
        # Connect's internal topics are compacted ones.
        for topic in ("connect-configs", "connect-offsets", "connect-status"):
            res = ConfigResource(ConfigResource.Type.TOPIC, topic)
            cfg = admin.describe_configs([res])[res].result(10)
            assert cfg["cleanup.policy"].value == "compact", (topic, cfg["cleanup.policy"].value)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
