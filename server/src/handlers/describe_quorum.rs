//! DescribeQuorum (key 55): the metadata quorum as the active controller sees it — its
//! leader, epoch (the Raft term), high watermark and each voter's log end — so Kafka's
//! `kafka-metadata-quorum describe --status/--replication` works against any broker
//! (the request is forwarded to the active controller). Observers are the controllers
//! without a vote and the brokers that are not voters, as KRaft reports them.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::cluster::controller::{Answer, ControllerRequest};
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::storage::meta_properties::kafka_uuid;

/// The metadata log's topic name in KRaft.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let _body: DescribeQuorumRequest = protocol::decode_body(req.body.clone(), v)?;
    let resp = match ctx
        .broker
        .cluster
        .submit(ControllerRequest::DescribeQuorum)
        .await
    {
        Ok((_, Answer::Quorum(q))) => {
            let state = |id: &i32| {
                let end = if *id == q.leader {
                    q.last_index as i64
                } else {
                    q.progress.get(id).map_or(-1, |i| *i as i64)
                };
                let directory = q.directory_ids.get(id).map(|d| kafka_uuid(d));
                ReplicaState::default()
                    .with_replica_id(BrokerId(*id))
                    .with_replica_directory_id(directory.unwrap_or_default())
                    .with_log_end_offset(end)
                    .with_last_fetch_timestamp(-1)
                    .with_last_caught_up_timestamp(-1)
            };
            let voters = q.voters.iter().map(state).collect();
            // Observers: controllers without a vote (Raft learners), and, as KRaft lists
            // them, the brokers that are not voters (they follow the metadata log).
            let image = ctx.broker.image();
            let mut observer_ids: Vec<i32> = q.observers.clone();
            observer_ids.extend(
                image
                    .brokers
                    .iter()
                    .filter(|(id, b)| {
                        !b.fenced && !q.voters.contains(id) && !q.observers.contains(id)
                    })
                    .map(|(id, _)| *id),
            );
            observer_ids.sort_unstable();
            let observers = observer_ids.iter().map(state).collect();
            let partition = PartitionData::default()
                .with_partition_index(0)
                .with_error_message(None)
                .with_leader_id(BrokerId(q.leader))
                .with_leader_epoch(i32::try_from(q.term).unwrap_or(i32::MAX))
                .with_high_watermark(q.high_watermark as i64)
                .with_current_voters(voters)
                .with_observers(observers);
            let nodes = q
                .addresses
                .iter()
                .filter_map(|(id, addr)| {
                    let (host, port) = addr.rsplit_once(':')?;
                    Some(
                        Node::default()
                            .with_node_id(BrokerId(*id))
                            .with_listeners(vec![
                                Listener::default()
                                    .with_name(StrBytes::from_static_str("CONTROLLER"))
                                    .with_host(StrBytes::from_string(host.to_owned()))
                                    .with_port(port.parse().ok()?),
                            ]),
                    )
                })
                .collect();
            DescribeQuorumResponse::default()
                .with_error_message(None)
                .with_topics(vec![
                    TopicData::default()
                        .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
                        .with_partitions(vec![partition]),
                ])
                .with_nodes(nodes)
        }
        Ok(_) => DescribeQuorumResponse::default()
            .with_error_code(ResponseError::UnknownServerError.code()),
        Err(e) => DescribeQuorumResponse::default()
            .with_error_code(e.code.code())
            .with_error_message(Some(StrBytes::from_string(e.message))),
    };
    protocol::single(ApiKey::DescribeQuorum, v, req.correlation_id(), &resp)
}
