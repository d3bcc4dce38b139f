//! RemoveRaftVoter (key 81, KIP-853): a voter leaves a dynamic quorum —
//! `kafka-metadata-quorum remove-controller --controller-id N --controller-directory-id D`,
//! sent to any broker and forwarded to the active controller. The directory id must be
//! the voter's (as DescribeQuorum reports it); the last voter cannot leave.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, RemoveRaftVoterRequest, RemoveRaftVoterResponse};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::cluster::controller::ControllerRequest;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::storage::meta_properties::kafka_uuid_text;

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: RemoveRaftVoterRequest = protocol::decode_body(req.body.clone(), v)?;
    let config = &ctx.broker.config;
    let refuse = |code: ResponseError, message: String| {
        RemoveRaftVoterResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    let resp = if let Some((code, message)) =
        super::add_raft_voter::refusal(config, body.cluster_id.as_deref())
    {
        refuse(code, message)
    } else {
        let request = ControllerRequest::RemoveVoter {
            id: body.voter_id,
            directory_id: kafka_uuid_text(&body.voter_directory_id),
        };
        match ctx.broker.cluster.submit(request).await {
            Ok(_) => {
                tracing::info!(
                    voter = body.voter_id,
                    "removed a controller from the quorum"
                );
                RemoveRaftVoterResponse::default()
            }
            Err(e) => refuse(e.code, e.message),
        }
    };
    protocol::single(ApiKey::RemoveRaftVoter, v, req.correlation_id(), &resp)
}
