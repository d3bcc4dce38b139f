//! UpdateRaftVoter (key 82, KIP-853): a voter tells the active controller that its
//! controller endpoint changed (Kafka's controllers send it when they start with other
//! listeners; ringmq's voters do the same through the quorum's own channel). The voter
//! must be in the voter set with that directory id; the new endpoint is committed in the
//! quorum's membership and the others reach the voter there from then on.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, UpdateRaftVoterRequest, UpdateRaftVoterResponse};

use super::Request;
use crate::cluster::controller::ControllerRequest;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::storage::meta_properties::kafka_uuid_text;

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: UpdateRaftVoterRequest = protocol::decode_body(req.body.clone(), v)?;
    let config = &ctx.broker.config;
    let refuse =
        |code: ResponseError| UpdateRaftVoterResponse::default().with_error_code(code.code());
    // The listener the quorum speaks on (controller.listener.names).
    let listener = body.listeners.iter().find(|l| {
        config
            .controller_listener_names
            .iter()
            .any(|n| **n == *l.name)
    });
    let resp = if let Some((code, message)) =
        super::add_raft_voter::refusal(config, body.cluster_id.as_deref())
    {
        tracing::debug!(voter = body.voter_id, %message, "UpdateRaftVoter refused");
        refuse(code)
    } else if let Some(listener) = listener {
        let request = ControllerRequest::UpdateVoter {
            id: body.voter_id,
            directory_id: kafka_uuid_text(&body.voter_directory_id),
            addr: format!("{}:{}", listener.host, listener.port),
        };
        match ctx.broker.cluster.submit(request).await {
            Ok(_) => UpdateRaftVoterResponse::default(),
            Err(e) => {
                tracing::debug!(voter = body.voter_id, message = %e.message, "UpdateRaftVoter refused");
                refuse(e.code)
            }
        }
    } else {
        // Kafka's answer for a voter without the controller listener.
        refuse(ResponseError::InvalidRequest)
    };
    protocol::single(ApiKey::UpdateRaftVoter, v, req.correlation_id(), &resp)
}
