//! AddRaftVoter (key 80, KIP-853): a controller joins a dynamic quorum as a voter —
//! `kafka-metadata-quorum add-controller`, sent to any broker and forwarded to the active
//! controller. The new controller must be running at the address it gives (its
//! controller listener): it catches up on the metadata log as a learner first, and the
//! answer comes once the new voter set is committed.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{AddRaftVoterRequest, AddRaftVoterResponse, ApiKey};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::cluster::controller::ControllerRequest;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::storage::meta_properties::kafka_uuid_text;

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: AddRaftVoterRequest = protocol::decode_body(req.body.clone(), v)?;
    let config = &ctx.broker.config;
    let refuse = |code: ResponseError, message: String| {
        AddRaftVoterResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    // The listener the quorum speaks on (controller.listener.names), else the first.
    let listener = body
        .listeners
        .iter()
        .find(|l| {
            config
                .controller_listener_names
                .iter()
                .any(|n| **n == *l.name)
        })
        .or(body.listeners.first());
    let resp = if let Some((code, message)) = refusal(config, body.cluster_id.as_deref()) {
        refuse(code, message)
    } else if let Some(listener) = listener {
        let request = ControllerRequest::AddVoter {
            id: body.voter_id,
            addr: format!("{}:{}", listener.host, listener.port),
            directory_id: kafka_uuid_text(&body.voter_directory_id),
            observer: false,
        };
        match ctx.broker.cluster.submit(request).await {
            Ok(_) => {
                tracing::info!(voter = body.voter_id, "added a controller to the quorum");
                AddRaftVoterResponse::default()
            }
            Err(e) => refuse(e.code, e.message),
        }
    } else {
        refuse(
            ResponseError::InvalidRequest,
            "the new voter has no listener".into(),
        )
    };
    protocol::single(ApiKey::AddRaftVoter, v, req.correlation_id(), &resp)
}

/// What AddRaftVoter and RemoveRaftVoter refuse before asking the controller: another
/// cluster's id (INCONSISTENT_CLUSTER_ID), and a static quorum, whose voters change only
/// with `controller.quorum.voters` (UNSUPPORTED_VERSION, as Kafka answers there).
pub(super) fn refusal(
    config: &crate::config::BrokerConfig,
    cluster_id: Option<&str>,
) -> Option<(ResponseError, String)> {
    if let Some(asked) = cluster_id.filter(|c| *c != config.cluster_id) {
        return Some((
            ResponseError::InconsistentClusterId,
            format!(
                "cluster id {asked} is not this cluster's ({})",
                config.cluster_id
            ),
        ));
    }
    (!config.dynamic_quorum()).then(|| {
        (
            ResponseError::UnsupportedVersion,
            "the quorum is static (controller.quorum.voters): voters are changed by \
             restarting the controllers with a new list; a dynamic quorum uses \
             controller.quorum.bootstrap.servers"
                .to_owned(),
        )
    })
}
