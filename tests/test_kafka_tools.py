"""Kafka's own command-line tools (kafka-tools 4.4 from Maven Central), run as an operator
would against a real ringmqd: each tool's documented happy path."""
import json
import re
import subprocess

import pytest

from conftest import KAFKA_SH



@pytest.fixture(scope="module")
def classpath():
    return subprocess.run([str(KAFKA_SH), "classpath"], check=True, capture_output=True, text=True,
                          timeout=600).stdout.strip()


def tool(classpath, main, *args, stdin=None, timeout=120, check=True):
    p = subprocess.run(["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", classpath,
                        f"org.apache.kafka.tools.{main}", *map(str, args)],
                       input=stdin, capture_output=True, text=True, timeout=timeout)
    if check:
        assert p.returncode == 0, f"{main} {args}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def test_topics_and_configs(broker, classpath):
    bs = broker.bootstrap
    tool(classpath, "TopicCommand", "--bootstrap-server", bs, "--create", "--topic", "orders",
         "--partitions", 3, "--replication-factor", 1, "--config", "retention.ms=86400000")
    assert "orders" in tool(classpath, "TopicCommand", "--bootstrap-server", bs, "--list").split()
    out = tool(classpath, "TopicCommand", "--bootstrap-server", bs, "--describe", "--topic", "orders")
    assert "PartitionCount: 3" in out and "retention.ms=86400000" in out, out
    tool(classpath, "TopicCommand", "--bootstrap-server", bs, "--alter", "--topic", "orders", "--partitions", 4)
    assert "PartitionCount: 4" in tool(classpath, "TopicCommand", "--bootstrap-server", bs, "--describe",
                                       "--topic", "orders")
    # New partitions on named brokers (the list covers every partition; the tool sends
    # the new ones' replicas).
    tool(classpath, "TopicCommand", "--bootstrap-server", bs, "--alter", "--topic", "orders", "--partitions", 5,
         "--replica-assignment", "1,1,1,1,1")
    out = tool(classpath, "TopicCommand", "--bootstrap-server", bs, "--describe", "--topic", "orders")
    assert "PartitionCount: 5" in out and re.search(r"Partition: 4\s+Leader: 1\s+Replicas: 1", out), out
    tool(classpath, "ConfigCommand", "--bootstrap-server", bs, "--alter", "--entity-type", "topics",
         "--entity-name", "orders", "--add-config", "retention.ms=3600000,cleanup.policy=compact")
    out = tool(classpath, "ConfigCommand", "--bootstrap-server", bs, "--describe", "--entity-type", "topics",
               "--entity-name", "orders")
    assert "retention.ms=3600000" in out and "cleanup.policy=compact" in out, out
    tool(classpath, "ConfigCommand", "--bootstrap-server", bs, "--alter", "--entity-type", "topics",
         "--entity-name", "orders", "--delete-config", "cleanup.policy")
    out = tool(classpath, "ConfigCommand", "--bootstrap-server", bs, "--describe", "--entity-type", "brokers",
               "--entity-name", 1, "--all")
    assert "advertised.listeners=PLAINTEXT://" in out and "log.dirs=" in out, out
    tool(classpath, "TopicCommand", "--bootstrap-server", bs, "--delete", "--topic", "orders")


