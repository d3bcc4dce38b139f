"""Several log directories on one broker (`log.dirs`, SPEC O7): new replicas spread over
them, DescribeLogDirs reports each, and a replica moves from one to the other with
Kafka's own `kafka-reassign-partitions` (AlterReplicaLogDirs) while an idempotent
acks=all producer writes to it — nothing acknowledged is lost, the old directory is
deleted, and the partition reopens from its new directory after a restart."""
import json
import subprocess
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import KAFKA_SH
from test_clients import consume_to_end
from test_cluster import Checker


def _tool(main, *args):
    return subprocess.run([str(KAFKA_SH), "tool", f"org.apache.kafka.tools.{main}", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def _dirs(bootstrap):
    """{log dir: {partition name: size}} from kafka-log-dirs --describe."""
    r = _tool("LogDirsCommand", "--bootstrap-server", bootstrap, "--describe", "--broker-list", "1")
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    line = next(x for x in r.stdout.splitlines() if x.startswith("{"))
    out = {}
    for d in json.loads(line)["brokers"][0]["logDirs"]:
        out[d["logDir"]] = {p["partition"]: p for p in d["partitions"]}
    return out


def _wait(predicate, timeout, what):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_replica_moves_between_log_directories_under_load(make_broker, tmp_path):
    second = tmp_path / "second"
    b = make_broker(properties={"log.dirs": f"{tmp_path}/ignored,{second}"}).start()
    first = b.dir
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic("spread", num_partitions=4, replication_factor=1),
                         NewTopic("moving", num_partitions=1, replication_factor=1)])["moving"].result(20)
    _wait(lambda: len([p for d in _dirs(b.bootstrap).values() for p in d if p.startswith("spread-")]) == 4,
          20, "the new partitions to show in kafka-log-dirs")
    dirs = _dirs(b.bootstrap)
    assert set(dirs) == {str(first), str(second)}, dirs
    # New replicas go to the directory holding the fewest (each shard counts once and
    # places its replicas of a change together): the directories stay even, within one
    # replica per shard.
    per_dir = {d: len(parts) for d, parts in dirs.items()}
    assert sum(len([p for p in parts if p.startswith("spread-")]) for parts in dirs.values()) == 4
    assert abs(per_dir[str(first)] - per_dir[str(second)]) <= 2, per_dir

    here = next(d for d, parts in dirs.items() if "moving-0" in parts)
    there = str(second) if here == str(first) else str(first)
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(20_000):
        p.produce("moving", value=b"pre%d-" % i + b"x" * 1000)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(30) == 0

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": "moving", "partition": 0, "replicas": [1], "log_dirs": [there]}]}))
    with Checker(b.bootstrap, "moving") as chk:
        _wait(lambda: len(chk.acked) > 1000, 30, "acknowledgements before the move")
        r = _tool("reassign.ReassignPartitionsCommand", "--bootstrap-server", b.bootstrap,
                  "--reassignment-json-file", plan, "--execute")
        assert r.returncode == 0, r.stdout + r.stderr[-2000:]
        assert "Successfully started moving log directory" in r.stdout, r.stdout

        def moved():
            v = _tool("reassign.ReassignPartitionsCommand", "--bootstrap-server", b.bootstrap,
                      "--reassignment-json-file", plan, "--verify")
            return "completed successfully" in v.stdout
        _wait(moved, 60, "kafka-reassign-partitions --verify to see the move done")
        before = len(chk.acked)
        _wait(lambda: len(chk.acked) > before + 1000, 30, "acknowledgements after the move")
    assert not chk.errors, chk.errors[:5]
    dirs = _dirs(b.bootstrap)
    assert "moving-0" in dirs[there] and "moving-0" not in dirs[here], dirs
    _wait(lambda: not any(p.name.startswith("moving-0") for p in __import__("pathlib").Path(here).iterdir()),
          30, "the old directory to be deleted")

    def check():
        got = consume_to_end(b.bootstrap, "moving", 1)
        stored = {(g[0], g[1]): g[3] for g in got}
        lost = [k for k, v in chk.acked.items() if stored.get(k) != v]
        assert not lost, f"{len(lost)} of {len(chk.acked)} acknowledged messages lost"
        assert sum(1 for g in got if g[3].startswith(b"pre")) == 20_000
        assert len(got) == 20_000 + len(chk.acked), "duplicates or strays"
    check()
    # After a restart the partition opens from its new directory.
    b.stop()
    b.start()
    assert "moving-0" in _dirs(b.bootstrap)[there]
    check()


def test_alter_replica_log_dirs_refuses_unknown_directories_and_partitions(make_broker, tmp_path):
    from kafka.protocol.admin import AlterReplicaLogDirsRequest

    from kafka_api import build, call
    second = tmp_path / "second"
    b = make_broker(properties={"log.dirs": f"{tmp_path}/ignored,{second}"}).start()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic("t", num_partitions=1, replication_factor=1)])["t"].result(20)

    def alter(path, topic):
        resp = call(b.bootstrap, build(AlterReplicaLogDirsRequest, 1, dirs=[
            {"path": path, "topics": [{"name": topic, "partitions": [0]}]}]))
        return resp.results[0].partitions[0].error_code

    assert alter(str(tmp_path / "elsewhere"), "t") == 57  # LOG_DIR_NOT_FOUND
    assert alter(str(second), "no-such-topic") == 3  # UNKNOWN_TOPIC_OR_PARTITION

    # The same through `ringmq logdirs`: refused, then a move, seen in `describe`.
    from conftest import RINGMQ

    def ringmq(*args):
        return subprocess.run([str(RINGMQ), "-b", b.bootstrap, "logdirs", *args],
                              capture_output=True, text=True, timeout=60)
    r = ringmq("move", "--broker", "1", "-t", "t", "-p", "0", "--dir", str(tmp_path / "elsewhere"))
    assert r.returncode != 0 and "LOG_DIR_NOT_FOUND" in r.stderr, r.stdout + r.stderr
    here = next(d for d, parts in _dirs(b.bootstrap).items() if "t-0" in parts)
    there = str(second) if here == str(b.dir) else str(b.dir)
    assert alter(here, "t") == 0, "already there: nothing to do"
    r = ringmq("move", "--broker", "1", "-t", "t", "-p", "0", "--dir", there)
    assert r.returncode == 0, r.stdout + r.stderr

    def moved():
        out = ringmq("describe", "-t", "t").stdout
        section = out.split(f"  {there}:")[1].split("\n  /")[0] if f"  {there}:" in out else ""
        return "t-0:" in section and "moving here" not in section
    _wait(moved, 30, "t-0 in its new directory")
    out = ringmq("describe").stdout
    assert "Broker 1" in out and "free" in out and "__consumer_offsets" in out, out
