"""Seed corpora for the fuzz targets: real request frames (without the length prefix)
encoded by kafka-python's schemas for every API ringmq serves, Produce with a batch in
each codec, and the batches alone. `python tests/fuzz/seeds.py DIR` writes
DIR/request_frame/* and DIR/record_batches/*."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kafka.protocol.admin import (CreateTopicsRequest, DeleteRecordsRequest, DescribeConfigsRequest,  # noqa: E402
                                  DescribeGroupsRequest, DescribeLogDirsRequest, DescribeTopicPartitionsRequest,
                                  ListGroupsRequest)
from kafka.protocol.consumer import (FetchRequest, HeartbeatRequest, JoinGroupRequest, ListOffsetsRequest,  # noqa: E402
                                     OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest)
from kafka.protocol.metadata import ApiVersionsRequest, FindCoordinatorRequest, MetadataRequest  # noqa: E402
from kafka.protocol.producer import ProduceRequest  # noqa: E402
from kafka.record.default_records import DefaultRecordBatchBuilder  # noqa: E402

from kafka_api import build  # noqa: E402


def batch(codec, keys=True):
    b = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=False,
                                  producer_id=7 if codec == 0 else -1, producer_epoch=0 if codec == 0 else -1,
                                  base_sequence=0 if codec == 0 else -1, batch_size=1 << 20)
    for i in range(3):
        b.append(i, timestamp=1_700_000_000_000 + i * 100, key=b"k%d" % i if keys else None,
                 value=b"value-%d" % i * 5, headers=[("h", b"v")])
    return bytes(b.build())


def frames():
    batches = [batch(c) for c in range(5)] + [batch(0, keys=False)]
    for i, records in enumerate(batches):
        yield f"produce{i}", build(ProduceRequest, 9, acks=-1, timeout_ms=1000, transactional_id=None,
                                   topic_data=[{"name": "t", "partition_data": [{"index": 0, "records": records}]}])
    yield "metadata", build(MetadataRequest, 12, topics=[{"name": "t"}], allow_auto_topic_creation=True)
    yield "apiversions", build(ApiVersionsRequest, 3, client_software_name="fuzz", client_software_version="1")
    yield "fetch", build(FetchRequest, 12, replica_id=-1, max_wait_ms=10, min_bytes=1, max_bytes=1 << 20,
                         isolation_level=0, session_id=0, session_epoch=-1, rack_id="", forgotten_topics_data=[],
                         topics=[{"topic": "t", "partitions": [{"partition": 0, "fetch_offset": 0, "log_start_offset": -1,
                                                               "partition_max_bytes": 1 << 20, "current_leader_epoch": -1}]}])
    yield "listoffsets", build(ListOffsetsRequest, 9, replica_id=-1, isolation_level=0,
                               topics=[{"name": "t", "partitions": [{"partition_index": 0, "timestamp": -3}]}])
    yield "createtopics", build(CreateTopicsRequest, 7, timeout_ms=1000, topics=[{
        "name": "t", "num_partitions": -1, "replication_factor": -1,
        "assignments": [{"partition_index": 0, "broker_ids": [1]}],
        "configs": [{"name": "compression.type", "value": "zstd"}]}])
    yield "deleterecords", build(DeleteRecordsRequest, 2, timeout_ms=1000,
                                 topics=[{"name": "t", "partitions": [{"partition_index": 0, "offset": 5}]}])
    yield "describeconfigs", build(DescribeConfigsRequest, 4, resources=[
        {"resource_type": 4, "resource_name": "1", "configuration_keys": None}])
    yield "findcoordinator", build(FindCoordinatorRequest, 4, key_type=0, coordinator_keys=["g"])
    yield "joingroup", build(JoinGroupRequest, 7, group_id="g", session_timeout_ms=30000, rebalance_timeout_ms=5000,
                             member_id="", group_instance_id="i", protocol_type="consumer", reason=None,
                             protocols=[{"name": "range", "metadata": b"\x00\x01\x00\x00\x00\x00"}])
    yield "syncgroup", build(SyncGroupRequest, 5, group_id="g", generation_id=1, member_id="m", group_instance_id="i",
                             protocol_type="consumer", protocol_name="range",
                             assignments=[{"member_id": "m", "assignment": b"\x00"}])
    yield "heartbeat", build(HeartbeatRequest, 4, group_id="g", generation_id=1, member_id="m", group_instance_id="i")
    yield "offsetcommit", build(OffsetCommitRequest, 8, group_id="g", generation_id_or_member_epoch=1, member_id="m",
                                group_instance_id=None, topics=[{"name": "t", "partitions": [
                                    {"partition_index": 0, "committed_offset": 1, "committed_leader_epoch": -1,
                                     "committed_metadata": ""}]}])
    yield "offsetfetch", build(OffsetFetchRequest, 8, require_stable=False, groups=[
        {"group_id": "g", "topics": None}])
    yield "listgroups", build(ListGroupsRequest, 5, states_filter=["Stable"], types_filter=["classic"])
    yield "describegroups", build(DescribeGroupsRequest, 5, groups=["g"], include_authorized_operations=True)
    yield "describelogdirs", build(DescribeLogDirsRequest, 4, topics=None)
    yield "describetopicpartitions", build(DescribeTopicPartitionsRequest, 0, topics=[{"name": "t"}],
                                           response_partition_limit=10, cursor=None)


def main(out):
    out = Path(out)
    (out / "request_frame").mkdir(parents=True, exist_ok=True)
    (out / "record_batches").mkdir(parents=True, exist_ok=True)
    for name, req in frames():
        req.with_header(correlation_id=1, client_id="fuzz")
        (out / "request_frame" / name).write_bytes(req.encode(header=True))
    for c in range(5):
        (out / "record_batches" / f"codec{c}").write_bytes(batch(c) + batch(0))


if __name__ == "__main__":
    main(sys.argv[1])
