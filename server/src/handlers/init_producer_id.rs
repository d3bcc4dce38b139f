//! InitProducerId (key 22) for idempotent producers: a new producer id (epoch 0) from a
//! counter kept in the cluster metadata, so ids are never reused across restarts.
//! Transactional ids are not supported yet (transactions come later, SPEC K3).

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::Request;
use crate::cluster::controller::{Answer, ControllerRequest};
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: InitProducerIdRequest = protocol::decode_body(req.body.clone(), v)?;
    let resp = if body.transactional_id.is_some() {
        InitProducerIdResponse::default()
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    } else if !may_write_idempotently(ctx, &req.session) {
        InitProducerIdResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    } else {
        match allocate(ctx).await {
            Ok(id) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(0),
            Err(code) => InitProducerIdResponse::default()
                .with_error_code(code.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        }
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

/// Producer ids a broker takes from the controller at a time (Kafka's block size).
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// The next producer id from this broker's block, taking a new block from the controller
/// when it is used up (one metadata commit per thousand producers).
async fn allocate(ctx: &Rc<ShardCtx>) -> Result<i64, ResponseError> {
    loop {
        {
            let mut block = ctx
                .broker
                .producer_ids
                .lock()
                .map_err(|_| ResponseError::UnknownServerError)?;
            if let Some(id) = block.next() {
                return Ok(id);
            }
        }
        let req = ControllerRequest::AllocateProducerIds {
            count: PRODUCER_ID_BLOCK,
        };
        match ctx.broker.cluster.submit(req).await {
            Ok((_, Answer::ProducerIds { first })) => {
                let mut block = ctx
                    .broker
                    .producer_ids
                    .lock()
                    .map_err(|_| ResponseError::UnknownServerError)?;
                if block.is_empty() {
                    *block = first..first + PRODUCER_ID_BLOCK;
                }
            }
            Ok(_) => return Err(ResponseError::UnknownServerError),
            Err(e) => return Err(e.code),
        }
    }
}
