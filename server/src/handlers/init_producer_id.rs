//! InitProducerId (key 22). Idempotent producers get a new producer id (epoch 0).
//! Transactional producers are answered by the id's transaction coordinator: the id's
//! producer id with its epoch bumped (fencing older instances; an open transaction is
//! aborted first), after WRITE on the transactional id is checked.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: InitProducerIdRequest = protocol::decode_body(req.body.clone(), v)?;
    let result = match body
        .transactional_id
        .as_ref()
        .map(|t| t.0.as_str().to_owned())
    {
        // An empty transactional id is treated as none (Kafka's rule).
        Some(id) if !id.is_empty() => {
            if ctx
                .broker
                .authorize(&req.session, op::WRITE, resource::TRANSACTIONAL_ID, &id)
            {
                // KIP-360: a client that already has a producer id names it (v3+).
                let expected = (v >= 3 && body.producer_id.0 >= 0)
                    .then_some((body.producer_id.0, body.producer_epoch));
                let timeout = body.transaction_timeout_ms;
                let key = id.clone();
                ctx.on_txn_coordinator(&id, move |c| async move {
                    crate::transactions::init_producer_id(&c, &key, timeout, expected).await
                })
                .await
                .and_then(|r| r)
            } else {
                Err(ResponseError::TransactionalIdAuthorizationFailed)
            }
        }
        _ if !may_write_idempotently(ctx, &req.session) => {
            Err(ResponseError::ClusterAuthorizationFailed)
        }
        _ => crate::transactions::producer_ids::allocate(ctx)
            .await
            .map(|id| (id, 0)),
    };
    let resp = match result {
        Ok((id, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch),
        Err(code) => InitProducerIdResponse::default()
            .with_error_code(code.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    };
    protocol::single(ApiKey::InitProducerId, v, req.correlation_id(), &resp)
}

/// An idempotent producer needs IDEMPOTENT_WRITE on the cluster, or WRITE on some topic
/// (Kafka's rule since 2.8).
fn may_write_idempotently(ctx: &ShardCtx, session: &crate::security::Session) -> bool {
    let a = &ctx.broker.config.authorizer;
    if !a.enabled || ctx.broker.authorize_cluster(session, op::IDEMPOTENT_WRITE) {
        return true;
    }
    let image = ctx.broker.image();
    let principal = session.principal();
    image.acls.iter().any(|b| {
        b.resource_type == resource::TOPIC
            && b.permission == crate::security::acl::permission::ALLOW
            && matches!(b.operation, op::WRITE | op::ALL)
            && (b.principal == *principal || b.principal == "User:*")
    }) || (a.allow_if_no_acl
        && (!image
            .acls
            .iter()
            .any(|b| b.resource_type == resource::TOPIC)
            || image.topics.keys().any(|t| {
                a.authorize(
                    &image.acls,
                    &principal,
                    session.peer.ip(),
                    op::WRITE,
                    resource::TOPIC,
                    t,
                )
            })))
}
