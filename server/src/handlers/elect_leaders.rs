//! ElectLeaders (key 43): preferred-leader election (the first assigned replica leads
//! again when it is live and in sync) and unclean election for leaderless partitions,
//! decided by the active controller — so `kafka-leader-election` works against any
//! broker. A null partition list means every partition (those needing nothing are then
//! left out of the answer, as Kafka does).

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ApiKey, ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::cluster::controller::{Answer, ControllerRequest};
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;

/// Kafka's ElectionType.
const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: ElectLeadersRequest = protocol::decode_body(req.body.clone(), v)?;
    // election_type exists from v1; v0 is preferred only.
    let election = if v >= 1 {
        body.election_type
    } else {
        PREFERRED
    };
    let asked: Option<Vec<(String, i32)>> = body.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
            .collect()
    });
    let fail_all =
        |code: ResponseError, message: String| -> Vec<(String, i32, i16, Option<String>)> {
            asked
                .iter()
                .flatten()
                .map(|(t, p)| (t.clone(), *p, code.code(), Some(message.clone())))
                .collect()
        };
    let (top_error, results) = if election != PREFERRED && election != UNCLEAN {
        let message = format!("election type {election} is neither PREFERRED (0) nor UNCLEAN (1)");
        (
            ResponseError::InvalidRequest.code(),
            fail_all(ResponseError::InvalidRequest, message),
        )
    } else {
        let request = ControllerRequest::ElectLeaders {
            unclean: election == UNCLEAN,
            partitions: asked.clone(),
        };
        match ctx.broker.cluster.submit(request).await {
            Ok((_, Answer::PartitionResults(r))) => (0, r),
            Ok(_) => (0, Vec::new()),
            Err(e) => (0, fail_all(e.code, e.message)),
        }
    };
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for (topic, partition, code, message) in results {
        by_topic.entry(topic).or_default().push(
            PartitionResult::default()
                .with_partition_id(partition)
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string)),
        );
    }
    let mut resp = ElectLeadersResponse::default().with_replica_election_results(
        by_topic
            .into_iter()
            .map(|(topic, partition_result)| {
                ReplicaElectionResult::default()
                    .with_topic(TopicName(StrBytes::from_string(topic)))
                    .with_partition_result(partition_result)
            })
            .collect(),
    );
    // The top-level error_code exists from v1.
    if v >= 1 {
        resp = resp.with_error_code(top_error);
    }
    protocol::single(ApiKey::ElectLeaders, v, req.correlation_id(), &resp)
}
