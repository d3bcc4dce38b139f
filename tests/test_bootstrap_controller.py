"""Kafka clients on the controller listener (`--bootstrap-controller`, KIP-919): Kafka
4.x's tools reach the quorum through a controller's own port, and the controller listener
answers what Apache Kafka's controller answers there (its APIs only, DescribeCluster with
endpoint type 2 listing the controllers), checked against the Kafka peer. The quorum's
own traffic shares the port and keeps working."""

import re
import socket
import struct
import subprocess

from kafka.protocol.admin import DescribeClusterRequest
from kafka.protocol.metadata.api_versions import ApiVersionsRequest

from conftest import KAFKA_SH
from kafka_api import call, to_plain
from kafka_wire import closed_by_broker, frame
from test_cluster import create
from test_dynamic_quorum import quorum_tool


def describe_cluster(addr, version, endpoint_type):
    r = to_plain(call(addr, DescribeClusterRequest(version=version, include_cluster_authorized_operations=False,
                                                   endpoint_type=endpoint_type)))
    return r


def api_keys(addr):
    r = to_plain(call(addr, ApiVersionsRequest(version=3, client_software_name="ringmq-tests",
                                               client_software_version="1")))
    assert r["error_code"] == 0, r
    return {k["api_key"] for k in r["api_keys"]}


def test_kafka_tools_reach_the_quorum_through_a_controller_listener(make_cluster, kafka_peer):
    c = make_cluster(3).start()
    controller = {n: f"127.0.0.1:{b.controller_port}" for n, b in c.brokers.items()}

    # kafka-metadata-quorum through each controller: the same leader and voters, each
    # voter at its CONTROLLER endpoint.
    leaders = set()
    for n in (1, 2, 3):
        out = quorum_tool("--bootstrap-controller", controller[n], "describe", "--status").stdout
        leaders.add(re.search(r"LeaderId:\s+(\d+)", out).group(1))
        for m in (1, 2, 3):
            assert f'"id": {m}' in out and f"CONTROLLER://{controller[m]}" in out, out
    assert len(leaders) == 1 and leaders <= {"1", "2", "3"}, leaders
    out = quorum_tool("--bootstrap-controller", controller[2], "describe", "--replication").stdout
    assert out.count("Leader") == 1 and out.count("Follower") == 2, out
    r = subprocess.run([str(KAFKA_SH), "tool", "org.apache.kafka.tools.FeatureCommand",
                                      "--bootstrap-controller", controller[3], "describe"],
                                     capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "metadata.version" in r.stdout, r.stdout + r.stderr[-2000:]

    # DescribeCluster with endpoint type 2 on a controller lists the controllers and the
    # active one.
    d = describe_cluster(controller[1], 2, 2)
    assert d["error_code"] == 0 and d["endpoint_type"] == 2, d
    assert {(n["broker_id"], f"{n['host']}:{n['port']}") for n in d["brokers"]} == set(controller.items()), d
    assert str(d["controller_id"]) in leaders, d

    # The refusals, field for field as Apache Kafka answers them: the wrong endpoint type
    # on either kind of listener, an unknown type, and v0 (which cannot name a type).
    kafka_controller = kafka_peer.rsplit(":", 1)[0] + f":{int(kafka_peer.rsplit(':', 1)[1]) + 1}"
    for (ours, theirs) in ((controller[2], kafka_controller), (c.brokers[2].bootstrap, kafka_peer)):
        for version, endpoint_type in ((0, 1), (1, 1), (1, 2), (2, 2), (1, 3)):
            a, b = describe_cluster(ours, version, endpoint_type), describe_cluster(theirs, version, endpoint_type)
            if b["error_code"] == 0:
                assert a["error_code"] == 0 and a["endpoint_type"] == b["endpoint_type"], (a, b)
                continue
            fields = ("error_code", "error_message", "endpoint_type", "cluster_id", "controller_id", "brokers")
            assert {f: a[f] for f in fields} == {f: b[f] for f in fields}, (version, endpoint_type, a, b)

    # The controller listener offers what Kafka's controller offers, not the brokers' APIs.
    ours, theirs = api_keys(controller[1]), api_keys(kafka_controller)
    assert ours <= theirs, sorted(ours - theirs)
    assert {55, 60, 80, 81} <= ours and not ours & {0, 1, 3, 8, 9, 10, 11}, sorted(ours)

    # A broker API there (Metadata v1) closes the connection, as Kafka does, and says so
    # at WARN with the API and version.
    c.brokers[1].expected_log.append(r"closing connection after a request it could not handle.*"
                                     r"Metadata v1 on the controller listener")
    host, port = controller[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(frame(3, 1, 7, struct.pack(">i", -1)))   # all topics
        assert closed_by_broker(s)
    c.wait_for(lambda: "Metadata v1 on the controller listener" in c.brokers[1].log_path.read_text(), 10,
               "the WARN line")

    # The quorum's own traffic on the same ports is unaffected.
    create(c.bootstrap, "after-controller-clients", partitions=2, rf=3)
    assert "after-controller-clients" in c.metadata(via=c.brokers[3], topic="after-controller-clients").topics