def test_kafka_configs_sets_the_dynamic_broker_throttles(broker, classpath):
    """`kafka-configs` on broker entities: the replication throttle rates are dynamic
    (cluster default and per broker, the broker's own value first), deleting one puts
    the default back; a static key is refused with a message naming server.properties."""
    bs = broker.bootstrap

    def configs(*args, check=True):
        return tool(classpath, "ConfigCommand", "--bootstrap-server", bs, *args, check=check)

    def rate(side, value):
        """The broker applies a committed config a moment after the tool's answer."""
        import time
        deadline = time.time() + 10
        while broker.metrics()[f"ringmq_{side}_replication_throttled_rate"] != value:
            assert time.time() < deadline, f"{side} rate never became {value}"
            time.sleep(0.05)

    configs("--alter", "--entity-type", "brokers", "--entity-default",
            "--add-config", "follower.replication.throttled.rate=5000000")
    out = configs("--describe", "--entity-type", "brokers", "--entity-default")
    assert "follower.replication.throttled.rate=5000000" in out and "DYNAMIC_DEFAULT_BROKER_CONFIG" in out, out
    rate("follower", 5_000_000)
    configs("--alter", "--entity-type", "brokers", "--entity-name", 1,
            "--add-config", "follower.replication.throttled.rate=7000000,leader.replication.throttled.rate=1000")
    out = configs("--describe", "--entity-type", "brokers", "--entity-name", 1)
    assert "follower.replication.throttled.rate=7000000 sensitive=false synonyms={DYNAMIC_BROKER_CONFIG" in out, out
    rate("leader", 1000)
    configs("--alter", "--entity-type", "brokers", "--entity-name", 1,
            "--delete-config", "follower.replication.throttled.rate,leader.replication.throttled.rate")
    rate("leader", 0)
    rate("follower", 5_000_000)
    out = configs("--describe", "--entity-type", "brokers", "--entity-default")
    assert "follower.replication.throttled.rate=5000000" in out, out
    configs("--alter", "--entity-type", "brokers", "--entity-default",
            "--delete-config", "follower.replication.throttled.rate")
    rate("follower", 0)
    p = subprocess.run(["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", classpath,
                        "org.apache.kafka.tools.ConfigCommand", "--bootstrap-server", bs, "--alter",
                        "--entity-type", "brokers", "--entity-name", "1", "--add-config", "log.retention.ms=1000"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "set it in server.properties" in p.stdout + p.stderr, p.stdout + p.stderr


def test_console_producer_consumer_groups_offsets(broker, classpath):
    bs = broker.bootstrap
    tool(classpath, "TopicCommand", "--bootstrap-server", bs, "--create", "--topic", "events", "--partitions", 2)
    lines = "".join(f"k{i}:value-{i}\n" for i in range(100))
    tool(classpath, "ConsoleProducer", "--bootstrap-server", bs, "--topic", "events",
         "--reader-property", "parse.key=true", "--reader-property", "key.separator=:", stdin=lines)
    out = tool(classpath, "consumer.ConsoleConsumer", "--bootstrap-server", bs, "--topic", "events",
               "--from-beginning", "--max-messages", 100, "--group", "cli-group",
               "--formatter-property", "print.key=true", "--timeout-ms", 30000)
    got = sorted(out.split("\n")[:-1])
    assert len(got) == 100 and "k7\tvalue-7" in got, out[:500]
    out = tool(classpath, "consumer.group.ConsumerGroupCommand", "--bootstrap-server", bs, "--list")
    assert "cli-group" in out.split()
    out = tool(classpath, "consumer.group.ConsumerGroupCommand", "--bootstrap-server", bs, "--describe",
               "--group", "cli-group")
    rows = [l.split() for l in out.splitlines() if l.startswith("cli-group")]
    assert len(rows) == 2 and all(r[5] == "0" for r in rows), out       # LAG 0 on both partitions
    out = tool(classpath, "consumer.group.ConsumerGroupCommand", "--bootstrap-server", bs, "--reset-offsets",
               "--group", "cli-group", "--topic", "events", "--to-earliest", "--execute")
    out = tool(classpath, "consumer.group.ConsumerGroupCommand", "--bootstrap-server", bs, "--describe",
               "--group", "cli-group")
    rows = [l.split() for l in out.splitlines() if l.startswith("cli-group")]
    assert sum(int(r[5]) for r in rows) == 100, out                    # lag back to 100
    out = tool(classpath, "GetOffsetShell", "--bootstrap-server", bs, "--topic", "events")
    assert sum(int(l.split(":")[2]) for l in out.split()) == 100, out
    spec = json.dumps({"partitions": [{"topic": "events", "partition": 0, "offset": 10}], "version": 1})
    path = broker.dir.parent / "delete.json"
    path.write_text(spec)
    out = tool(classpath, "DeleteRecordsCommand", "--bootstrap-server", bs, "--offset-json-file", path)
    assert "low_watermark: 10" in out, out
    out = tool(classpath, "GetOffsetShell", "--bootstrap-server", bs, "--topic", "events", "--time", "-2")
    assert "events:0:10" in out.split(), out
    tool(classpath, "consumer.group.ConsumerGroupCommand", "--bootstrap-server", bs, "--delete",
         "--group", "cli-group")


def test_perf_tools(broker, classpath):
    bs = broker.bootstrap
    out = tool(classpath, "ProducerPerformance", "--topic", "perf", "--num-records", 50000, "--record-size", 1000,
               "--throughput", -1, "--producer-props", f"bootstrap.servers={bs}", "acks=all")
    assert re.search(r"50000 records sent", out), out
    out = tool(classpath, "ConsumerPerformance", "--bootstrap-server", bs, "--topic", "perf",
               "--messages", 50000, "--timeout", 60000)
    last = out.strip().splitlines()[-1].split(",")
    assert int(last[4].strip()) == 50000, out                            # data.consumed.in.nMsg


def test_api_versions_log_dirs_features(broker, classpath):
    bs = broker.bootstrap
    out = tool(classpath, "BrokerApiVersionsCommand", "--bootstrap-server", bs)
    assert "Produce(0): 3 to 13" in out and "OffsetCommit(8): 2 to 9" in out, out
    tool(classpath, "TopicCommand", "--bootstrap-server", bs, "--create", "--topic", "sized", "--partitions", 2)
    tool(classpath, "ProducerPerformance", "--topic", "sized", "--num-records", 1000, "--record-size", 1000,
         "--throughput", -1, "--producer-props", f"bootstrap.servers={bs}")
    out = tool(classpath, "LogDirsCommand", "--bootstrap-server", bs, "--describe", "--topic-list", "sized")
    report = json.loads(out.strip().splitlines()[-1])
    dirs = report["brokers"][0]["logDirs"]
    sizes = [p["size"] for d in dirs for p in d["partitions"]]
    assert len(sizes) == 2 and sum(sizes) > 1000 * 1000, report
    out = tool(classpath, "FeatureCommand", "--bootstrap-server", bs, "describe")
    assert "Feature:" in out, out


def test_a_java_transactional_producer_and_kafka_transactions(broker, classpath):
    """Kafka's own tools on transactions: kafka-producer-perf-test as a transactional
    Java producer (a commit every 50 ms), then kafka-transactions list, describe,
    describe-producers, find-hanging and abort against a transaction left open."""
    from confluent_kafka import Producer
    from test_transactions import create, read_all
    bs = broker.bootstrap
    create(bs, "jtx", partitions=2)
    tool(classpath, "ProducerPerformance", "--topic", "jtx", "--num-records", 3000,
         "--record-size", 100, "--throughput", -1, "--transactional-id", "perf-tx",
         "--transaction-duration-ms", 50, "--producer-props", f"bootstrap.servers={bs}")
    assert len(read_all(bs, "jtx", 2, "read_committed")) == 3000
    hanging = Producer({"bootstrap.servers": bs, "transactional.id": "left-open"})
    hanging.init_transactions(30)
    hanging.begin_transaction()
    hanging.produce("jtx", value=b"open", partition=0)
    hanging.flush(10)
    txns = ["TransactionsCommand", "--bootstrap-server", bs]
    listed = tool(classpath, *txns, "list")
    assert "perf-tx" in listed and "left-open" in listed, listed
    assert re.search(r"left-open\s+\d+\s+\d+\s+Ongoing", listed), listed
    described = tool(classpath, *txns, "describe", "--transactional-id", "left-open")
    assert "Ongoing" in described and "jtx-0" in described, described
    producers = tool(classpath, *txns, "describe-producers", "--topic", "jtx", "--partition", 0)
    rows = [line.split() for line in producers.splitlines()[1:] if line.strip()]
    # ProducerId ProducerEpoch LatestCoordinatorEpoch LastSequence LastTimestamp
    # CurrentTransactionStartOffset: the perf producer's are all committed, one is open.
    starts = [r[5] for r in rows]
    assert len(rows) == 2 and starts.count("None") == 1, producers
    start = int(next(s for s in starts if s != "None"))
    # The open transaction is known to its coordinator: nothing hangs.
    hanging_report = tool(classpath, *txns, "find-hanging", "--broker-id", 1)
    assert len([line for line in hanging_report.splitlines() if line.strip()]) == 1, hanging_report
    # An operator aborts the open transaction at its start offset (WriteTxnMarkers to
    # the leader): read_committed readers are no longer held back by it.
    tool(classpath, *txns, "abort", "--topic", "jtx", "--partition", 0, "--start-offset", start)
    later = Producer({"bootstrap.servers": bs})
    later.produce("jtx", value=b"after-abort", partition=0)
    later.flush(10)
    got = read_all(bs, "jtx", 2, "read_committed")
    assert b"after-abort" in got and b"open" not in got
