//! InitProducerId (key 22) for idempotent producers: a new producer id (epoch 0) from a
//! counter kept in the cluster metadata, so ids are never reused across restarts.
//! Transactional ids are not supported yet (transactions come later, SPEC K3).

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::Request;
use crate::metadata::MetadataRecord;
use crate::protocol::{self, CloseConnection, Response};
use crate::shard::ShardCtx;

pub fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: InitProducerIdRequest = protocol::decode_body(req.body.clone(), v)?;
    let resp = if body.transactional_id.is_some() {
        InitProducerIdResponse::default()
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    } else {
        match allocate(ctx) {
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

fn allocate(ctx: &ShardCtx) -> Result<i64, ResponseError> {
    let mut store = ctx
        .broker
        .store
        .lock()
        .map_err(|_| ResponseError::UnknownServerError)?;
    let id = store.image().next_producer_id;
    store
        .commit(&[MetadataRecord::ProducerIdsAllocated { next: id + 1 }])
        .map_err(|_| ResponseError::KafkaStorageError)?;
    Ok(id)
}
